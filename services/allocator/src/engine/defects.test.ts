import { Kvm, type KV } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { deploymentRepository, slotRepository } from "@molt/aggregates";
import { desiredKey, KV_DESIRED, Strategy, STREAM_EVENTS, subjects, type HostState, type MoltEvent } from "@molt/contracts";
import { createEventStore, ensureEventStream, type EventStore } from "@molt/event-store";
import { createLogger } from "@molt/runtime";
import { startNatsServer, waitFor, type NatsServer } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { desiredStates } from "../dispatch/desired.js";
import { runConsumer } from "./consumer.js";
import * as rules from "./rules.js";

// Each "Found by reading today's allocator" defect of the roll-engine issue, as a test that
// failed on the spine's allocator and passes now.

let server: NatsServer;
const conns: NatsConnection[] = [];
let store: EventStore;
let kv: KV;
const stops: Array<() => Promise<void>> = [];
const logger = createLogger("allocator-defects");
const C = "metrics-agent";
const now = () => new Date().toISOString();
const meta = (id: string, at = now()) => ({ occurredAt: at, actor: "test", correlationId: id });
let uniq = 0;
const id = (p: string) => `${p}-${process.pid}-${++uniq}`;

async function startReplica(name: string) {
  const nc = await connect({ servers: server.url, name });
  conns.push(nc);
  const s = createEventStore(nc);
  const deps = {
    store: s,
    deployments: deploymentRepository(s),
    slots: slotRepository(s),
    desired: desiredStates(await new Kvm(nc).open(KV_DESIRED), nc),
    logger,
    downloadUrl: (c: string, v: string, p: string) => `http://127.0.0.1:9/v1/packages/${c}/${v}/${p}/download`,
    replicaId: name,
    quarantineAfter: 3,
  };
  const engine = rules.engine(deps);
  const c = await runConsumer(nc, { stream: STREAM_EVENTS, durable: "molt-allocator", concurrency: 8, retryDelayMs: 50, ackWaitMs: 5000 }, (x, ctx) => engine.handle(x, ctx), logger);
  stops.push(() => c.stop());
  const d = await runConsumer(
    nc,
    { stream: STREAM_EVENTS, durable: "molt-allocator-deadlines", filter: subjects.slots, concurrency: 8, retryDelayMs: 50, ackWaitMs: 5000, maxAckPending: 20_000 },
    (x, ctx) => engine.deadlines(x, ctx),
    logger,
  );
  stops.push(() => d.stop());
}

async function register(hostId: string, version = "1.0.0", state?: unknown) {
  const s: HostState = { hostId, os: "linux", arch: "x64", platform: "linux-amd64", labels: {}, components: { [C]: version }, registeredAt: now() };
  const events: MoltEvent[] = [{ id: `reg-${hostId}/0`, type: "HostRegistered", data: { hostId, os: "linux", arch: "x64", platform: "linux-amd64", labels: {} }, metadata: meta(hostId) }];
  await store.append(subjects.hostMeta(hostId), { commitId: `reg-${hostId}`, events, state: state ?? s }, { expectedSequence: 0 });
}

async function registerMany(hosts: readonly string[]) {
  const queue = [...hosts];
  await Promise.all(Array.from({ length: 64 }, async () => {
    for (let h = queue.shift(); h !== undefined; h = queue.shift()) await register(h);
  }));
}

async function publish(version: string) {
  const sha256 = "b".repeat(64);
  const manifest = { component: C, version, platform: "linux-amd64", sha256, size: 100, files: 1, entries: 1, unpackedSize: 10 };
  const events: MoltEvent[] = [{ id: `pkg-${version}/0`, type: "PackagePublished", data: { ...manifest, manifest }, metadata: meta("p") }];
  const last = await store.readLast(subjects.package(C));
  await store.append(subjects.package(C), { commitId: `pkg-${version}`, events }, { expectedSequence: last?.seq ?? 0 });
}

async function request(deploymentId: string, hosts: string[], extra: Record<string, unknown> = {}, at = now()) {
  const data = { deploymentId, component: C, version: "2.0.0", hosts, idempotencyKey: null, requestHash: "c".repeat(64), taskTimeoutMs: 60_000, ...extra };
  const events = [{ id: `${deploymentId}:requested/0`, type: "DeploymentRequested", data, metadata: meta(deploymentId, at) }] as MoltEvent[];
  await store.append(subjects.deployment(deploymentId), { commitId: `${deploymentId}:requested` , events }, { expectedSequence: 0 });
}

