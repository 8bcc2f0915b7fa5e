import { STEPS, subjects, type MoltEvent } from "@molt/contracts";
import type { Db, Queryable } from "@molt/db";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { fleetProjection } from "../fleet/projection.js";
import type { ProjectedCommit, Projection } from "../projection/projection.js";
import { testDatabases } from "../testing.js";
import { deploymentsProjection } from "./projection.js";

/**
 * The runner applies a burst of commits as one run (`applyRun`: task and step rows folded in
 * memory, one statement per table); one by one (`apply`) is the specification. For any stream,
 * cut into runs anywhere, both must leave the same rows in every table of every projection, on
 * PGlite and on PostgreSQL. A commit the database refuses is dead-lettered (its rows absent, the
 * next commits there); a run holding one fails whole and goes commit by commit, as the follower
 * does. MOLT_PROPERTY_RUNS raises the number of streams drawn (e.g. 2000 for a soak).
 */
const RUNS = Number(process.env["MOLT_PROPERTY_RUNS"] ?? 40);

const PKG = { platform: "linux-amd64", sha256: "a".repeat(64), size: 1024, url: "https://repo.example.com/p.tar.gz" };
const at = (ms: number) => new Date(Date.UTC(2026, 11, 6, 10, 0, 0, 0) + ms).toISOString();
/** Durations as hosts may report them: zero, subnormal (the old underflow), fractions, years, and one past what a timestamp can hold. */
const DURATIONS = [0, Number.MIN_VALUE, 1e-321, 0.0015, 5, 1234.5678, 1e13, 1e17] as const;
/** Seqs: small ones collide (duplicates, reused seqs); one past int4 (the run goes commit by commit). */
const SEQS = [1, 2, 3, 4, 5, 6, 3_000_000_000] as const;

const projections: Projection[] = [deploymentsProjection(), fleetProjection()];

interface Stream {
  /** Commits in stream order: [subject kind, events]. */
  commits: Array<{ subject: string; hostId: string | null; component: string | null; events: MoltEvent[] }>;
}

const meta = (ms: number, actor = "host:h") => ({ occurredAt: at(ms), actor, correlationId: "c" });
const mk = (type: MoltEvent["type"], data: unknown, ms: number, id: string): MoltEvent => ({ id, type, data, metadata: meta(ms) }) as MoltEvent;

// ---------- 1. chaos: any event in any order, from small domains so that they collide ----------
const aChaosEvent = fc.record({
  kind: fc.constantFrom(
    "allocated",
    "dispatched",
    "accepted",
    "stepStarted",
    "stepSucceeded",
    "stepFailed",
    "rolledBack",
    "succeeded",
    "failed",
    "rejected",
    "timedOut",
    "cancelled",
    "requested",
    "assigned",
    "outcome",
  ),
  task: fc.integer({ min: 0, max: 2 }),
  seq: fc.constantFrom(...SEQS),
  step: fc.constantFrom("begin", "download", "verify"),
  ms: fc.integer({ min: 0, max: 100_000 }),
  durationMs: fc.constantFrom(...DURATIONS),
  text: fc.option(fc.string({ maxLength: 8 }), { nil: undefined }),
  attempt: fc.integer({ min: 1, max: 2 }),
});
type ChaosEvent = typeof aChaosEvent extends fc.Arbitrary<infer T> ? T : never;

