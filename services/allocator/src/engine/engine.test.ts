import { Kvm, type KV } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { deploymentRepository, slotRepository } from "@molt/aggregates";
import type { HostState} from "@molt/contracts";
import { DesiredState, desiredKey, Strategy, KV_DESIRED, STREAM_EVENTS, subjects, type MoltEvent } from "@molt/contracts";
import { createEventStore, ensureEventStream, type EventStore } from "@molt/event-store";
import { createLogger } from "@molt/runtime";
import { startNatsServer, waitFor, type NatsServer } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { casPut, desiredStates, StaleRevisionError } from "../dispatch/desired.js";
import { runConsumer } from "./consumer.js";
import { engine, taskIdFor } from "./rules.js";

let server: NatsServer;
let conns: NatsConnection[] = [];
let store: EventStore;
let kv: KV;
const stops: Array<() => Promise<void>> = [];
const logger = createLogger("allocator-test");
const now = () => new Date().toISOString();
const meta = (id: string) => ({ occurredAt: now(), actor: "test", correlationId: id });

async function startReplica(name: string) {
  const nc = await connect({ servers: server.url, name });
  conns.push(nc);
  const s = createEventStore(nc);
  const rules = engine({
    store: s,
    deployments: deploymentRepository(s),
    slots: slotRepository(s),
    desired: desiredStates(await new Kvm(nc).open(KV_DESIRED), nc),
    logger,
    downloadUrl: (c, v, p) => `http://127.0.0.1:9/v1/packages/${c}/${v}/${p}/download`,
    replicaId: name,
  });
  const c = await runConsumer(nc, { stream: STREAM_EVENTS, durable: "molt-allocator", concurrency: 8, retryDelayMs: 50, ackWaitMs: 5000 }, (x, ctx) => rules.handle(x, ctx), logger);
  stops.push(() => c.stop());
  return rules;
}

async function register(hostId: string, component: string, version: string) {
  const state: HostState = { hostId, os: "linux", arch: "x64", platform: "linux-amd64", labels: {}, components: { [component]: version }, registeredAt: now() };
  const events: MoltEvent[] = [{ id: `reg-${hostId}/0`, type: "HostRegistered", data: { hostId, os: "linux", arch: "x64", platform: "linux-amd64", labels: {} }, metadata: meta(hostId) }];
  await store.append(subjects.hostMeta(hostId), { commitId: `reg-${hostId}`, events, state }, { expectedSequence: 0 });
}

async function publish(component: string, version: string) {
  const sha256 = "b".repeat(64);
  const manifest = { component, version, platform: "linux-amd64", sha256, size: 100, files: 1, entries: 1, unpackedSize: 10 };
  const signed = { signature: "c2lnbmF0dXJl", keyId: "publisher-1" };
  const events: MoltEvent[] = [{ id: `pkg-${component}-${version}/0`, type: "PackagePublished", data: { ...manifest, manifest, ...signed }, metadata: meta("p") }];
  const last = await store.readLast(subjects.package(component));
  await store.append(subjects.package(component), { commitId: `pkg-${component}-${version}`, events }, { expectedSequence: last?.seq ?? 0 });
}

beforeAll(async () => {
  server = await startNatsServer();
  const nc = await connect({ servers: server.url });
  conns.push(nc);
  await ensureEventStream(nc);
  store = createEventStore(nc);
  kv = await new Kvm(nc).create(KV_DESIRED, { history: 5 });
});
afterAll(async () => {
  for (const s of stops) await s();
  for (const c of conns) await c.close();
  conns = [];
  await server?.stop();
});

