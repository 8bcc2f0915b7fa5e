import { readFile } from "node:fs/promises";
import { DeploymentList, DeploymentView as DeploymentViewSchema, TaskList, TaskView, subjects, type MoltEvent, type Step } from "@molt/contracts";
import type { Db } from "@molt/db";
import { createEventStore, ensureEventStream, type EventStore } from "@molt/event-store";
import { createLogger, parseTokens } from "@molt/runtime";
import { startNatsServer, waitFor, type NatsServer } from "@molt/testkit";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildApp } from "./app.js";
import { testDatabases } from "./testing.js";

type App = Awaited<ReturnType<typeof buildApp>>;

const VIEWER = "viewer-token-0123456789";
const ADMIN = "admin-token-0123456789a";
const tokens = parseTokens(JSON.stringify({ [VIEWER]: { actor: "vera", role: "viewer" }, [ADMIN]: { actor: "ada", role: "admin" } }), "test");
const auth = { authorization: `Bearer ${VIEWER}` };
const logger = createLogger("projector-test");
logger.level = "warn";

let server: NatsServer;
let nc: NatsConnection;
let store: EventStore;
const apps: App[] = [];

beforeAll(async () => {
  server = await startNatsServer();
  nc = await connect({ servers: server.url });
  await ensureEventStream(nc);
  store = createEventStore(nc);
});
afterAll(async () => {
  await Promise.all(apps.map((a) => a.close()));
  await nc?.close();
  await server?.stop();
});

let n = 0;
const uniq = () => `${Date.now().toString(36)}${++n}`;
const PKG = { platform: "linux-amd64", sha256: "a".repeat(64), size: 1024, url: "https://repo.example.com/p.tar.gz" };
const T0 = Date.parse("2025-03-01T10:00:00.000Z");
/** A clock in the test's hand: every timestamp is fixed, so views can be compared row for row. */
const at = (ms: number) => new Date(T0 + ms).toISOString();

/** Appends commits to one subject, tracking its expected sequence as a real writer does. */
function writer(subject: string, base: number) {
  let last = 0;
  let i = 0;
  return async (...events: Array<{ type: MoltEvent["type"]; data: unknown; ms: number; actor?: string }>) => {
    const commitId = `${subject}#${++i}`;
    const envelopes = events.map((e, idx) => ({
      id: `${commitId}/${idx}`,
      type: e.type,
      data: e.data,
      metadata: { occurredAt: at(base + e.ms), actor: e.actor ?? "allocator", correlationId: "corr-1" },
    })) as MoltEvent[];
    const r = await store.append(subject, { commitId, events: envelopes }, { expectedSequence: last });
    last = r.seq;
    return r.seq;
  };
}

/** What host B's client sent with its failed download: the end of the step's output. */
const LOG_TAIL = "GET /p.tar.gz 200\nsha256 mismatch: got 00ff, want aaaa";
const STEPS_OK: Step[] = ["begin", "backup", "download", "override", "stop", "start", "verify", "end-action"];

/**
 * A realistic rollout: host A upgrades step by step; host B fails its download and rolls back.
 * Returns the ids and the last stream sequence appended.
 */
let rollouts = 0;
async function appendRollout() {
  const id = `d-${uniq()}`;
  // Each rollout an hour after the previous one, so "newest first" has one right answer.
  const base = 3_600_000 * ++rollouts;
  const ts = (ms: number) => at(base + ms);
  const hostA = `web-1.${id}.example.com`;
  const hostB = `10.0.${n}.7`;
  const component = "metrics-agent";
  const dep = writer(subjects.deployment(id), base);
  await dep({
    type: "DeploymentRequested",
    ms: 0,
    actor: "alice",
    data: { deploymentId: id, component, version: "2.1.0", hosts: [hostA, hostB], idempotencyKey: "k", requestHash: "b".repeat(64), taskTimeoutMs: 60_000 },
  });
  await dep({
    type: "PlanPartRecorded",
    ms: 10,
    data: {
      deploymentId: id,
      planId: "p1",
      part: 0,
      batches: [
        { index: 0, hosts: [{ hostId: hostA, fromVersion: "2.0.0", platform: PKG.platform }] },
        { index: 1, hosts: [{ hostId: hostB, fromVersion: "2.0.0", platform: PKG.platform }] },
      ],
      skipped: [],
    },
  });
  await dep({
    type: "DeploymentPlanned",
    ms: 10,
    data: {
      deploymentId: id,
      planId: "p1",
      parts: 1,
      packages: { [PKG.platform]: PKG },
      batches: [
        { index: 0, kind: "canary", size: 1 },
        { index: 1, kind: "batch", size: 1 },
      ],
      skipped: 0,
    },
  });
  await dep({ type: "BatchStarted", ms: 20, data: { deploymentId: id, index: 0 } });

  const task = (host: string) => `t-${id}-${host.replace(/[^a-z0-9]/g, "")}-1`;
  const runHost = async (host: string, startMs: number, fail: boolean) => {
    const taskId = task(host);
    const slot = writer(subjects.slot(host, component), base);
    await slot({
      type: "TaskAllocated",
      ms: startMs,
      data: { taskId, deploymentId: id, hostId: host, component, version: "2.1.0", fromVersion: "2.0.0", attempt: 1, deadline: ts(startMs + 60_000), package: PKG },
    });
    await slot({ type: "TaskDispatched", ms: startMs + 5, data: { taskId, revision: 1 } });
    let seq = 1;
    let t = startMs + 100;
    await slot({ type: "TaskAccepted", ms: t, actor: `host:${host}`, data: { taskId, seq: seq++, at: ts(t) } });
    for (const [i, step] of STEPS_OK.entries()) {
      const start = t + 10;
      const duration = 100 * (i + 1);
      t = start + duration;
      if (fail && step === "download") {
        await slot(
          { type: "TaskStepStarted", ms: t, actor: `host:${host}`, data: { taskId, seq: seq++, step, at: ts(start) } },
          { type: "TaskStepFailed", ms: t, actor: `host:${host}`, data: { taskId, seq: seq++, step, at: ts(t), durationMs: duration, error: "sha256 mismatch: got 00ff, want aaaa", logTail: LOG_TAIL } },
        );
        // Reported separately: a start in one commit, its end in the next.
        await slot({ type: "TaskStepStarted", ms: t + 1, actor: `host:${host}`, data: { taskId, seq: seq++, step: "rollback", at: ts(t + 1) } });
        await slot({ type: "TaskStepSucceeded", ms: t + 51, actor: `host:${host}`, data: { taskId, seq: seq++, step: "rollback", at: ts(t + 51), durationMs: 50 } });
        await slot({ type: "TaskRolledBack", ms: t + 52, actor: `host:${host}`, data: { taskId, seq: seq++, at: ts(t + 52), reason: "download failed" } });
        return slot({ type: "TaskFailed", ms: t + 53, actor: `host:${host}`, data: { taskId, seq: seq++, at: ts(t + 53), reason: "download: sha256 mismatch", step } });
      }
      await slot(
        { type: "TaskStepStarted", ms: t, actor: `host:${host}`, data: { taskId, seq: seq++, step, at: ts(start) } },
        { type: "TaskStepSucceeded", ms: t, actor: `host:${host}`, data: { taskId, seq: seq++, step, at: ts(t), durationMs: duration, ...(step === "verify" ? { detail: "healthy" } : {}) } },
      );
    }
    return slot({ type: "TaskSucceeded", ms: t + 1, actor: `host:${host}`, data: { taskId, seq: seq++, at: ts(t + 1), version: "2.1.0" } });
  };
  await runHost(hostA, 100, false);
  await dep({ type: "BatchCompleted", ms: 5_000, data: { deploymentId: id, index: 0, succeeded: 1, failed: 0 } });
  await dep({ type: "BatchStarted", ms: 5_001, data: { deploymentId: id, index: 1 } });
  const lastSeq = await runHost(hostB, 5_100, true);
  return { id, hostA, hostB, component, taskA: task(hostA), taskB: task(hostB), dep, lastSeq, ts };
}