function chaosEvent(r: ChaosEvent, p: string, i: number): MoltEvent {
  const taskId = `${p}-t${r.task}`;
  const deploymentId = `${p}-d`;
  const hostId = `${p}-h${r.task}`;
  const base = { taskId, seq: r.seq, at: at(r.ms) };
  const id = `${p}-e${i}`;
  switch (r.kind) {
    case "allocated":
      return mk("TaskAllocated", { taskId, deploymentId, hostId, component: "c", version: "2.0.0", fromVersion: r.text ?? null, attempt: r.attempt, deadline: at(r.ms + 9), package: PKG }, r.ms + 1, id);
    case "dispatched":
      return mk("TaskDispatched", { taskId, revision: 1 }, r.ms + 1, id);
    case "accepted":
      return mk("TaskAccepted", base, r.ms + 1, id);
    case "stepStarted":
      return mk("TaskStepStarted", { ...base, step: r.step }, r.ms + 1, id);
    case "stepSucceeded":
      return mk("TaskStepSucceeded", { ...base, step: r.step, durationMs: r.durationMs, ...(r.text === undefined ? {} : { detail: r.text }) }, r.ms + 1, id);
    case "stepFailed":
      return mk("TaskStepFailed", { ...base, step: r.step, durationMs: r.durationMs, error: "e", ...(r.text === undefined ? {} : { logTail: r.text }) }, r.ms + 1, id);
    case "rolledBack":
      return mk("TaskRolledBack", base, r.ms + 1, id);
    case "succeeded":
      return mk("TaskSucceeded", { ...base, version: "2.0.0" }, r.ms + 1, id);
    case "failed":
      return mk("TaskFailed", { ...base, reason: "boom", ...(r.text === undefined ? {} : { step: r.step }) }, r.ms + 1, id);
    case "rejected":
      return mk("TaskRejected", { ...base, reason: "busy" }, r.ms + 1, id);
    case "timedOut":
      return mk("TaskTimedOut", { taskId, deadline: at(r.ms) }, r.ms + 1, id);
    case "cancelled":
      return mk("TaskCancelled", { taskId, reason: "stop" }, r.ms + 1, id);
    case "requested":
      return mk(
        "DeploymentRequested",
        { deploymentId, component: "c", version: "2.0.0", hosts: [hostId], selector: {}, idempotencyKey: null, requestHash: "b".repeat(64), taskTimeoutMs: 60_000 },
        r.ms + 1,
        id,
      );
    case "assigned":
      return mk("HostsAssigned", { deploymentId, attempt: r.attempt, batch: 0, hosts: [hostId] }, r.ms + 1, id);
    case "outcome":
      return mk("HostOutcomeRecorded", { deploymentId, hostId, attempt: r.attempt, outcome: "succeeded" }, r.ms + 1, id);
  }
}

/** Chaos commits sit on one host's slot (task events), or on the deployment's subject (its events). */
const aChaosStream = fc.array(fc.array(aChaosEvent, { minLength: 1, maxLength: 3 }), { minLength: 1, maxLength: 30 }).map(
  (drawn) =>
    (p: string): Stream => ({
      commits: drawn.map((evs, c) => {
        const events = evs.map((e, i) => chaosEvent(e, p, c * 10 + i));
        const deploymentLevel = events[0]!.type === "DeploymentRequested" || events[0]!.type === "HostsAssigned" || events[0]!.type === "HostOutcomeRecorded";
        // A commit holds one aggregate's events: the first decides where it sits; the rest of a mixed draw is dropped.
        const same = events.filter((e) => (e.type === "DeploymentRequested" || e.type === "HostsAssigned" || e.type === "HostOutcomeRecorded") === deploymentLevel);
        return deploymentLevel
          ? { subject: subjects.deployment(`${p}-d`), hostId: null, component: null, events: same }
          : { subject: subjects.slot(`${p}-h0`, "c"), hostId: `${p}-h0`, component: "c", events: same };
      }),
    }),
);

// ---------- 2. rollouts as the stream really holds them, perturbed as it really can be ----------
/**
 * A tape of choices the builder reads (fast-check shrinks the tape, so a failure shrinks to a
 * smaller rollout): 2-3 deployments on 1-3 hosts and two components (several deployments touch one
 * host), each host's task going through its lifecycle with steps reported as one commit or two,
 * failures with rollback, rejections, timeouts followed by late reports, cancellations, retries
 * (a new attempt, a new task on the same slot), redelivered dispatches and duplicated reports,
 * hosts registering and observing versions; all of it interleaved across hosts and deployments.
 */
const aRolloutStream = fc.array(fc.nat(999), { minLength: 20, maxLength: 300 }).map((tape) => (p: string): Stream => buildRollout(tape, p));