describe("allocator", () => {
  it("[spine] a KV write with a stale revision is refused", async () => {
    const r1 = await casPut(kv, "stale-test.agent", "one", 0);
    const r2 = await casPut(kv, "stale-test.agent", "two", r1);
    await expect(casPut(kv, "stale-test.agent", "three", r1)).rejects.toBeInstanceOf(StaleRevisionError);
    await expect(casPut(kv, "stale-test.agent", "again", 0)).rejects.toBeInstanceOf(StaleRevisionError);
    expect((await kv.get("stale-test.agent"))?.string()).toBe("two");
    expect((await kv.get("stale-test.agent"))?.revision).toBe(r2);
  });

  it("[spine] two replicas on one durable consumer: plan, one TaskAllocated per slot, dispatch via KV, complete", async () => {
    await startReplica("a");
    await startReplica("b");
    const hosts = ["h1.example.com", "h2.example.com", "10.1.1.3", "unknown-host", "already-there"];
    for (const h of hosts.slice(0, 3)) await register(h, "metrics-agent", "1.0.0");
    await register("already-there", "metrics-agent", "2.0.0");
    await publish("metrics-agent", "2.0.0");
    const deployments = deploymentRepository(store);
    const deploymentId = "d-alloc1";
    await deployments.handle(
      deploymentId,
      { type: "RequestDeployment", data: { deploymentId, component: "metrics-agent", version: "2.0.0", hosts, idempotencyKey: null, requestHash: "c".repeat(64), taskTimeoutMs: 60_000, strategy: Strategy.parse({ maxUnavailable: { hosts: 5 } }) } },
      { now: now(), actor: "otto", correlationId: "x" },
      `${deploymentId}:requested`,
    );
    const slots = slotRepository(store);
    const dispatched = hosts.slice(0, 3);
    await waitFor("all tasks dispatched", async () => {
      for (const h of dispatched) if ((await slots.load(h, "metrics-agent")).state.active?.status !== "dispatched") return undefined;
      return true;
    });
    for (const h of dispatched) {
      const types = (await store.read(subjects.slot(h, "metrics-agent"))).flatMap((c) => c.commit.events.map((e) => e.type));
      expect(types).toEqual(["TaskAllocated", "TaskDispatched"]);
      const desired = DesiredState.parse((await kv.get(desiredKey(h, "metrics-agent")))!.json());
      expect(desired).toMatchObject({ taskId: taskIdFor(deploymentId, h, 1), version: "2.0.0", fromVersion: "1.0.0" });
      expect(desired.package?.url).toContain("/v1/packages/metrics-agent/2.0.0/linux-amd64/download");
      // The publisher's signed manifest travels to the host, which checks it with its own keys.
      expect(desired.package?.signed).toMatchObject({ signature: "c2lnbmF0dXJl", keyId: "publisher-1", manifest: { component: "metrics-agent", version: "2.0.0" } });
    }
    const skipped = (await store.read(subjects.deployment(deploymentId))).flatMap((c) => c.commit.events).flatMap((e) => (e.type === "PlanPartRecorded" ? e.data.skipped : []));
    expect(skipped.map((s) => s.hostId).sort()).toEqual(["already-there", "unknown-host"]);

    // Hosts report: two succeed, one fails → batch and deployment complete; keys withdrawn.
    for (const [i, h] of dispatched.entries()) {
      const taskId = taskIdFor(deploymentId, h, 1);
      const terminal = i === 2 ? { kind: "failed" as const, seq: 2, at: now(), reason: "boom" } : { kind: "succeeded" as const, seq: 2, at: now(), version: "2.0.0" };
      const r = await slots.record({ hostId: h, taskId, component: "metrics-agent", entries: [{ kind: "accepted", seq: 1, at: now() }, terminal] }, { now: now(), actor: `host:${h}`, correlationId: taskId });
      expect(r.status).toBe("accepted");
    }
    const completed = await waitFor("deployment completed", async () => {
      const e = (await store.read(subjects.deployment(deploymentId))).flatMap((c) => c.commit.events).find((x) => x.type === "DeploymentCompleted");
      return e;
    });
    expect(completed.type === "DeploymentCompleted" && completed.data).toMatchObject({ succeeded: 2, failed: 1, skipped: 2 });
    await waitFor("desired keys withdrawn", async () => {
      for (const h of dispatched) {
        const e = await kv.get(desiredKey(h, "metrics-agent"));
        if (e && e.operation === "PUT") return undefined;
      }
      return true;
    });
    const types = (await store.read(subjects.deployment(deploymentId))).flatMap((c) => c.commit.events.map((e) => e.type));
    expect(types.filter((t) => t !== "HostOutcomeRecorded")).toEqual([
      "DeploymentRequested",
      "PlanPartRecorded",
      "DeploymentPlanned",
      "BatchStarted",
      "HostsAssigned",
      "BatchCompleted",
      "DeploymentCompleted",
    ]);
    expect(types.filter((t) => t === "HostOutcomeRecorded")).toHaveLength(3);
  });
});
