import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Strategy, subjects, type HostState, type MoltEvent } from "@molt/contracts";
import { createEventStore, ensureEventStream, type EventStore } from "@molt/event-store";
import { startNatsServer, type NatsServer } from "@molt/testkit";
import { planDeployment, type Candidate } from "./plan.js";
import { loadPackages } from "./resolve.js";

let server: NatsServer;
let nc: NatsConnection;
let store: EventStore;
const meta = { occurredAt: "2026-12-06T00:00:00.000Z", actor: "otto", correlationId: "c" };
const C = "yank-agent";

async function append(commitId: string, ...events: Omit<MoltEvent, "id" | "metadata">[]) {
  const last = await store.readLast(subjects.package(C));
  const full = events.map((e, i) => ({ ...e, id: `${commitId}/${i}`, metadata: meta }) as MoltEvent);
  await store.append(subjects.package(C), { commitId, events: full }, { expectedSequence: last?.seq ?? 0 });
}

const published = (version: string, platform: string) => {
  const manifest = { component: C, version, platform, sha256: "b".repeat(64), size: 100, files: 1, entries: 1, unpackedSize: 10 };
  return { type: "PackagePublished" as const, data: { ...manifest, manifest } };
};

beforeAll(async () => {
  server = await startNatsServer();
  nc = await connect({ servers: server.url });
  await ensureEventStream(nc);
  store = createEventStore(nc);
});
afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

describe("allocator: yanked variants", () => {
  it("[security] a new plan skips hosts whose variant is yanked (reason \"yanked: …\"); the others get it with the latest signed metadata", async () => {
    await append("p1", published("2.0.0", "linux-amd64"));
    await append("p2", published("2.0.0", "linux-arm64"));
    const signed = { metadata: { component: C, version: 3, expires: "2027-01-01T00:00:00.000Z", packages: [] }, signature: "s", keyId: "k" };
    await append("y1", { type: "PackageYanked", data: { component: C, version: "2.0.0", platform: "linux-arm64", reason: "CVE-2026-7" } }, { type: "PackageMetadataSigned", data: { component: C, signed } });

    const { packages, yanked } = await loadPackages(store, C, "2.0.0", (p) => `http://repo/${p}`);
    expect([...packages.keys()]).toEqual(["linux-amd64"]);
    expect(packages.get("linux-amd64")?.metadata).toEqual(signed);
    expect(Object.fromEntries(yanked)).toEqual({ "linux-arm64": "CVE-2026-7" });

    const host = (hostId: string, platform: string): Candidate => {
      const state: HostState = { hostId, os: "linux", arch: "x64", platform, labels: {}, components: { [C]: "1.0.0" }, registeredAt: meta.occurredAt };
      return { hostId, state, online: true, quarantined: null };
    };
    const plan = planDeployment({ component: C, version: "2.0.0", kind: "upgrade", candidates: [host("amd", "linux-amd64"), host("arm", "linux-arm64")], packages, yanked, strategy: Strategy.parse({}) });
    expect(plan.batches.flatMap((b) => b.hosts.map((h) => h.hostId))).toEqual(["amd"]);
    expect(plan.skipped).toEqual([{ hostId: "arm", reason: "yanked: yank-agent 2.0.0 for platform linux-arm64 (CVE-2026-7)" }]);

    // Yanking every platform leaves nothing to plan: every host skipped as yanked.
    await append("y2", { type: "PackageYanked", data: { component: C, version: "2.0.0", reason: "recalled" } });
    const all = await loadPackages(store, C, "2.0.0", (p) => `http://repo/${p}`);
    expect(all.packages.size).toBe(0);
    expect(Object.fromEntries(all.yanked)).toEqual({ "linux-amd64": "recalled", "linux-arm64": "CVE-2026-7" });
  });
});
