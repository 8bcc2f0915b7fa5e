import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FleetVersions, HostList, HostView, KV_PRESENCE, presenceKey, subjects, type HostEvent } from "@molt/contracts";
import { createTemplate, type DatabaseTemplate } from "@molt/db";
import { createEventStore, ensureEventStream, type EventStore } from "@molt/event-store";
import { createLogger, ensureBucket, parseTokens } from "@molt/runtime";
import { startNatsServer, waitFor, type NatsServer } from "@molt/testkit";
import { buildApp } from "../app.js";
import { watchPresence, type Presence } from "./presence.js";

const VIEWER = "viewer-token-0123456789";
const tokens = parseTokens(JSON.stringify({ [VIEWER]: { actor: "vera", role: "viewer" } }), "test");
const headers = { authorization: `Bearer ${VIEWER}` };
const logger = createLogger("projector-fleet-test");
logger.level = "warn";
const GRACE_MS = 1_500;

let server: NatsServer;
let nc: NatsConnection;
let store: EventStore;
let template: DatabaseTemplate;
let presence: Presence;
let app: Awaited<ReturnType<typeof buildApp>>;
const beat = async (hostId: string) => {
  const kv = await ensureBucket(nc, KV_PRESENCE, { ttl: GRACE_MS, history: 1 });
  await kv.put(presenceKey(hostId), JSON.stringify({ at: new Date().toISOString(), agentVersion: "1" }));
};

beforeAll(async () => {
  [server, template] = await Promise.all([startNatsServer(), createTemplate()]);
  nc = await connect({ servers: server.url });
  await ensureEventStream(nc);
  store = createEventStore(nc);
  // The bucket as feedback creates it; the projector only watches it.
  await ensureBucket(nc, KV_PRESENCE, { ttl: GRACE_MS, history: 1 });
  presence = watchPresence(nc, logger, { retryMs: 50 });
  app = await buildApp({ db: await template.fresh(), store, logger, tokens, presence, retryMs: 50 });
});
afterAll(async () => {
  await app?.close();
  await presence?.stop();
  await template?.close();
  await nc?.close();
  await server?.stop();
});

/** Host meta commits as feedback writes them: one subject per host, each commit with the state after it. */
async function hostEvents(hostId: string, bodies: Array<Omit<HostEvent, "id" | "metadata">>, state: Record<string, unknown>) {
  const subject = subjects.hostMeta(hostId);
  const last = await store.readLast(subject);
  const seq = last?.seq ?? 0;
  const commitId = `hostmeta-${hostId.replace(/[^a-z0-9]/g, "")}-${seq}`;
  const metadata = { occurredAt: "2026-03-01T10:00:00.000Z", actor: `host:${hostId}`, correlationId: "hb" };
  const events = bodies.map((b, i) => ({ ...b, id: `${commitId}/${i}`, metadata })) as HostEvent[];
  return (await store.append(subject, { commitId, events, state }, { expectedSequence: seq })).seq;
}

async function register(hostId: string, platform: string, labels: Record<string, string>, components: Record<string, string | null>) {
  const [os, arch] = platform.split("-") as [string, string];
  const state = { hostId, os, arch, platform, labels, components, registeredAt: "2026-03-01T10:00:00.000Z" };
  return hostEvents(
    hostId,
    [
      { type: "HostRegistered", data: { hostId, os, arch, platform, labels } },
      ...Object.entries(components).map(([component, version]) => ({
        type: "ComponentVersionObserved" as const,
        data: { hostId, component, version, previous: null },
      })),
    ],
    state,
  );
}

const get = (url: string) => app.inject({ method: "GET", url, headers });
const hosts = async (qs: string) => {
  const res = await get(`/v1/hosts?${qs}`);
  expect(res.statusCode, res.body).toBe(200);
  return HostList.parse(res.json());
};
const ids = (l: HostList) => l.hosts.map((h) => h.hostId);