async function start(db: Db, log = logger): Promise<App> {
  const app = await buildApp({ db, store, logger: log, tokens, retryMs: 50 });
  apps.push(app);
  return app;
}

async function close(app: App): Promise<void> {
  apps.splice(apps.indexOf(app), 1);
  await app.close();
}

const get = async (app: App, url: string) => app.inject({ method: "GET", url, headers: auth });

/** Polls the status endpoint until the views hold everything up to `seq`. */
async function caughtUp(app: App, seq: number): Promise<void> {
  await waitFor(`projector checkpoint ≥ ${seq}`, async () => {
    const s = (await get(app, "/v1/projector/status")).json<{ checkpoint: number }>();
    return s.checkpoint >= seq ? true : undefined;
  }, { timeoutMs: 15_000 });
}

/** Every row of every view, in key order: two databases hold the same views when these are equal. */
async function dump(db: Db) {
  const q = async (sql: string) => (await db.query(sql)).rows;
  return {
    deployments: await q("SELECT * FROM deployments ORDER BY id"),
    tasks: await q("SELECT * FROM tasks ORDER BY task_id"),
    steps: await q("SELECT * FROM task_steps ORDER BY task_id, seq"),
    batches: await q("SELECT * FROM deployment_batches ORDER BY deployment_id, idx"),
    batchHosts: await q("SELECT * FROM deployment_hosts ORDER BY deployment_id, host_id, attempt"),
    checkpoints: await q("SELECT * FROM checkpoints ORDER BY name"),
  };
}

interface DeploymentView {
  deployment: Record<string, unknown>;
  counts: Record<string, number>;
  tasks: Array<{
    taskId: string;
    hostId: string;
    state: string;
    error: string | null;
    currentStep: string | null;
    finishedAt: string | null;
    steps: Array<{ seq: number; step: string; state: string; startedAt: string | null; endedAt: string | null; durationMs: number | null; error: string | null }>;
  }>;
}

// On PGlite, and on the real PostgreSQL of MOLT_TEST_DATABASE_URL when it is set (CI sets it).
type Page = { hostId: string; events: Array<{ streamSeq: number; type: string; step: string | null }>; next: number | null };
const pages = async (app: App, host: string, query: string, cursor: "after" | "before") => {
  const out: Page[] = [];
  let next: number | null = null;
  do {
    const page: Page = (await get(app, `/v1/hosts/${host}/timeline?${query}${next !== null ? `&${cursor}=${next}` : ""}`)).json<Page>();
    out.push(page);
    next = page.next;
  } while (next !== null && out.length < 20);
  return out;
};