/** Both hosts in flight at once (the default, 25 %, would take two hosts one at a time). */
const wide = { strategy: Strategy.parse({ maxUnavailable: { hosts: 10 } }) };
const deploymentEvents = async (d: string) => (await store.read(subjects.deployment(d))).flatMap((c) => c.commit.events);
const slotEvents = async (h: string) => (await store.read(subjects.slot(h, C))).flatMap((c) => c.commit.events);
const findEvent = async (d: string, type: MoltEvent["type"]) => (await deploymentEvents(d)).find((e) => e.type === type);

async function dispatchedTask(h: string) {
  const slots = slotRepository(store);
  return waitFor(`${h} dispatched`, async () => {
    const a = (await slots.load(h, C)).state.active;
    return a?.status === "dispatched" ? a : undefined;
  });
}

async function finish(h: string, taskId: string, ok: boolean) {
  const terminal = ok ? { kind: "succeeded" as const, seq: 2, at: now(), version: "2.0.0" } : { kind: "failed" as const, seq: 2, at: now(), reason: "boom", step: "download" as const };
  const r = await slotRepository(store).record({ hostId: h, taskId, component: C, entries: [{ kind: "accepted", seq: 1, at: now() }, terminal] }, { now: now(), actor: `host:${h}`, correlationId: taskId });
  expect(r.status).toBe("accepted");
}

beforeAll(async () => {
  server = await startNatsServer();
  const nc = await connect({ servers: server.url });
  conns.push(nc);
  await ensureEventStream(nc);
  store = createEventStore(nc);
  kv = await new Kvm(nc).create(KV_DESIRED, { history: 5 });
  await publish("2.0.0");
  await startReplica("a");
  await startReplica("b");
});
afterAll(async () => {
  for (const s of stops) await s();
  for (const c of conns) await c.close();
  await server?.stop();
});

