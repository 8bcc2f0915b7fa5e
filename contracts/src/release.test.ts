import { describe, expect, it } from "vitest";
import { CreateWebhook, RELEASE_NAMES, releaseAsyncApi, ReleaseEvent, releaseDataSchema, releaseNameOf, releaseSubjects, releaseType } from "./index.js";

const base = (name: (typeof RELEASE_NAMES)[number], data: unknown) => ({
  specversion: "1.0",
  id: "d-1-3/0",
  source: "/molt/deployments/d-1",
  type: releaseType(name),
  subject: "d-1",
  time: "2026-12-06T05:00:00.000Z",
  datacontenttype: "application/json",
  dataschema: releaseDataSchema(name),
  data,
});

describe("release events: the public vocabulary", () => {
  it("[release-events] has the issue's types, versioned dev.molt.<kind>.<action>.v1, on molt.release.<component>.<type>", () => {
    expect(RELEASE_NAMES.map(releaseType).sort()).toEqual(
      [
        "package.published", "package.yanked", "deployment.started", "deployment.batch-completed", "deployment.braked", "deployment.paused",
        "deployment.completed", "deployment.failed", "deployment.cancelled", "deployment.rolled-back", "host.upgraded", "host.upgrade-failed",
      ].map((n) => `dev.molt.${n}.v1`).sort(),
    );
    expect(releaseSubjects.of("metrics-agent", "host.upgraded")).toBe("molt.release.metrics-agent.host.upgraded");
    expect(releaseNameOf("dev.molt.host.upgrade-failed.v1")).toBe("host.upgrade-failed");
    expect(releaseNameOf("dev.molt.host.upgrade-failed.v2")).toBeUndefined();
  });

  it("[release-events] an envelope validates with its own data and is refused with another type's", () => {
    const data = { hostId: "web-1.example.com", component: "metrics-agent", deploymentId: "d-1", fromVersion: "1.0.0", toVersion: "2.0.0" };
    expect(ReleaseEvent.safeParse(base("host.upgraded", data)).success).toBe(true);
    expect(ReleaseEvent.safeParse(base("host.upgrade-failed", data)).success).toBe(false);
    expect(ReleaseEvent.safeParse({ ...base("host.upgraded", data), extra: 1 }).success).toBe(false);
  });

  it("[release-events] a webhook body takes short names or CloudEvents types and refuses unknown ones; it starts now, at the beginning or at a date-time", () => {
    const ok = CreateWebhook.parse({ url: "https://ci.example.com/hook", filters: { types: ["dev.molt.host.upgraded.v1", "deployment.failed"] } });
    expect(ok.filters.types).toEqual(["host.upgraded", "deployment.failed"]);
    expect(CreateWebhook.safeParse({ url: "https://ci.example.com/hook", filters: { types: ["dev.molt.nope.v1"] } }).success).toBe(false);
    expect(CreateWebhook.safeParse({ url: "ftp://ci.example.com/hook" }).success).toBe(false);
    // Where a new subscription starts: now unless asked otherwise.
    expect(ok.startAt).toBe("now");
    expect(CreateWebhook.parse({ url: "https://ci.example.com/hook", startAt: "beginning" }).startAt).toBe("beginning");
    expect(CreateWebhook.parse({ url: "https://ci.example.com/hook", startAt: "2026-12-06T05:00:00.000Z" }).startAt).toBe("2026-12-06T05:00:00.000Z");
    expect(CreateWebhook.safeParse({ url: "https://ci.example.com/hook", startAt: "yesterday" }).success).toBe(false);
  });

  it("[release-events] the AsyncAPI document names every node of a cluster's MOLT_NATS_URL (the service crashed on a comma-separated list)", () => {
    const doc = releaseAsyncApi({ natsUrl: "tls://127.0.0.1:4222,tls://127.0.0.1:4223" }) as { servers?: Record<string, { host: string }> };
    expect(Object.values(doc.servers ?? {}).map((s) => s.host)).toEqual(["127.0.0.1:4222", "127.0.0.1:4223"]);
    expect((releaseAsyncApi({ natsUrl: "nats://127.0.0.1:4222" }) as { servers?: Record<string, unknown> }).servers).toHaveProperty("nats");
  });
});
