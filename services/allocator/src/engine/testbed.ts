import { Kvm, type KV } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { deploymentRepository, slotRepository } from "@molt/aggregates";
import { KV_DESIRED, STREAM_EVENTS, subjects, type HostState, type MoltEvent } from "@molt/contracts";
import { createEventStore, ensureEventStream, type EventStore } from "@molt/event-store";
import { createLogger } from "@molt/runtime";
import { startNatsServer, waitFor, type NatsServer } from "@molt/testkit";
import { expect } from "vitest";
import { desiredStates } from "../dispatch/desired.js";
import { consume, runConsumer } from "./consumer.js";
import { allocationOf, engine, HANDLED, type EngineDeps } from "./rules.js";

export const C = "metrics-agent";
export const now = () => new Date().toISOString();
const meta = (id: string, at = now()) => ({ occurredAt: at, actor: "test", correlationId: id });

/**
 * The allocator's integration tests: their own nats-server with the event stream and the desired
 * bucket, replicas of the engine on the two durables (in this process), and the writes the
 * other services would make (hosts registering, packages, requests, host reports).
 */
export async function testBed(name: string) {
  const server: NatsServer = await startNatsServer();
  const conns: NatsConnection[] = [];
  const stops: Array<() => Promise<void>> = [];
  const nc = await connect({ servers: server.url });
  conns.push(nc);
  await ensureEventStream(nc);
  const store: EventStore = createEventStore(nc);
  const kv: KV = await new Kvm(nc).create(KV_DESIRED, { history: 5 });
  const logger = createLogger(name);
  let uniq = 0;

  const bed = {
    server,
    nc,
    conns,
    store,
    kv,
    logger,
    /** A name unique to this run. */
    id: (p: string) => `${p}-${process.pid}-${++uniq}`,
    /** One engine replica on both durables; `extra` adds or replaces dependencies (the fleet, the cap). */
    async startReplica(replica: string, extra: (nc: NatsConnection, deps: EngineDeps) => Promise<Partial<EngineDeps>> = () => Promise.resolve({})) {
      const rnc = await connect({ servers: server.url, name: replica });
      conns.push(rnc);
      const s = createEventStore(rnc);
      const base: EngineDeps = {
        store: s,
        deployments: deploymentRepository(s),
        slots: slotRepository(s),
        desired: desiredStates(await new Kvm(rnc).open(KV_DESIRED), rnc),
        logger,
        downloadUrl: (c: string, v: string, p: string) => `http://127.0.0.1:9/v1/packages/${c}/${v}/${p}/download`,
        replicaId: replica,
        quarantineAfter: 3,
      };
      const deps = { ...base, ...(await extra(rnc, base)) };
      const rules = engine(deps);
      const c = await runConsumer(
        rnc,
        { stream: STREAM_EVENTS, durable: "molt-allocator", concurrency: 8, retryDelayMs: 50, ackWaitMs: 5000, handles: HANDLED },
        (x, ctx) => rules.handle(x, ctx),
        logger,
      );
      stops.push(() => c.stop());
      const d = await consume(
        rnc,
        { stream: STREAM_EVENTS, durable: "molt-allocator-deadlines", filter: subjects.slots, concurrency: 8, retryDelayMs: 50, ackWaitMs: 5000, maxAckPending: 20_000, headersOnly: true },
        allocationOf,
        (x, ctx) => rules.deadlines(x, ctx),
        logger,
      );
      stops.push(() => d.stop());
      return { rules, deps, nc: rnc };
    },
    async register(hostId: string, version = "1.0.0", state?: unknown, labels: Record<string, string> = {}) {
      const s: HostState = { hostId, os: "linux", arch: "x64", platform: "linux-amd64", labels, components: { [C]: version }, registeredAt: now() };
      const events: MoltEvent[] = [{ id: `reg-${hostId}/0`, type: "HostRegistered", data: { hostId, os: "linux", arch: "x64", platform: "linux-amd64", labels }, metadata: meta(hostId) }];
      await store.append(subjects.hostMeta(hostId), { commitId: `reg-${hostId}`, events, state: state ?? s }, { expectedSequence: 0 });
    },
    async registerMany(hosts: readonly string[]) {
      const queue = [...hosts];
      await Promise.all(
        Array.from({ length: 64 }, async () => {
          for (let h = queue.shift(); h !== undefined; h = queue.shift()) await bed.register(h);
        }),
      );
    },
    async publish(version: string) {
      const sha256 = "b".repeat(64);
      const manifest = { component: C, version, platform: "linux-amd64", sha256, size: 100, files: 1, entries: 1, unpackedSize: 10 };
      const events: MoltEvent[] = [{ id: `pkg-${version}/0`, type: "PackagePublished", data: { ...manifest, manifest }, metadata: meta("p") }];
      const last = await store.readLast(subjects.package(C));
      await store.append(subjects.package(C), { commitId: `pkg-${version}`, events }, { expectedSequence: last?.seq ?? 0 });
    },
    async request(deploymentId: string, hosts: string[], extra: Record<string, unknown> = {}, at = now()) {
      const data = { deploymentId, component: C, version: "2.0.0", hosts, idempotencyKey: null, requestHash: "c".repeat(64), taskTimeoutMs: 60_000, ...extra };
      const events = [{ id: `${deploymentId}:requested/0`, type: "DeploymentRequested", data, metadata: meta(deploymentId, at) }] as MoltEvent[];
      await store.append(subjects.deployment(deploymentId), { commitId: `${deploymentId}:requested`, events }, { expectedSequence: 0 });
    },
    deploymentEvents: async (d: string) => (await store.read(subjects.deployment(d))).flatMap((c) => c.commit.events),
    slotEvents: async (h: string) => (await store.read(subjects.slot(h, C))).flatMap((c) => c.commit.events),
    findEvent: async (d: string, type: MoltEvent["type"]) => (await bed.deploymentEvents(d)).find((e) => e.type === type),
    async dispatchedTask(h: string) {
      const slots = slotRepository(store);
      return waitFor(`${h} dispatched`, async () => {
        const a = (await slots.load(h, C)).state.active;
        return a?.status === "dispatched" ? a : undefined;
      });
    },
    /** The host's report: accepted, then succeeded or failed at DOWNLOAD. */
    async finish(h: string, taskId: string, ok: boolean, version = "2.0.0") {
      const terminal = ok ? { kind: "succeeded" as const, seq: 2, at: now(), version } : { kind: "failed" as const, seq: 2, at: now(), reason: "boom", step: "download" as const };
      const r = await slotRepository(store).record({ hostId: h, taskId, component: C, entries: [{ kind: "accepted", seq: 1, at: now() }, terminal] }, { now: now(), actor: `host:${h}`, correlationId: taskId });
      expect(r.status).toBe("accepted");
    },
    async stop() {
      for (const s of stops) await s();
      for (const c of conns) await c.close();
      await server.stop();
    },
  };
  return bed;
}
export type TestBed = Awaited<ReturnType<typeof testBed>>;