describe("fleet view", () => {
  it("[views] hosts with labels, cluster, platform and versions; filters, cursor pages, version distribution, online from presence", async () => {
    await register("web-1.eu-1.example.com", "linux-amd64", { cluster: "eu-1", role: "web" }, { "metrics-agent": "1.0.0" });
    await register("web-2.eu-1.example.com", "linux-amd64", { cluster: "eu-1", role: "web" }, { "metrics-agent": "2.0.0" });
    await register("10.0.0.7", "linux-arm64", { cluster: "us-1", role: "db" }, { "metrics-agent": "1.0.0", "log-shipper": "0.9.0" });
    await register("i-0abc123def", "linux-amd64", {}, { "metrics-agent": null });
    // Later: a label changes and a version moves on.
    await hostEvents(
      "10.0.0.7",
      [
        { type: "HostLabelsChanged", data: { hostId: "10.0.0.7", labels: { cluster: "eu-1", role: "db" } } },
        { type: "ComponentVersionObserved", data: { hostId: "10.0.0.7", component: "metrics-agent", version: "2.0.0", previous: "1.0.0" } },
      ],
      {
        hostId: "10.0.0.7",
        os: "linux",
        arch: "arm64",
        platform: "linux-arm64",
        labels: { cluster: "eu-1", role: "db" },
        components: { "metrics-agent": "2.0.0", "log-shipper": "0.9.0" },
        registeredAt: "2026-03-01T10:00:00.000Z",
      },
    );
    const last = await store.lastSequence();
    await waitFor("the fleet to be projected", async () => ((await get("/v1/projector/status")).json<{ checkpoint: number }>().checkpoint >= last ? true : undefined));

    const one = HostView.parse((await get("/v1/hosts/10.0.0.7")).json());
    expect(one).toMatchObject({ cluster: "eu-1", platform: "linux-arm64", labels: { cluster: "eu-1", role: "db" }, components: { "metrics-agent": "2.0.0", "log-shipper": "0.9.0" } });
    expect(ids(await hosts("cluster=eu-1"))).toEqual(["10.0.0.7", "web-1.eu-1.example.com", "web-2.eu-1.example.com"]);
    expect(ids(await hosts("label=role%3Dweb&label=cluster%3Deu-1"))).toEqual(["web-1.eu-1.example.com", "web-2.eu-1.example.com"]);
    expect(ids(await hosts("platform=linux-arm64"))).toEqual(["10.0.0.7"]);
    expect(ids(await hosts("component=metrics-agent&version=2.0.0"))).toEqual(["10.0.0.7", "web-2.eu-1.example.com"]);
    expect(ids(await hosts("component=metrics-agent&version=none"))).toEqual(["i-0abc123def"]);

    // Cursor pages: every host exactly once, in id order.
    const pages: string[] = [];
    let after: string | null = null;
    do {
      const page: HostList = await hosts(`limit=1${after ? `&after=${encodeURIComponent(after)}` : ""}`);
      pages.push(...ids(page));
      after = page.next;
    } while (after !== null);
    expect(pages).toEqual(["10.0.0.7", "i-0abc123def", "web-1.eu-1.example.com", "web-2.eu-1.example.com"]);

    const dist = FleetVersions.parse((await get("/v1/fleet/versions?component=metrics-agent")).json());
    expect(dist.components).toEqual([
      { component: "metrics-agent", total: 4, versions: [{ version: "2.0.0", hosts: 2 }, { version: "1.0.0", hosts: 1 }, { version: null, hosts: 1 }] },
    ]);

    // Online comes from presence: two hosts heartbeat, one of them stops and ages out.
    await beat("web-1.eu-1.example.com");
    await beat("10.0.0.7");
    await waitFor("two hosts online", async () => (ids(await hosts("online=true")).length === 2 ? true : undefined));
    expect(ids(await hosts("online=true"))).toEqual(["10.0.0.7", "web-1.eu-1.example.com"]);
    const seen = HostView.parse((await get("/v1/hosts/web-1.eu-1.example.com")).json());
    expect(seen.online).toBe(true);
    expect(Date.now() - Date.parse(seen.lastSeenAt ?? "")).toBeLessThan(10_000);
    const offline = await waitFor(
      "web-1 to age out while 10.0.0.7 keeps heartbeating",
      async () => {
        await beat("10.0.0.7");
        const on = ids(await hosts("online=true"));
        return on.length === 1 ? on : undefined;
      },
      { timeoutMs: 10_000, intervalMs: 100 },
    );
    expect(offline).toEqual(["10.0.0.7"]);
    expect(ids(await hosts("online=false"))).toEqual(["i-0abc123def", "web-1.eu-1.example.com", "web-2.eu-1.example.com"]);
  });

  it("[views] bad filters are 400 with the field; an unknown host or component is 404", async () => {
    const noComponent = await get("/v1/hosts?version=2.0.0");
    expect(noComponent.statusCode).toBe(400);
    expect(noComponent.json<{ error: { message: string } }>().error.message).toMatch(/version needs component/);
    const badLabel = await get("/v1/hosts?label=no-equals-sign");
    expect(badLabel.statusCode).toBe(400);
    expect(badLabel.json<{ error: { message: string } }>().error.message).toMatch(/key=value/);
    expect((await get("/v1/hosts?limit=0")).statusCode).toBe(400);
    expect((await get("/v1/hosts/bad%20host")).statusCode).toBe(400);
    expect((await get("/v1/hosts/nobody.example.com")).statusCode).toBe(404);
    expect((await get("/v1/fleet/versions?component=nothing-here")).statusCode).toBe(404);
    expect((await app.inject({ method: "GET", url: "/v1/hosts" })).statusCode).toBe(401);
  });
});