function buildRollout(tape: readonly number[], p: string): Stream {
  let k = 0;
  const pick = (n: number) => (tape.length === 0 ? 0 : tape[k++ % tape.length]! % n);
  const chance = (pct: number) => pick(100) < pct;
  let clock = 0;
  const tick = () => (clock += 1 + pick(50));
  let ids = 0;
  const ev = (type: MoltEvent["type"], data: unknown, actor = "allocator") => ({ id: `${p}-e${++ids}`, type, data, metadata: meta(tick(), actor) }) as MoltEvent;
  type Commit = Stream["commits"][number];
  /** Lanes of commits, each in its own order; interleaved at the end. */
  const lanes: Commit[][] = [];
  const hosts = Array.from({ length: 1 + pick(3) }, (_, i) => `${p}-h${i}.example.com`);
  // Hosts describe themselves on their meta subject.
  for (const h of hosts) {
    const lane: Commit[] = [];
    const metaCommit = (events: MoltEvent[]) => lane.push({ subject: subjects.hostMeta(h), hostId: h, component: null, events });
    metaCommit([ev("HostRegistered", { hostId: h, os: "linux", arch: "amd64", platform: "linux-amd64", labels: { cluster: `eu-${pick(2)}` } }, `host:${h}`)]);
    if (chance(50)) metaCommit([ev("ComponentVersionObserved", { hostId: h, component: "c", version: "1.0.0", previous: null }, `host:${h}`)]);
    if (chance(30)) metaCommit([ev("HostLabelsChanged", { hostId: h, labels: { cluster: "us-1", role: "web" } }, "operator")]);
    lanes.push(lane);
  }
  const deployments = 2 + pick(2);
  for (let d = 0; d < deployments; d++) {
    const deploymentId = `${p}-d${d}`;
    const component = pick(3) === 0 ? "d" : "c";
    const lane: Commit[] = [];
    const dep = (...events: MoltEvent[]) => lane.push({ subject: subjects.deployment(deploymentId), hostId: null, component: null, events });
    const targets = hosts.filter(() => chance(80));
    if (targets.length === 0) targets.push(hosts[0]!);
    dep(ev("DeploymentRequested", { deploymentId, component, version: `2.${d}.0`, hosts: targets, selector: {}, idempotencyKey: null, requestHash: "b".repeat(64), taskTimeoutMs: 60_000 }, "alice"));
    dep(ev("DeploymentPlanned", { deploymentId, planId: "p1", parts: 0, packages: { [PKG.platform]: PKG }, batches: [{ index: 0, kind: "batch", size: targets.length }], skipped: 0 }));
    dep(ev("BatchStarted", { deploymentId, index: 0 }));
    dep(ev("HostsAssigned", { deploymentId, attempt: 1, batch: 0, hosts: targets }));
    const outcomes: MoltEvent[] = [];
    const retry: string[] = [];
    for (const h of targets) {
      const outcome = hostTask(deploymentId, h, component, 1);
      outcomes.push(ev("HostOutcomeRecorded", { deploymentId, hostId: h, attempt: 1, outcome }));
      if (outcome !== "succeeded") retry.push(h);
    }
    // Outcomes as a group commit (hundreds of events in a real one), sometimes one by one.
    if (chance(50)) dep(...outcomes);
    else for (const o of outcomes) dep(o);
    if (chance(30)) dep(ev("DeploymentPaused", { deploymentId, reason: "lunch" }, "alice"), ev("DeploymentResumed", { deploymentId }, "alice"));
    dep(ev("BatchCompleted", { deploymentId, index: 0, succeeded: targets.length - retry.length, failed: retry.length }));
    if (retry.length > 0 && chance(60)) {
      dep(ev("DeploymentRetried", { deploymentId, attempt: 2, index: 1, hosts: retry.length }, "alice"));
      dep(ev("BatchStarted", { deploymentId, index: 1 }));
      dep(ev("HostsAssigned", { deploymentId, attempt: 2, batch: 1, hosts: retry }));
      for (const h of retry) dep(ev("HostOutcomeRecorded", { deploymentId, hostId: h, attempt: 2, outcome: hostTask(deploymentId, h, component, 2) }));
      dep(ev("BatchCompleted", { deploymentId, index: 1, succeeded: 0, failed: 0 }));
    }
    if (chance(20)) dep(ev("DeploymentCancelled", { deploymentId, reason: "stop" }, "alice"));
    else dep(ev("DeploymentCompleted", { deploymentId, succeeded: 1, failed: 0, skipped: 0 }));
    // A late duplicate of a deployment commit (another replica's re-decision).
    if (chance(20)) lane.push(lane[pick(lane.length)]!);
    lanes.push(lane);
  }
  return { commits: interleave(lanes) };

  /** One host's task of one attempt on its slot, as a lane of commits; returns how it ended. */
  function hostTask(deploymentId: string, h: string, component: string, attempt: number): "succeeded" | "failed" | "rejected" | "timed-out" | "cancelled" {
    const taskId = `${deploymentId}-${h.split(".")[0]}-a${attempt}`;
    const lane: Commit[] = [];
    const slot = (...events: MoltEvent[]) => lane.push({ subject: subjects.slot(h, component), hostId: h, component, events });
    const host = `host:${h}`;
    let seq = 1;
    const report = (type: MoltEvent["type"], data: object) => ev(type, { taskId, seq: seq++, at: at(clock + pick(5)), ...data }, host);
    slot(ev("TaskAllocated", { taskId, deploymentId, hostId: h, component, version: "2.0.0", fromVersion: chance(50) ? "1.0.0" : null, attempt, deadline: at(clock + 60_000), package: PKG }));
    slot(ev("TaskDispatched", { taskId, revision: attempt }));
    if (chance(10)) {
      slot(report("TaskRejected", { reason: "lock busy" }));
      return "rejected";
    }
    slot(report("TaskAccepted", {}));
    // Redelivery: the dispatch appended again after the host reported (it must not move the task back).
    if (chance(20)) slot(ev("TaskDispatched", { taskId, revision: attempt }));
    const fate = pick(100);
    const steps = STEPS.filter(() => chance(60));
    let ended: "succeeded" | "failed" | "timed-out" | "cancelled" = "succeeded";
    const late: Commit[] = [];
    for (const [i, step] of steps.entries()) {
      const failing = fate < 25 && i === steps.length - 1;
      const durationMs = DURATIONS[pick(DURATIONS.length - 1)]!;
      const start = report("TaskStepStarted", { step });
      const end = failing
        ? report("TaskStepFailed", { step, durationMs, error: "exit 1", ...(chance(50) ? { logTail: "line\nlast" } : {}) })
        : report("TaskStepSucceeded", { step, durationMs, ...(chance(30) ? { detail: "ok" } : {}) });
      const how = pick(10);
      if (how < 6) slot(start, end); // together, as hosts usually report
      else if (how < 8) {
        slot(start);
        slot(end);
      } else slot(end); // the start never reported
      // A report sent twice (the agent retried before the answer came) lands as a second commit.
      if (chance(10)) lane.push(lane[lane.length - 1]!);
    }
    if (fate < 25) {
      slot(report("TaskRolledBack", {}));
      slot(report("TaskFailed", { reason: "exit 1", ...(steps.length > 0 ? { step: steps[steps.length - 1] } : {}) }));
      ended = "failed";
    } else if (fate < 40) {
      // Timed out mid-way: the tick's verdict lands first; the host's late reports after it.
      const cut = pick(lane.length) + 1;
      late.push(...lane.splice(cut));
      slot(ev("TaskTimedOut", { taskId, deadline: at(clock) }));
      lane.push(...late.filter(() => chance(50)));
      if (chance(50)) slot(report("TaskSucceeded", { version: "2.0.0" }));
      ended = "timed-out";
    } else if (fate < 45) {
      slot(ev("TaskCancelled", { taskId, reason: "deployment cancelled" }));
      ended = "cancelled";
    } else slot(report("TaskSucceeded", { version: "2.0.0" }));
    // Out of order: two neighbouring reports swapped (a late report overtaking).
    if (lane.length > 3 && chance(15)) {
      const i = 2 + pick(lane.length - 3);
      [lane[i], lane[i + 1]] = [lane[i + 1]!, lane[i]!];
    }
    if (ended !== "succeeded" && chance(20)) slot(report("TaskSucceeded", { version: "2.0.0" })); // refused late verdict that got through
    lanes.push(lane);
    return ended;
  }

  /** All lanes merged, each keeping its order, the choice of lane drawn from the tape. */
  function interleave(ls: Commit[][]): Commit[] {
    const out: Commit[] = [];
    const pos = ls.map(() => 0);
    for (;;) {
      const open = ls.map((l, i) => i).filter((i) => pos[i]! < ls[i]!.length);
      if (open.length === 0) return out;
      const i = open[pick(open.length)]!;
      out.push(ls[i]![pos[i]!++]!);
    }
  }
}