describe("roll engine: defects found by reading the spine's allocator", () => {
  it("[roll-engine] a batch completes although a finished host's slot has since seen 20 newer tasks", async () => {
    const d = id("d-recent");
    const [a, b] = [id("slow"), id("busy")];
    await register(a);
    await register(b);
    await request(d, [a, b], wide);
    const ta = await dispatchedTask(a);
    const tb = await dispatchedTask(b);
    await finish(b, tb.taskId, true);
    await waitFor("b's key withdrawn", async () => ((await kv.get(desiredKey(b, C)))?.operation === "PUT" ? undefined : true));
    // 21 other tasks come and go on b's slot, pushing b's task out of the slot's last-20 list.
    const slots = slotRepository(store);
    for (let i = 0; i < 21; i++) {
      const taskId = `t-other-${uniq}-${i}`;
      const deadline = new Date(Date.now() + 60_000).toISOString();
      const pkg = { platform: "linux-amd64", sha256: "b".repeat(64), size: 1, url: "http://127.0.0.1:9/x" };
      const m = { now: now(), actor: "test", correlationId: taskId };
      await slots.handle(b, C, { type: "AllocateTask", data: { taskId, deploymentId: "d-elsewhere", hostId: b, component: C, version: "3.0.0", fromVersion: "2.0.0", attempt: 1, deadline, package: pkg } }, m, `${taskId}:a`);
      await slots.handle(b, C, { type: "CancelTask", data: { taskId, reason: "test" } }, m, `${taskId}:c`);
    }
    await finish(a, ta.taskId, true);
    const done = await waitFor("deployment completed", () => findEvent(d, "DeploymentCompleted"), { timeoutMs: 10_000 });
    expect(done.type === "DeploymentCompleted" && done.data).toMatchObject({ succeeded: 2, failed: 0 });
  });

  it("[roll-engine] a plan for 10,000 hosts with FQDN ids is stored in parts instead of failing the deployment", async () => {
    const d = id("d-big");
    const hosts = Array.from({ length: 10_000 }, (_, i) => `web-${String(i).padStart(5, "0")}.${d}.rack-a.eu-west-1.example.com`);
    await registerMany(hosts);
    await request(d, hosts, { strategy: Strategy.parse({ maxUnavailable: { hosts: 2 } }) });
    const planned = await waitFor("planned or failed", async () => (await findEvent(d, "DeploymentPlanned")) ?? (await findEvent(d, "DeploymentFailed")), { timeoutMs: 60_000 });
    expect(planned.type).toBe("DeploymentPlanned");
    const commits = await store.read(subjects.deployment(d));
    const planHosts = commits.flatMap((c) => c.commit.events).flatMap((e) => (e.type === "PlanPartRecorded" ? e.data.batches.flatMap((b) => b.hosts.map((h) => h.hostId)) : []));
    expect(planHosts.length).toBe(10_000);
    expect(new Set(planHosts).size).toBe(10_000);
    // Every commit of the plan stays well below the 1 MiB message limit.
    expect(commits.filter((c) => c.commit.events.some((e) => e.type === "PlanPartRecorded")).length).toBeGreaterThan(1);
    await deploymentRepository(store).handle(d, { type: "CancelDeployment", data: { reason: "test over" } }, { now: now(), actor: "test", correlationId: d }, `${d}:cancel`);
  }, 120_000);

  it("[roll-engine] a message handled for longer than ack_wait is kept in progress, not handed to a second handler", async () => {
    const nc = conns[0]!;
    const subject = subjects.deployment(id("d-slow"));
    const seen: number[] = [];
    const c = await runConsumer(
      nc,
      { stream: STREAM_EVENTS, durable: id("slow-consumer"), filter: subject, concurrency: 4, retryDelayMs: 50, ackWaitMs: 300 },
      async (x) => {
        seen.push(x.seq);
        // A long allocation loop: five ack_waits of work inside one message.
        await new Promise((r) => setTimeout(r, 1500));
      },
      logger,
    );
    await request(subject.split(".").pop()!, ["nobody"]);
    await waitFor("handled once", () => (seen.length > 0 ? true : undefined));
    await new Promise((r) => setTimeout(r, 2000));
    await c.stop();
    // Each commit on the subject (the request and what the engine appended to it) handled once.
    expect(seen.length).toBeGreaterThan(0);
    expect(new Set(seen).size).toBe(seen.length);
  });

  it("[roll-engine] one busy slot does not hold the batch: the host is recorded busy with the holder, the rest completes", async () => {
    const d = id("d-busy");
    const [x, y] = [id("held"), id("free")];
    await register(x);
    await register(y);
    const holder = `t-holder-${uniq}`;
    const pkg = { platform: "linux-amd64", sha256: "b".repeat(64), size: 1, url: "http://127.0.0.1:9/x" };
    await slotRepository(store).handle(
      x,
      C,
      { type: "AllocateTask", data: { taskId: holder, deploymentId: "d-holder", hostId: x, component: C, version: "9.0.0", fromVersion: "1.0.0", attempt: 1, deadline: new Date(Date.now() + 600_000).toISOString(), package: pkg } },
      { now: now(), actor: "test", correlationId: holder },
      `${holder}:a`,
    );
    await request(d, [x, y]);
    const ty = await dispatchedTask(y);
    await finish(y, ty.taskId, true);
    const done = await waitFor("completed while x stays busy", () => findEvent(d, "DeploymentCompleted"), { timeoutMs: 10_000 });
    expect(done.type === "DeploymentCompleted" && done.data).toMatchObject({ succeeded: 1, failed: 1 });
    const busy = (await deploymentEvents(d)).find((e) => e.type === "HostOutcomeRecorded" && e.data.hostId === x);
    expect(busy?.type === "HostOutcomeRecorded" && busy.data).toMatchObject({ outcome: "busy" });
    expect(busy?.type === "HostOutcomeRecorded" && busy.data.reason).toContain(holder);
    expect((await slotEvents(y)).filter((e) => e.type === "TaskAllocated")).toHaveLength(1);
  });

  it("[roll-engine] the deployment cache is bounded: loading many deployments keeps at most the configured number", async () => {
    const repo = deploymentRepository(store, { cacheSize: 2 });
    for (let i = 0; i < 5; i++) {
      const d = id("d-cache");
      await request(d, ["h-none"]);
      await repo.load(d);
    }
    expect(repo.cached()).toBeLessThanOrEqual(2);
  });

  it("[roll-engine] a silent task times out from the deadline index, with no tick walking the desired keys", async () => {
    const d = id("d-silent");
    const h = id("silent");
    await register(h);
    await request(d, [h], { taskTimeoutMs: 300 });
    await dispatchedTask(h);
    await waitFor("timed out", async () => ((await slotEvents(h)).some((e) => e.type === "TaskTimedOut") ? true : undefined), { timeoutMs: 10_000 });
    const outcome = await waitFor("outcome recorded", async () => (await deploymentEvents(d)).find((e) => e.type === "HostOutcomeRecorded"));
    expect(outcome.type === "HostOutcomeRecorded" && outcome.data.outcome).toBe("timed-out");
    await waitFor("key withdrawn", async () => ((await kv.get(desiredKey(h, C)))?.operation === "PUT" ? undefined : true));
  });

  it("[roll-engine] a host whose stored state cannot be read is skipped with the reason; the others still get their task", async () => {
    const d = id("d-badstate");
    const [bad, good] = [id("bad-state"), id("good")];
    await register(bad, "1.0.0", { hostId: bad, platform: "not a platform" });
    await register(good);
    await request(d, [bad, good]);
    await dispatchedTask(good);
    const parts = (await deploymentEvents(d)).flatMap((e) => (e.type === "PlanPartRecorded" ? e.data.skipped : []));
    expect(parts.find((s) => s.hostId === bad)?.reason).toMatch(/cannot be read/);
  });

  it("[roll-engine] a task's deadline counts from the event that assigned it, not from the allocator's clock", async () => {
    const d = id("d-clock");
    const h = id("clock");
    await register(h);
    const at = new Date(Date.now() - 5_000).toISOString();
    await request(d, [h], { taskTimeoutMs: 3_600_000 }, at);
    const task = await dispatchedTask(h);
    expect(task.deadline).toBe(new Date(Date.parse(at) + 3_600_000).toISOString());
  });

  it("[roll-engine] cancelling withdraws the tasks in flight (CancelTask, the desired key deleted)", async () => {
    const d = id("d-cancel");
    const [p, q] = [id("p"), id("q")];
    await register(p);
    await register(q);
    await request(d, [p, q], wide);
    await dispatchedTask(p);
    await dispatchedTask(q);
    await deploymentRepository(store).handle(d, { type: "CancelDeployment", data: { reason: "operator" } }, { now: now(), actor: "otto", correlationId: d }, `${d}:cancel`);
    for (const h of [p, q]) {
      await waitFor(`${h} cancelled`, async () => ((await slotEvents(h)).some((e) => e.type === "TaskCancelled") ? true : undefined), { timeoutMs: 10_000 });
      await waitFor(`${h} key withdrawn`, async () => ((await kv.get(desiredKey(h, C)))?.operation === "PUT" ? undefined : true));
    }
  });

  it("[roll-engine] retry runs the failed hosts again as attempt 2 (attempt is real)", async () => {
    const d = id("d-retry");
    const [ok, bad] = [id("ok"), id("bad")];
    await register(ok);
    await register(bad);
    await request(d, [ok, bad], wide);
    await finish(ok, (await dispatchedTask(ok)).taskId, true);
    await finish(bad, (await dispatchedTask(bad)).taskId, false);
    await waitFor("completed with a failure", () => findEvent(d, "DeploymentCompleted"));
    await deploymentRepository(store).handle(d, { type: "RetryDeployment", data: {} }, { now: now(), actor: "otto", correlationId: d }, `${d}:retry`);
    const second = await waitFor("attempt 2 allocated", async () => (await slotEvents(bad)).filter((e) => e.type === "TaskAllocated").find((e) => e.type === "TaskAllocated" && e.data.attempt === 2));
    expect(second.type === "TaskAllocated" && second.data.taskId).toBe(rules.taskIdFor(d, bad, 2));
    expect((await slotEvents(ok)).filter((e) => e.type === "TaskAllocated")).toHaveLength(1);
  });

  it("[roll-engine] a slot whose last N tasks failed is quarantined (an event), and later plans skip it with the reason", async () => {
    const host = id("flaky");
    await register(host);
    for (let n = 0; n < 3; n++) {
      const d = id("d-flaky");
      await request(d, [host]);
      await finish(host, (await dispatchedTask(host)).taskId, false);
      await waitFor(`${d} completed`, () => findEvent(d, "DeploymentCompleted"));
    }
    await waitFor("quarantined", async () => ((await slotEvents(host)).some((e) => e.type === "HostQuarantined") ? true : undefined));
    const d = id("d-after");
    await request(d, [host], { allowEmpty: true });
    await waitFor("planned", () => findEvent(d, "DeploymentPlanned"));
    const skips = (await deploymentEvents(d)).flatMap((e) => (e.type === "PlanPartRecorded" ? e.data.skipped : []));
    expect(skips).toEqual([{ hostId: host, reason: "quarantined: its last 3 tasks failed" }]);
  });
});