describe.each(testDatabases())("projector on %s: deployments, tasks and host timelines from MOLT_EVENTS", (_kind, template) => {
  it("[spine] a rollout with one success and one failure: counts, ordered steps with durations, the error, the host timeline", async () => {
    const app = await start(await template().fresh());
    const r = await appendRollout();
    await caughtUp(app, r.lastSeq);

    const res = await get(app, `/v1/deployments/${r.id}`);
    expect(res.statusCode).toBe(200);
    const view = res.json<DeploymentView>();
    expect(view.deployment).toMatchObject({
      id: r.id,
      component: "metrics-agent",
      version: "2.1.0",
      state: "running",
      requestedBy: "alice",
      createdAt: r.ts(0),
      hostsTotal: 2,
      skipped: [],
      completedAt: null,
      batches: { total: 2, started: 2, completed: 1 },
    });
    expect(view.counts).toEqual({ allocated: 0, dispatched: 0, running: 0, succeeded: 1, failed: 1, rejected: 0, "timed-out": 0, cancelled: 0 });

    const a = view.tasks.find((t) => t.hostId === r.hostA)!;
    const b = view.tasks.find((t) => t.hostId === r.hostB)!;
    expect(view.tasks.map((t) => t.hostId)).toEqual([r.hostA, r.hostB]);
    expect(a).toMatchObject({ taskId: r.taskA, state: "succeeded", error: null, fromVersion: "2.0.0", version: "2.1.0", attempt: 1 });
    expect(a.finishedAt).not.toBeNull();
    expect(a.steps.map((s) => s.step)).toEqual(STEPS_OK);
    expect(a.steps.every((s) => s.state === "succeeded")).toBe(true);
    expect(a.steps.map((s) => s.durationMs)).toEqual(STEPS_OK.map((_, i) => 100 * (i + 1)));
    expect(a.steps.map((s) => s.seq)).toEqual(STEPS_OK.map((_, i) => 2 + 2 * i));
    for (const s of a.steps) expect(Date.parse(s.endedAt!) - Date.parse(s.startedAt!)).toBe(s.durationMs);

    expect(b).toMatchObject({ taskId: r.taskB, state: "failed", error: "download: sha256 mismatch", currentStep: "download" });
    expect(b.steps.map((s) => [s.step, s.state])).toEqual([
      ["begin", "succeeded"],
      ["backup", "succeeded"],
      ["download", "failed"],
      ["rollback", "succeeded"],
    ]);
    expect(b.steps[2]).toMatchObject({ error: "sha256 mismatch: got 00ff, want aaaa", durationMs: 300, logTail: LOG_TAIL });
    // The task row carries the log tail its client sent with the failure.
    expect(b).toMatchObject({ logTail: LOG_TAIL });
    expect(a).toMatchObject({ logTail: null });

    const tl = await get(app, `/v1/hosts/${r.hostA}/timeline`);
    expect(tl.statusCode).toBe(200);
    const timeline = tl.json<{ hostId: string; events: Array<{ streamSeq: number; type: string; occurredAt: string; taskId: string; component: string; step: string | null }> }>();
    expect(timeline.hostId).toBe(r.hostA);
    expect(timeline.events.map((e) => e.type)).toEqual([
      "TaskAllocated",
      "TaskDispatched",
      "TaskAccepted",
      ...STEPS_OK.flatMap(() => ["TaskStepStarted", "TaskStepSucceeded"]),
      "TaskSucceeded",
    ]);
    expect(timeline.events.filter((e) => e.step !== null).map((e) => e.step)).toEqual(STEPS_OK.flatMap((s) => [s, s]));
    expect(timeline.events.every((e) => e.taskId === r.taskA && e.component === r.component)).toBe(true);
    const seqs = timeline.events.map((e) => e.streamSeq);
    expect([...seqs].sort((x, y) => x - y)).toEqual(seqs);
    const times = timeline.events.map((e) => Date.parse(e.occurredAt));
    expect([...times].sort((x, y) => x - y)).toEqual(times);
    // A step's start and end carry the host's own times.
    expect(timeline.events[3]).toMatchObject({ type: "TaskStepStarted", step: "begin", occurredAt: r.ts(210) });
  });

  it("[spine] a restart resumes from the checkpoint: nothing applied twice, new events picked up", async () => {
    const db = await template().fresh();
    let app = await start(db);
    const r = await appendRollout();
    await caughtUp(app, r.lastSeq);
    const before = await dump(db);
    await close(app);

    app = await start(db);
    const status = (await get(app, "/v1/projector/status")).json<{ checkpoint: number }>();
    expect(status.checkpoint).toBeGreaterThanOrEqual(r.lastSeq);
    expect(await dump(db)).toEqual(before);

    const seq = await r.dep({ type: "DeploymentCompleted", ms: 9_000, data: { deploymentId: r.id, succeeded: 1, failed: 1, skipped: 0 } });
    await caughtUp(app, seq);
    const view = (await get(app, `/v1/deployments/${r.id}`)).json<DeploymentView>();
    expect(view.deployment).toMatchObject({ state: "completed", completedAt: r.ts(9_000), batches: { total: 2, started: 2, completed: 1 } });
    const after = await dump(db);
    expect(after.tasks).toEqual(before.tasks);
    expect(after.steps).toEqual(before.steps);
  });

  it("[spine] two workers on one database apply each commit once", async () => {
    const db = await template().fresh();
    const one = await start(db);
    const two = await start(db);
    const r = await appendRollout();
    await caughtUp(one, r.lastSeq);
    await caughtUp(two, r.lastSeq);
    // batches_started is a counter: a BatchStarted applied twice would show 3 or 4.
    const view = (await get(one, `/v1/deployments/${r.id}`)).json<DeploymentView>();
    expect(view.deployment).toMatchObject({ batches: { total: 2, started: 2, completed: 1 } });
    expect(view.counts).toMatchObject({ succeeded: 1, failed: 1 });
  });

  it("[spine] a rebuild from sequence 0 into a fresh database gives the same rows", async () => {
    const db = await template().fresh();
    const app = await start(db);
    const r = await appendRollout();
    const last = await store.lastSequence();
    expect(last).toBeGreaterThanOrEqual(r.lastSeq);
    await caughtUp(app, last);

    const fresh = await template().fresh();
    const rebuilt = await start(fresh);
    await caughtUp(rebuilt, last);
    await close(app);
    await close(rebuilt);
    const [x, y] = [await dump(db), await dump(fresh)];
    expect(y.deployments.length).toBeGreaterThan(0);
    expect(y).toEqual(x);
  });

  it("[views] POST /v1/projector/rebuild replays into fresh tables and swaps them in: the views answer throughout and equal the live ones", async () => {
    const db = await template().fresh();
    const app = await start(db);
    const r = await appendRollout();
    await appendRollout();
    const last = await store.lastSequence();
    await caughtUp(app, last);
    const before = await dump(db);
    // A marker row in the live tables: gone after the swap, so the views are really the rebuilt ones.
    await db.query("UPDATE deployments SET reason = 'marker' WHERE id = $1", [r.id]);

    expect((await app.inject({ method: "POST", url: "/v1/projector/rebuild", headers: auth })).statusCode).toBe(403);
    const rebuilding = app.inject({ method: "POST", url: "/v1/projector/rebuild", headers: { authorization: `Bearer ${ADMIN}` } });
    // While it replays, the live views answer.
    const during = await get(app, `/v1/deployments/${r.id}`);
    expect(during.statusCode).toBe(200);
    const res = await rebuilding;
    expect(res.statusCode).toBe(200);
    expect(res.json<{ checkpoint: number }>().checkpoint).toBeGreaterThanOrEqual(last);

    const after = await dump(db);
    expect(after.deployments.find((d) => d["id"] === r.id)?.["reason"]).toBeNull();
    expect(after).toEqual(before);
    // It follows on the new tables.
    const seq = await r.dep({ type: "DeploymentCompleted", ms: 9_000, data: { deploymentId: r.id, succeeded: 1, failed: 1, skipped: 0 } });
    await caughtUp(app, seq);
    expect((await get(app, `/v1/deployments/${r.id}`)).json<DeploymentView>().deployment).toMatchObject({ state: "completed" });
  });

  it("[views] per-batch progress: each batch's size, state, outcomes and times, a retry as a batch of its own, equal after a rebuild", async () => {
    const db = await template().fresh();
    const app = await start(db);
    const id = `d-${uniq()}`;
    const base = 3_600_000 * ++rollouts;
    const dep = writer(subjects.deployment(id), base);
    const hosts = ["b-0", "b-1", "b-2", "b-3"].map((h) => `${h}.${id}.example.com`);
    const [h0, h1, h2, h3] = hosts as [string, string, string, string];
    const planned = (h: string) => ({ hostId: h, fromVersion: "2.0.0", platform: PKG.platform });
    await dep({
      type: "DeploymentRequested",
      ms: 0,
      data: { deploymentId: id, component: "metrics-agent", version: "2.1.0", hosts, idempotencyKey: "k", requestHash: "b".repeat(64), taskTimeoutMs: 60_000 },
    });
    await dep({
      type: "PlanPartRecorded",
      ms: 1,
      data: {
        deploymentId: id,
        planId: "p1",
        part: 0,
        batches: [
          { index: 0, hosts: [planned(h0)] },
          { index: 1, hosts: [planned(h1), planned(h2)] },
          { index: 2, hosts: [planned(h3)] },
        ],
        skipped: [],
      },
    });
    const batchesOf = [
      { index: 0, kind: "canary", size: 1 },
      { index: 1, kind: "batch", size: 2 },
      { index: 2, kind: "batch", size: 1 },
    ];
    await dep({ type: "DeploymentPlanned", ms: 2, data: { deploymentId: id, planId: "p1", parts: 1, packages: { [PKG.platform]: PKG }, batches: batchesOf, skipped: 0 } });
    await dep({ type: "BatchStarted", ms: 10, data: { deploymentId: id, index: 0 } });
    await dep({ type: "HostsAssigned", ms: 11, data: { deploymentId: id, attempt: 1, batch: 0, hosts: [h0] } });
    await dep({ type: "HostOutcomeRecorded", ms: 100, data: { deploymentId: id, hostId: h0, attempt: 1, outcome: "succeeded" } });
    await dep({ type: "BatchCompleted", ms: 101, data: { deploymentId: id, index: 0, succeeded: 1, failed: 0, at: at(base + 101) } });
    await dep({ type: "BatchStarted", ms: 200, data: { deploymentId: id, index: 1 } });
    await dep({ type: "HostsAssigned", ms: 201, data: { deploymentId: id, attempt: 1, batch: 1, hosts: [h1, h2] } });
    // Outcomes recorded together, as the roll engine groups them; a repeated one counts once.
    await dep(
      { type: "HostOutcomeRecorded", ms: 300, data: { deploymentId: id, hostId: h1, attempt: 1, outcome: "failed", reason: "download: sha256 mismatch" } },
      { type: "HostOutcomeRecorded", ms: 300, data: { deploymentId: id, hostId: h2, attempt: 1, outcome: "busy" } },
    );
    await dep({ type: "HostOutcomeRecorded", ms: 301, data: { deploymentId: id, hostId: h2, attempt: 1, outcome: "busy" } });
    await dep({ type: "BatchCompleted", ms: 302, data: { deploymentId: id, index: 1, succeeded: 0, failed: 2 } });
    // The failed and the busy host run again as batch 3 (attempt 2) before batch 2 has started.
    await dep({ type: "DeploymentRetried", ms: 400, data: { deploymentId: id, attempt: 2, index: 3, hosts: 2, commandKey: "retry-1" } });
    await dep({ type: "BatchStarted", ms: 401, data: { deploymentId: id, index: 3 } });
    await dep({ type: "HostsAssigned", ms: 402, data: { deploymentId: id, attempt: 2, batch: 3, hosts: [h1, h2] } });
    const last = await dep({ type: "HostOutcomeRecorded", ms: 500, data: { deploymentId: id, hostId: h1, attempt: 2, outcome: "succeeded" } });
    // h1's task of attempt 2: the task view names the batch it ran in.
    const slot = writer(subjects.slot(h1, "metrics-agent"), base);
    const taskSeq = await slot({
      type: "TaskAllocated",
      ms: 403,
      data: { taskId: `t-${id}-2`, deploymentId: id, hostId: h1, component: "metrics-agent", version: "2.1.0", fromVersion: "2.0.0", attempt: 2, deadline: at(base + 60_000), package: PKG },
    });
    await caughtUp(app, Math.max(last, taskSeq));

    const none = { succeeded: 0, failed: 0, rejected: 0, "timed-out": 0, cancelled: 0, busy: 0, skipped: 0 };
    const expected = [
      { index: 0, kind: "canary", size: 1, state: "done", assigned: 1, finished: 1, outcomes: { ...none, succeeded: 1 }, startedAt: at(base + 10), finishedAt: at(base + 101) },
      { index: 1, kind: "batch", size: 2, state: "done", assigned: 2, finished: 2, outcomes: { ...none, failed: 1, busy: 1 }, startedAt: at(base + 200), finishedAt: at(base + 302) },
      { index: 2, kind: "batch", size: 1, state: "pending", assigned: 0, finished: 0, outcomes: none, startedAt: null, finishedAt: null },
      { index: 3, kind: "retry", size: 2, state: "running", assigned: 2, finished: 1, outcomes: { ...none, succeeded: 1 }, startedAt: at(base + 401), finishedAt: null },
    ];
    const view = DeploymentViewSchema.parse((await get(app, `/v1/deployments/${id}`)).json());
    expect(view.deployment.batches).toEqual({ total: 4, started: 3, completed: 2, items: expected });
    expect(view.tasks.map((t) => [t.hostId, t.attempt, t.batch])).toEqual([[h1, 2, 3]]);
    const listed = DeploymentList.parse((await get(app, `/v1/deployments?component=metrics-agent&limit=1000`)).json());
    expect(listed.deployments.find((d) => d.deployment.id === id)?.deployment.batches.items).toEqual(expected);

    // Rebuilt from the stream, the batches and their hosts are the same rows.
    const before = await dump(db);
    expect(before.batches.length).toBeGreaterThan(0);
    const res = await app.inject({ method: "POST", url: "/v1/projector/rebuild", headers: { authorization: `Bearer ${ADMIN}` } });
    expect(res.statusCode).toBe(200);
    expect(await dump(db)).toEqual(before);
  });

  it("[views] every SQL query of the Grafana dashboard runs against the views after a rollout and returns rows; its Prometheus panels name metrics the projector exposes", async () => {
    const db = await template().fresh();
    const app = await start(db);
    const r = await appendRollout();
    // The hosts describe themselves too (the fleet tables).
    const meta = writer(subjects.hostMeta(r.hostA), 0);
    await meta(
      { type: "HostRegistered", ms: 1, actor: `host:${r.hostA}`, data: { hostId: r.hostA, os: "linux", arch: "amd64", platform: "linux-amd64", labels: { env: "prod" } } },
      { type: "ComponentVersionObserved", ms: 2, actor: `host:${r.hostA}`, data: { hostId: r.hostA, component: r.component, version: "2.1.0", previous: "2.0.0" } },
    );
    await caughtUp(app, await store.lastSequence());

    const dashboard = JSON.parse(await readFile(new URL("../../../infra/grafana/molt.json", import.meta.url), "utf8")) as {
      panels: Array<{ title: string; targets: Array<{ rawSql?: string; expr?: string }> }>;
    };
    const queries = dashboard.panels.flatMap((p) => p.targets.filter((t) => t.rawSql).map((t) => ({ title: p.title, sql: t.rawSql! })));
    expect(queries.length).toBeGreaterThanOrEqual(8);
    for (const q of queries) {
      const rows = (await db.query(q.sql)).rows;
      expect(rows.length, `"${q.title}" returned no rows`).toBeGreaterThan(0);
    }

    const exposed = new Set([...(await app.inject({ method: "GET", url: "/metrics" })).body.matchAll(/^# TYPE (\S+)/gm)].map((m) => m[1]!));
    const named = dashboard.panels.flatMap((p) => p.targets.flatMap((t) => [...(t.expr ?? "").matchAll(/\b(molt_[a-z_]+)/g)].map((m) => m[1]!)));
    expect(named.length).toBeGreaterThan(0);
    for (const name of named) expect(exposed, `${name} is not exposed`).toContain(name.replace(/_bucket$/, ""));
  });

  it("[spine] a commit that fails leaves no trace, stops projecting, and is applied once it can be", async () => {
    const db = await template().fresh();
    // Each failed try is logged at error: the behaviour under test, not noise to show.
    const app = await start(db, logger.child({}, { level: "silent" }));
    await caughtUp(app, await store.lastSequence());
    await db.exec("ALTER TABLE task_steps RENAME TO task_steps_away");
    const r = await appendRollout();
    const stuck = await waitFor("a projection error", async () => {
      const s = (await get(app, "/v1/projector/status")).json<{ checkpoint: number; lag: number; error: string | null }>();
      return s.error !== null ? s : undefined;
    });
    expect(stuck.error).toMatch(/task_steps/);
    expect(stuck.lag).toBeGreaterThan(0);
    // The commits before the first step landed; the first step's commit rolled back whole: its
    // task row still shows no step (the same statement run set it before the steps insert failed).
    const tasks = await db.query<{ current_step: string | null }>("SELECT current_step FROM tasks WHERE deployment_id = $1", [r.id]);
    expect(tasks.rows.length).toBeGreaterThan(0);
    expect(tasks.rows.every((t) => t.current_step === null)).toBe(true);

    await db.exec("ALTER TABLE task_steps_away RENAME TO task_steps");
    await caughtUp(app, r.lastSeq);
    const view = (await get(app, `/v1/deployments/${r.id}`)).json<DeploymentView>();
    expect(view.counts).toMatchObject({ succeeded: 1, failed: 1 });
    expect((await get(app, "/v1/projector/status")).json()).toMatchObject({ error: null, lag: 0 });
  });

  it("[spine] edges: 400 for a malformed id, 404 for unknown ones, 401 without a token, a newest-first list, status", async () => {
    const app = await start(await template().fresh());
    const r = await appendRollout();
    const r2 = await appendRollout();
    await caughtUp(app, r2.lastSeq);

    expect((await get(app, "/v1/deployments/Not_An*Id")).json()).toMatchObject({ error: { code: "validation" } });
    expect((await get(app, "/v1/deployments/Not_An*Id")).statusCode).toBe(400);
    const missing = await get(app, "/v1/deployments/d-missing");
    expect(missing.statusCode).toBe(404);
    expect(missing.json()).toEqual({ error: { code: "not_found", message: "no deployment d-missing" } });
    expect((await get(app, `/v1/hosts/${encodeURIComponent("bad host")}/timeline`)).statusCode).toBe(400);
    expect((await get(app, "/v1/hosts/nowhere.example.com/timeline")).statusCode).toBe(404);
    expect((await app.inject({ method: "GET", url: `/v1/deployments/${r.id}` })).statusCode).toBe(401);

    const list = (await get(app, "/v1/deployments?limit=2")).json<{ deployments: Array<{ deployment: { id: string }; counts: Record<string, number> }> }>();
    expect(list.deployments).toHaveLength(2);
    expect(list.deployments.map((d) => d.deployment.id)).toEqual([r2.id, r.id]);
    expect(list.deployments[0]!.counts).toMatchObject({ succeeded: 1, failed: 1, running: 0 });
    expect((await get(app, "/v1/deployments?limit=0")).statusCode).toBe(400);

    const page = (await get(app, `/v1/hosts/${r.hostA}/timeline?limit=3`)).json<{ events: Array<{ streamSeq: number }> }>();
    expect(page.events).toHaveLength(3);
    const rest = (await get(app, `/v1/hosts/${r.hostA}/timeline?after=${page.events[2]!.streamSeq}`)).json<{ events: unknown[] }>();
    expect(rest.events).toHaveLength(STEPS_OK.length * 2 + 1);

    const status = (await get(app, "/v1/projector/status")).json<{ checkpoint: number; streamLastSeq: number; lag: number; error: null }>();
    expect(status.lag).toBe(status.streamLastSeq - status.checkpoint);
    expect(status.error).toBeNull();
  });

  it("[views] pages end at a commit's edge, oldest or newest first; as of a time; no timeline table", async () => {
    const db = await template().fresh();
    const app = await start(db);
    const r = await appendRollout();
    const whole = (await get(app, `/v1/hosts/${r.hostB}/timeline?limit=10000`)).json<Page>();
    // Host B: allocated, dispatched, accepted, 3 step pairs (the download failed), the rollback's start and end apart, rolled back, failed.
    expect(whole.events).toHaveLength(13);
    expect(whole.next).toBeNull();

    const oldest = await pages(app, r.hostB, "limit=4", "after");
    expect(oldest.map((p) => p.events.length)).toEqual([3, 4, 4, 2]);
    expect(oldest.flatMap((p) => p.events)).toEqual(whole.events);
    const newest = await pages(app, r.hostB, "limit=4&order=newest", "before");
    expect(newest.map((p) => p.events.length)).toEqual([4, 4, 4, 1]);
    expect(newest.flatMap((p) => p.events)).toEqual(whole.events.slice().reverse());
    // No commit is split between two pages.
    for (const run of [oldest, newest]) {
      const pagesOf = new Map<number, Set<number>>();
      run.forEach((p, i) => p.events.forEach((e) => pagesOf.set(e.streamSeq, (pagesOf.get(e.streamSeq) ?? new Set()).add(i))));
      expect([...pagesOf.values()].every((s) => s.size === 1)).toBe(true);
    }

    // As of a time: what the event store held then. A label change stored later is not in it.
    const before = new Date();
    await new Promise((res) => setTimeout(res, 20));
    await writer(subjects.hostMeta(r.hostB), 9_000)({ type: "HostLabelsChanged", ms: 0, data: { hostId: r.hostB, labels: { tier: "web" } } });
    const then = (await get(app, `/v1/hosts/${r.hostB}/timeline?asOf=${before.toISOString()}`)).json<Page>();
    expect(then.events).toEqual(whole.events);
    const now = (await get(app, `/v1/hosts/${r.hostB}/timeline`)).json<Page>();
    expect(now.events.map((e) => e.type).at(-1)).toBe("HostLabelsChanged");

    expect((await get(app, `/v1/hosts/${r.hostB}/timeline?order=sideways`)).statusCode).toBe(400);
    expect((await get(app, `/v1/hosts/${r.hostB}/timeline?asOf=yesterday`)).statusCode).toBe(400);
    expect((await db.query("SELECT to_regclass('host_timeline')::text AS t")).rows).toEqual([{ t: null }]);
  });

  it("[views] a host's tasks, newest first in cursor pages: the index of its deployments", async () => {
    const app = await start(await template().fresh());
    const r = await appendRollout();
    // Two later tasks on host A, for another component, in deployments of their own.
    const later = writer(subjects.slot(r.hostA, "log-agent"), 3_600_000 * 1_000);
    for (const [i, ms] of [0, 60_000].entries()) {
      await later({
        type: "TaskAllocated",
        ms,
        data: { taskId: `t-${r.id}-log${i}`, deploymentId: `${r.id}-log${i}`, hostId: r.hostA, component: "log-agent", version: "1.1.0", fromVersion: "1.0.0", attempt: 1, deadline: at(3_600_000 * 1_000 + ms + 60_000), package: PKG },
      });
    }
    const seq = await later({ type: "TaskDispatched", ms: 60_001, data: { taskId: `t-${r.id}-log1`, revision: 1 } });
    await caughtUp(app, seq);

    const first = TaskList.parse((await get(app, `/v1/hosts/${r.hostA}/tasks?limit=2`)).json());
    expect(first.tasks.map((t) => [t.taskId, t.deploymentId, t.state])).toEqual([
      [`t-${r.id}-log1`, `${r.id}-log1`, "dispatched"],
      [`t-${r.id}-log0`, `${r.id}-log0`, "allocated"],
    ]);
    expect(first.next).not.toBeNull();
    const rest = TaskList.parse((await get(app, `/v1/hosts/${r.hostA}/tasks?limit=2&cursor=${first.next}`)).json());
    expect(rest.tasks.map((t) => t.taskId)).toEqual([r.taskA]);
    expect(rest.next).toBeNull();
    expect(rest.tasks[0]!.steps.map((s) => s.step)).toEqual(STEPS_OK);
    const one = TaskList.parse((await get(app, `/v1/hosts/${r.hostA}/tasks?component=${r.component}`)).json());
    expect(one.tasks.map((t) => t.taskId)).toEqual([r.taskA]);

    expect((await get(app, "/v1/hosts/nowhere.example.com/tasks")).statusCode).toBe(404);
    expect((await get(app, `/v1/hosts/${r.hostA}/tasks?cursor=bm9wZQ`)).statusCode).toBe(400);
    expect((await get(app, `/v1/hosts/${r.hostA}/tasks?limit=0`)).statusCode).toBe(400);
  });

  it("[views] task queries: a deployment's tasks by state and failed step, one task by id, deployments by state and component in cursor pages", async () => {
    const app = await start(await template().fresh());
    const r = await appendRollout();
    await caughtUp(app, r.lastSeq);

    // Every answer parses with the view schemas the dashboard and the CLI use.
    const whole = DeploymentViewSchema.parse((await get(app, `/v1/deployments/${r.id}`)).json());
    expect(whole.tasks.map((t) => t.hostId).sort()).toEqual([r.hostA, r.hostB].sort());
    const failed = TaskList.parse((await get(app, `/v1/deployments/${r.id}/tasks?state=failed`)).json());
    expect(failed.tasks.map((t) => [t.hostId, t.currentStep, t.error])).toEqual([[r.hostB, "download", "download: sha256 mismatch"]]);
    const atDownload = TaskList.parse((await get(app, `/v1/deployments/${r.id}/tasks?step=download`)).json());
    expect(atDownload.tasks.map((t) => t.taskId)).toEqual([r.taskB]);
    expect(TaskList.parse((await get(app, `/v1/deployments/${r.id}/tasks?state=succeeded`)).json()).tasks.map((t) => t.taskId)).toEqual([r.taskA]);
    // Pages of one: both tasks, each once.
    const first = TaskList.parse((await get(app, `/v1/deployments/${r.id}/tasks?limit=1`)).json());
    const second = TaskList.parse((await get(app, `/v1/deployments/${r.id}/tasks?limit=1&cursor=${first.next}`)).json());
    expect([...first.tasks, ...second.tasks].map((t) => t.taskId).sort()).toEqual([r.taskA, r.taskB].sort());
    expect(second.next).toBeNull();

    const one = TaskView.parse((await get(app, `/v1/tasks/${r.taskB}`)).json());
    expect(one).toMatchObject({ deploymentId: r.id, hostId: r.hostB, component: r.component, state: "failed" });
    expect(one.steps.find((x) => x.step === "download")).toMatchObject({ state: "failed", error: "sha256 mismatch: got 00ff, want aaaa" });

    const r2 = await appendRollout();
    await caughtUp(app, r2.lastSeq);
    const p1 = DeploymentList.parse((await get(app, "/v1/deployments?component=metrics-agent&limit=1")).json());
    expect(p1.deployments.map((d) => d.deployment.id)).toEqual([r2.id]);
    const p2 = DeploymentList.parse((await get(app, `/v1/deployments?component=metrics-agent&limit=1&cursor=${p1.next}`)).json());
    expect(p2.deployments.map((d) => d.deployment.id)).toEqual([r.id]);
    expect(DeploymentList.parse((await get(app, "/v1/deployments?component=other-thing")).json()).deployments).toEqual([]);
    const running = DeploymentList.parse((await get(app, "/v1/deployments?state=running&limit=1000")).json());
    expect(running.deployments.map((d) => d.deployment.id)).toEqual(expect.arrayContaining([r.id, r2.id]));

    expect((await get(app, `/v1/deployments?cursor=not-a-cursor`)).statusCode).toBe(400);
    expect((await get(app, `/v1/deployments/${r.id}/tasks?state=bogus`)).statusCode).toBe(400);
    expect((await get(app, "/v1/deployments/d-missing/tasks")).statusCode).toBe(404);
    expect((await get(app, "/v1/tasks/t-missing")).statusCode).toBe(404);
  });

  it("[views] live over SSE: a host's timeline replays after Last-Event-ID then follows; a deployment streams snapshots then changes", async () => {
    const app = await start(await template().fresh());
    const base = await app.listen({ host: "127.0.0.1", port: 0 });
    const r = await appendRollout();
    await caughtUp(app, r.lastSeq);
    const timeline = (await get(app, `/v1/hosts/${r.hostA}/timeline`)).json<{ events: Array<{ streamSeq: number; type: string }> }>();
    const seqs = [...new Set(timeline.events.map((e) => e.streamSeq))];

    // Everything from the start, one message per commit, ids in stream order.
    const all = await sse(`${base}/v1/hosts/${r.hostA}/events`);
    const replayed = await all.take(seqs.length);
    expect(replayed.map((m) => [m.event, m.id])).toEqual(seqs.map((q) => ["commit", String(q)]));
    // A reconnect after the third commit gets exactly the rest.
    const resumed = await sse(`${base}/v1/hosts/${r.hostA}/events`, { "last-event-id": String(seqs[2]) });
    expect((await resumed.take(seqs.length - 3)).map((m) => Number(m.id))).toEqual(seqs.slice(3));
    // Live: a new commit on the host reaches both, once.
    const meta = writer(subjects.hostMeta(r.hostA), 0);
    const liveSeq = await meta({ type: "HostRegistered", ms: 1, data: { hostId: r.hostA, os: "linux", arch: "amd64", platform: "linux-amd64", labels: {} } });
    for (const client of [all, resumed]) {
      const [m] = await client.take(1);
      expect(m).toMatchObject({ event: "commit", id: String(liveSeq) });
      expect((JSON.parse(m!.data) as { events: Array<{ type: string }> }).events.map((e) => e.type)).toEqual(["HostRegistered"]);
    }
    all.close();
    resumed.close();

    // A deployment: a snapshot (each task, then progress) ...
    const live = await sse(`${base}/v1/deployments/${r.id}/events`);
    const snapshot = await live.take(3);
    expect(snapshot.map((m) => m.event)).toEqual(["task", "task", "progress"]);
    expect(DeploymentList.shape.deployments.element.parse(JSON.parse(snapshot[2]!.data))).toMatchObject({ deployment: { state: "running" }, counts: { succeeded: 1, failed: 1 } });
    live.close();
    // ... and a client that reconnects up to date gets no snapshot again, only the change that follows.
    const again = await sse(`${base}/v1/deployments/${r.id}/events`, { "last-event-id": snapshot[2]!.id! });
    const done = await r.dep(
      { type: "BatchCompleted", ms: 9_000, data: { deploymentId: r.id, index: 1, succeeded: 0, failed: 1 } },
      { type: "DeploymentCompleted", ms: 9_000, data: { deploymentId: r.id, succeeded: 1, failed: 1, skipped: 0 } },
    );
    const [change] = await again.take(1);
    expect(change).toMatchObject({ event: "progress", id: String(done) });
    expect(JSON.parse(change!.data)).toMatchObject({ deployment: { state: "completed" } });
    again.close();
    expect((await get(app, `/v1/deployments/nope/events`)).statusCode).toBe(404);
  });

  it("[views] a deployment's live stream opened before the projection has the deployment waits for it (no 404); an id the event store does not know is 404", async () => {
    // An operator opens the dashboard the moment the deployment is accepted: the projection can be
    // a moment behind. The page follows this stream and shows a 404 for good (it does not retry).
    const quiet = createLogger("projector-test-lagging");
    quiet.level = "silent";
    const db = await template().fresh();
    const app = await start(db, quiet);
    const base = await app.listen({ host: "127.0.0.1", port: 0 });
    await caughtUp(app, await store.lastSequence());
    // The projection stops applying (its checkpoint table away: an environment failure it retries).
    await db.exec("ALTER TABLE checkpoints RENAME TO checkpoints_away");
    const id = `d-${uniq()}`;
    const seq = await writer(subjects.deployment(id), 0)({
      type: "DeploymentRequested",
      ms: 0,
      actor: "alice",
      data: { deploymentId: id, component: "metrics-agent", version: "2.1.0", hosts: ["web-9.example.com"], idempotencyKey: "k", requestHash: "b".repeat(64), taskTimeoutMs: 60_000 },
    });
    const live = await sse(`${base}/v1/deployments/${id}/events`);
    expect(await live.within(300)).toBe(0);
    // The stream was opened, and stayed quiet, while the views did not have the deployment.
    expect((await get(app, `/v1/deployments/${id}`)).statusCode).toBe(404);
    await db.exec("ALTER TABLE checkpoints_away RENAME TO checkpoints");
    const [m] = await live.take(1);
    expect(m).toMatchObject({ event: "progress" });
    expect(Number(m!.id)).toBeGreaterThanOrEqual(seq);
    expect(JSON.parse(m!.data)).toMatchObject({ deployment: { id } });
    live.close();
    expect((await get(app, `/v1/deployments/d-${uniq()}/events`)).statusCode).toBe(404);
  });
});

/** A minimal server-sent-events reader over fetch: messages in order, comments skipped. */
async function sse(url: string, extra: Record<string, string> = {}) {
  const controller = new AbortController();
  const res = await fetch(url, { headers: { ...auth, ...extra }, signal: controller.signal });
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toMatch(/text\/event-stream/);
  const reader: ReadableStreamDefaultReader<Uint8Array> = res.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  const queue: Array<{ id?: string; event?: string; data: string }> = [];
  // One read at a time, shared: `within` may leave one pending for the next `take`.
  let reading: Promise<void> | undefined;
  const readMore = (): Promise<void> => {
    if (!reading) {
      reading = readOnce().finally(() => (reading = undefined));
      // Handled here too: a read still pending when the test closes the stream rejects unawaited.
      reading.catch(() => undefined);
    }
    return reading;
  };
  const readOnce = async () => {
    const { value, done } = await reader.read();
    if (done) throw new Error("the event stream ended");
    buffer += decoder.decode(value, { stream: true });
    let cut: number;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const m: { id?: string; event?: string; data: string } = { data: "" };
      let any = false;
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const [field, ...rest] = line.split(": ");
        const value = rest.join(": ");
        if (field === "id") m.id = value;
        else if (field === "event") m.event = value;
        else if (field === "data") m.data += value;
        any = true;
      }
      if (any) queue.push(m);
    }
  };
  return {
    async take(n: number) {
      const deadline = Date.now() + 15_000;
      while (queue.length < n) {
        if (Date.now() > deadline) throw new Error(`only ${queue.length} of ${n} events arrived`);
        await readMore();
      }
      return queue.splice(0, n);
    },
    /** How many messages are waiting after `ms` of reading what comes. */
    async within(ms: number) {
      const deadline = Date.now() + ms;
      while (Date.now() < deadline) await Promise.race([readMore(), new Promise((r) => setTimeout(r, Math.max(0, deadline - Date.now())))]);
      return queue.length;
    },
    close: () => controller.abort(),
  };
}