// ---------- the property ----------
const TABLES: Record<string, string> = {
  deployments: `SELECT * FROM deployments WHERE id LIKE $1 ORDER BY id`,
  deployment_batches: `SELECT * FROM deployment_batches WHERE deployment_id LIKE $1 ORDER BY deployment_id, idx`,
  deployment_hosts: `SELECT * FROM deployment_hosts WHERE deployment_id LIKE $1 ORDER BY deployment_id, host_id, attempt`,
  tasks: `SELECT * FROM tasks WHERE task_id LIKE $1 ORDER BY task_id`,
  task_steps: `SELECT * FROM task_steps WHERE task_id LIKE $1 ORDER BY task_id, seq`,
  fleet_hosts: `SELECT * FROM fleet_hosts WHERE host_id LIKE $1 ORDER BY host_id`,
  fleet_components: `SELECT * FROM fleet_components WHERE host_id LIKE $1 ORDER BY host_id, component`,
};
const rowsOf = async (db: Db, prefix: string) => {
  const out: Record<string, unknown[]> = {};
  for (const [table, sql] of Object.entries(TABLES)) out[table] = (await db.query(sql, [`${prefix}-%`])).rows;
  return out;
};

const applyOne = async (tx: Queryable, c: ProjectedCommit) => {
  for (const p of projections) await p.apply(tx, c);
};
const applyRun = async (tx: Queryable, cs: readonly ProjectedCommit[]) => {
  for (const p of projections)
    if (p.applyRun) await p.applyRun(tx, cs);
    else for (const c of cs) await p.apply(tx, c);
};
/** Commit by commit, each in its own transaction; a refused one is left out (dead-lettered). */
const each = async (db: Db, cs: readonly ProjectedCommit[]) => {
  for (const c of cs) await db.transaction((tx) => applyOne(tx, c)).catch(() => undefined);
};

let streams = 0;
describe.each(testDatabases())("a run of commits against commit by commit on %s", (kind, template) => {
  let pair: Promise<[Db, Db]> | undefined;
  /** Two databases for the file (streams keep apart by their ids): one applied commit by commit, one in runs. */
  const databases = () =>
    (pair ??= (async () => {
      const dbs = [await template().fresh(), await template().fresh()] as [Db, Db];
      for (const db of dbs) for (const p of projections) for (const sql of p.migrations) await db.exec(sql);
      return dbs;
    })());

  /** `mustFold`: the stream holds nothing the database refuses, so every run is applied folded (no fallback hides a difference). */
  const property = (draw: fc.Arbitrary<(p: string) => Stream>, mustFold: boolean) =>
    fc.asyncProperty(draw, fc.uniqueArray(fc.integer({ min: 0, max: 400 }), { maxLength: 6 }), async (build, cutsDrawn) => {
      const [one, runs] = await databases();
      const n = ++streams;
      const prefix = `${kind}${n}`;
      const stream = build(prefix);
      // Stream sequences of their own per stream.
      const commits: ProjectedCommit[] = stream.commits.map((c, i) => ({
        seq: n * 100_000 + i + 1,
        subject: c.subject,
        commit: { commitId: `${prefix}#${i}`, events: c.events },
        hostId: c.hostId,
        component: c.component,
      }));
      await each(one, commits);
      const cuts = cutsDrawn.map((c) => c % (commits.length + 1));
      const bounds = [...new Set([0, ...cuts, commits.length])].sort((a, b) => a - b);
      // Before the first cut commit by commit (rows already there when the first run reads), then runs.
      await each(runs, commits.slice(0, bounds[1]));
      for (let i = 1; i + 1 < bounds.length; i++) {
        const run = commits.slice(bounds[i], bounds[i + 1]);
        await runs.transaction((tx) => applyRun(tx, run)).catch(async (err: unknown) => {
          if (mustFold) throw err;
          await each(runs, run);
        });
      }
      expect(await rowsOf(runs, prefix)).toEqual(await rowsOf(one, prefix));
    });

  it("[views] an allocation delivered again opening a run: the run is refused and commit by commit leaves the same rows", async () => {
    // The fold does not read a task whose first event in the run is its allocation (presumed new);
    // here the task has a row already, so the dispatch must move that row, as one by one does.
    const [one, runs] = await databases();
    const n = ++streams;
    const prefix = `${kind}${n}`;
    const taskId = `${prefix}-t`;
    const hostId = `${prefix}-h.example.com`;
    const alloc = (id: string) =>
      mk("TaskAllocated", { taskId, deploymentId: `${prefix}-d`, hostId, component: "c", version: "2.0.0", fromVersion: null, attempt: 1, deadline: at(9), package: PKG }, 1, id);
    const commit = (i: number, events: MoltEvent[]): ProjectedCommit => ({
      seq: n * 100_000 + i + 1,
      subject: subjects.slot(hostId, "c"),
      commit: { commitId: `${prefix}#${i}`, events },
      hostId,
      component: "c",
    });
    const first = commit(0, [alloc(`${prefix}-a1`)]);
    const run = [commit(1, [alloc(`${prefix}-a2`)]), commit(2, [mk("TaskDispatched", { taskId, revision: 1 }, 2, `${prefix}-d1`)])];
    await each(one, [first, ...run]);
    await each(runs, [first]);
    await expect(runs.transaction((tx) => applyRun(tx, run))).rejects.toThrow(/already had a row/);
    await each(runs, run);
    const rows = await rowsOf(runs, prefix);
    expect(rows["tasks"]).toMatchObject([{ task_id: taskId, state: "dispatched" }]);
    expect(rows).toEqual(await rowsOf(one, prefix));
  });

  it("[views] any events in any order: a run leaves the rows its commits leave one by one", async () => {
    await fc.assert(property(aChaosStream, false), { numRuns: RUNS });
  }, 300_000);

  it("[views] rollouts with redelivery, duplicates, late reports, timeouts, retries, several deployments per host: a run leaves the same rows", async () => {
    await fc.assert(property(aRolloutStream, true), { numRuns: RUNS });
  }, 300_000);
});
