import { HostOutcome, TASK_STATES, type MoltEvent, type TaskStateView } from "@molt/contracts";
import type { Queryable } from "@molt/db";
import { evolveDeployment, initialDeploymentState, unreachable, type DeploymentEventBody, type DeploymentState, type DeploymentStatus } from "@molt/domain";
import type { ProjectedCommit, Projection } from "../projection/projection.js";
import { derivedStart, endsPair, isTaskEvent, refusedByColumns, TaskRun } from "./task-run.js";

export { TASK_STATES };
export type TaskState = TaskStateView;
const ACTIVE = "('allocated', 'dispatched', 'running')";
/** deployment_batches' column per host outcome: `timed-out` is `timed_out`. */
export const outcomeColumn = (o: HostOutcome) => o.replace("-", "_");
const OUTCOME_COLUMNS = HostOutcome.options.map(outcomeColumn);

/** Append-only: add statements, never edit one that has shipped. */
const MIGRATIONS = [
  `CREATE TABLE deployments (
    id text PRIMARY KEY,
    component text NOT NULL,
    version text NOT NULL,
    -- the deployment decider's status: requested|planned|running|paused|completed|failed|cancelled
    state text NOT NULL,
    paused_from text,
    planned boolean NOT NULL DEFAULT false,
    requested_by text NOT NULL,
    hosts_total integer NOT NULL,
    skipped jsonb NOT NULL DEFAULT '[]',
    batches_total integer NOT NULL DEFAULT 0,
    batches_started integer NOT NULL DEFAULT 0,
    batches_completed integer NOT NULL DEFAULT 0,
    awaiting_approval integer,
    braked jsonb,
    reason text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    completed_at timestamptz
  );
  CREATE INDEX deployments_newest ON deployments (created_at DESC, id DESC);
  CREATE TABLE tasks (
    task_id text PRIMARY KEY,
    deployment_id text NOT NULL,
    host_id text NOT NULL,
    component text NOT NULL,
    version text NOT NULL,
    from_version text,
    attempt integer NOT NULL,
    state text NOT NULL CHECK (state IN ('allocated', 'dispatched', 'running', 'succeeded', 'failed', 'rejected', 'timed-out', 'cancelled')),
    current_step text,
    error text,
    deadline timestamptz,
    allocated_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    finished_at timestamptz
  );
  CREATE INDEX tasks_by_deployment ON tasks (deployment_id, host_id, attempt DESC);
  CREATE TABLE task_steps (
    task_id text NOT NULL,
    -- the journal seq of the step's start (of its end when no start was reported)
    seq integer NOT NULL,
    step text NOT NULL,
    state text NOT NULL CHECK (state IN ('running', 'succeeded', 'failed')),
    started_at timestamptz,
    ended_at timestamptz,
    duration_ms double precision,
    error text,
    detail text,
    PRIMARY KEY (task_id, seq)
  )`,
  // The plan being recorded (parts before the seal), so a replayed part or another replica's plan
  // changes the skipped hosts exactly as the decider's evolve does.
  `ALTER TABLE deployments ADD COLUMN plan_id text;
  ALTER TABLE deployments ADD COLUMN plan_parts jsonb NOT NULL DEFAULT '[]'`,
  // The end of a failed step's output as the client sent it; the task keeps its latest failed step's.
  `ALTER TABLE task_steps ADD COLUMN log_tail text;
  ALTER TABLE tasks ADD COLUMN log_tail text`,
  // Per-batch progress: each batch (the plan's and every retry's) with its hosts' outcomes, and
  // which batch each host's attempt ran in (HostOutcomeRecorded names the host, not the batch).
  // Deployments projected before this migration get their batches from a rebuild.
  `CREATE TABLE deployment_batches (
    deployment_id text NOT NULL,
    idx integer NOT NULL,
    kind text NOT NULL,
    size integer NOT NULL,
    assigned integer NOT NULL DEFAULT 0,
    -- hosts per outcome (HostOutcome; timed-out is timed_out)
    succeeded integer NOT NULL DEFAULT 0,
    failed integer NOT NULL DEFAULT 0,
    rejected integer NOT NULL DEFAULT 0,
    timed_out integer NOT NULL DEFAULT 0,
    cancelled integer NOT NULL DEFAULT 0,
    busy integer NOT NULL DEFAULT 0,
    skipped integer NOT NULL DEFAULT 0,
    started_at timestamptz,
    finished_at timestamptz,
    PRIMARY KEY (deployment_id, idx)
  );
  CREATE TABLE deployment_hosts (
    deployment_id text NOT NULL,
    host_id text NOT NULL,
    attempt integer NOT NULL,
    batch integer NOT NULL,
    outcome text,
    PRIMARY KEY (deployment_id, host_id, attempt)
  )`,
  // The index of a host's deployments (GET /v1/hosts/:hostId/tasks, newest first): the timeline
  // itself is read from the event store.
  `CREATE INDEX tasks_by_host ON tasks (host_id, allocated_at DESC, task_id DESC)`,
];

/**
 * deployments (with their batches), tasks (one row per host per attempt) and task_steps. Commit by
 * commit: one statement per event (a run of assignments or outcomes is one), no reads (every event
 * carries what its rows need: slot events are keyed by task id). A run of commits: its task and
 * step rows read once, folded in memory with the same guards and written with one statement per
 * table (task-run.ts); deployment rows as commit by commit. The two leave the same rows (a
 * `[views]` property test on PGlite and PostgreSQL).
 */
export function deploymentsProjection(): Projection {
  return {
    name: "deployments",
    migrations: MIGRATIONS,
    apply: (tx, c) =>
      walk(c.commit.events, {
        pair: (start, end) => applyStepPair(tx, start, end),
        touches: (run) => applyTouches(tx, run),
        event: (e) => applyEvent(tx, e),
      }),
    applyRun: (tx, commits) => applyRun(tx, commits),
  };
}

/** A run holding a value its columns refuse goes commit by commit (see refusedByColumns). */
export class RunRefusedError extends Error {
  constructor(seq: number) {
    super(`commit ${seq} holds a value past an integer column: applied commit by commit`);
  }
}

async function applyRun(tx: Queryable, commits: readonly ProjectedCommit[]): Promise<void> {
  for (const c of commits) if (c.commit.events.some(refusedByColumns)) throw new RunRefusedError(c.seq);
  const run = await TaskRun.load(tx, commits);
  for (const c of commits)
    await walk(c.commit.events, {
      pair: (start, end) => run.pair(start, end),
      touches: (touches) => applyTouches(tx, touches),
      event: (e) => (isTaskEvent(e) ? run.event(e) : applyEvent(tx, e)),
    });
  await run.write(tx);
}


/**
 * A commit's events as the rows take them: a run of touches on one deployment is its last (each
 * only sets updated_at), a step's start followed by its end is one pair (one complete row).
 */
async function walk(
  events: readonly MoltEvent[],
  on: {
    pair: (start: Extract<MoltEvent, { type: "TaskStepStarted" }>, end: StepEnd) => unknown;
    touches: (run: Touch[]) => unknown;
    event: (e: MoltEvent) => unknown;
  },
): Promise<void> {
  for (let i = 0; i < events.length; i++) {
    const event = events[i]!;
    // A group commit of outcomes (or assignments) holds hundreds of events: a run of one type is
    // one statement (each moves its batch's counts, so none may be skipped).
    if (onlyTouches(event)) {
      let end = i + 1;
      while (end < events.length && events[end]!.type === event.type) end++;
      await on.touches(events.slice(i, end) as Touch[]);
      i = end - 1;
      continue;
    }
    const next = events[i + 1];
    // A step's start and end reported together (the usual report) make one complete row.
    if (event.type === "TaskStepStarted" && endsPair(event, next)) {
      await on.pair(event, next);
      i++;
      continue;
    }
    await on.event(event);
  }
}

type Touch = Extract<MoltEvent, { type: "HostsAssigned" | "HostOutcomeRecorded" }>;
type StepEnd = Extract<MoltEvent, { type: "TaskStepSucceeded" | "TaskStepFailed" }>;

/**
 * TaskStepStarted then its end, in one commit: the rows the two leave one by one, in one
 * statement. The slot decider refuses a step start while any step is open, so the end closes
 * exactly the row the start opened.
 */
async function applyStepPair(tx: Queryable, start: Extract<MoltEvent, { type: "TaskStepStarted" }>, end: StepEnd): Promise<void> {
  const failed = end.type === "TaskStepFailed";
  await tx.query(
    `WITH step AS (
       INSERT INTO task_steps (task_id, seq, step, state, started_at, ended_at, duration_ms, error, detail, log_tail)
       VALUES ($1, $2, $3, $4, $5::timestamptz, $6::timestamptz, $7::float8, $8, $9, $10)
       ON CONFLICT DO NOTHING
     )
     UPDATE tasks SET current_step = $3, updated_at = $11::timestamptz, log_tail = COALESCE($10, log_tail) WHERE task_id = $1`,
    [
      start.data.taskId,
      start.data.seq,
      start.data.step,
      failed ? "failed" : "succeeded",
      start.data.at,
      end.data.at,
      end.data.durationMs,
      end.type === "TaskStepFailed" ? end.data.error : null,
      end.type === "TaskStepSucceeded" ? (end.data.detail ?? null) : null,
      end.type === "TaskStepFailed" ? (end.data.logTail ?? null) : null,
      end.metadata.occurredAt,
    ],
  );
}
const onlyTouches = (e: MoltEvent): e is Touch => e.type === "HostsAssigned" || e.type === "HostOutcomeRecorded";

async function applyEvent(tx: Queryable, event: MoltEvent): Promise<void> {
  const at = event.metadata.occurredAt;
  switch (event.type) {
    // ---------- deployments: state transitions are the deployment decider's own evolve ----------
    case "DeploymentRequested":
    case "PlanPartRecorded":
    case "DeploymentPlanned":
    case "DeploymentRetried":
    case "BatchStarted":
    case "BatchCompleted":
    case "DeploymentPaused":
    case "DeploymentResumed":
    case "DeploymentBraked":
    case "CanaryAwaitingApproval":
    case "CanaryApproved":
    case "DeploymentCancelled":
    case "DeploymentCompleted":
    case "DeploymentFailed":
      return evolveRow(tx, event);
    case "HostsAssigned":
    case "HostOutcomeRecorded":
      return applyTouches(tx, [event]);

    // ---------- tasks and their steps ----------
    case "TaskAllocated": {
      const d = event.data;
      await tx.query(
        `INSERT INTO tasks (task_id, deployment_id, host_id, component, version, from_version, attempt, state, deadline, allocated_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'allocated', $8::timestamptz, $9::timestamptz, $9::timestamptz)
         ON CONFLICT (task_id) DO NOTHING`,
        [d.taskId, d.deploymentId, d.hostId, d.component, d.version, d.fromVersion, d.attempt, d.deadline, at],
      );
      return;
    }
    case "TaskDispatched":
      // A redelivered dispatch after the host already reported must not move the task back.
      await tx.query(`UPDATE tasks SET state = 'dispatched', updated_at = $2::timestamptz WHERE task_id = $1 AND state = 'allocated'`, [
        event.data.taskId,
        at,
      ]);
      return;
    case "TaskAccepted":
      await tx.query(
        `UPDATE tasks SET state = 'running', updated_at = $2::timestamptz WHERE task_id = $1 AND state IN ('allocated', 'dispatched')`,
        [event.data.taskId, at],
      );
      return;
    case "TaskStepStarted": {
      const d = event.data;
      await tx.query(
        `WITH step AS (
           INSERT INTO task_steps (task_id, seq, step, state, started_at) VALUES ($1, $2, $3, 'running', $4::timestamptz)
           ON CONFLICT DO NOTHING
         )
         UPDATE tasks SET current_step = $3, updated_at = $5::timestamptz WHERE task_id = $1`,
        [d.taskId, d.seq, d.step, d.at, at],
      );
      return;
    }
    case "TaskStepSucceeded":
    case "TaskStepFailed": {
      const d = event.data;
      const failed = event.type === "TaskStepFailed";
      // Closes the open row of this step; a step whose start was never reported gets a row of its
      // own. Its start is computed only for a row inserted (its key free), as a folded run does.
      await tx.query(
        `WITH closed AS (
           UPDATE task_steps SET state = $3, ended_at = $5::timestamptz, duration_ms = $6::float8, error = $7, detail = $8, log_tail = $10
           WHERE task_id = $1 AND step = $2 AND state = 'running'
           RETURNING 1
         ), added AS (
           INSERT INTO task_steps (task_id, seq, step, state, started_at, ended_at, duration_ms, error, detail, log_tail)
           SELECT $1, $4, $2, $3, ${derivedStart("$5::timestamptz", "$6::float8")}, $5::timestamptz, $6::float8, $7, $8, $10
           WHERE NOT EXISTS (SELECT 1 FROM closed) AND NOT EXISTS (SELECT 1 FROM task_steps WHERE task_id = $1 AND seq = $4)
           ON CONFLICT DO NOTHING
         )
         UPDATE tasks SET current_step = $2, updated_at = $9::timestamptz, log_tail = COALESCE($10, log_tail) WHERE task_id = $1`,
        [
          d.taskId,
          d.step,
          failed ? "failed" : "succeeded",
          d.seq,
          d.at,
          d.durationMs,
          event.type === "TaskStepFailed" ? event.data.error : null,
          event.type === "TaskStepSucceeded" ? (event.data.detail ?? null) : null,
          at,
          event.type === "TaskStepFailed" ? (event.data.logTail ?? null) : null,
        ],
      );
      return;
    }
    case "TaskRolledBack":
      await tx.query(`UPDATE tasks SET updated_at = $2::timestamptz WHERE task_id = $1`, [event.data.taskId, at]);
      return;
    case "TaskSucceeded":
      return finishTask(tx, { taskId: event.data.taskId, state: "succeeded", error: null, finishedAt: event.data.at, at });
    case "TaskFailed":
      return finishTask(tx, {
        taskId: event.data.taskId,
        state: "failed",
        error: event.data.reason,
        finishedAt: event.data.at,
        at,
        step: event.data.step,
      });
    case "TaskRejected":
      return finishTask(tx, { taskId: event.data.taskId, state: "rejected", error: event.data.reason, finishedAt: event.data.at, at });
    case "TaskTimedOut":
      return finishTask(tx, {
        taskId: event.data.taskId,
        state: "timed-out",
        error: `timed out: no result by the deadline ${event.data.deadline}`,
        finishedAt: at,
        at,
      });
    case "TaskCancelled":
      return finishTask(tx, { taskId: event.data.taskId, state: "cancelled", error: event.data.reason, finishedAt: at, at });

    // Not projected here (yet): the fleet and package views will take these.
    case "HostQuarantined":
    case "HostQuarantineCleared":
    case "HostRegistered":
    case "HostLabelsChanged":
    case "ComponentVersionObserved":
    case "PackagePublished":
    case "PackageYanked":
    case "PackageMetadataSigned":
      return;
    default:
      return unreachable(event);
  }
}

async function finishTask(
  tx: Queryable,
  f: { taskId: string; state: TaskState; error: string | null; finishedAt: string; at: string; step?: string | undefined },
): Promise<void> {
  // Only an active task finishes: a late duplicate never rewrites an outcome.
  await tx.query(
    `UPDATE tasks SET state = $2, error = $3, finished_at = $4::timestamptz, updated_at = $5::timestamptz,
       current_step = COALESCE($6, current_step)
     WHERE task_id = $1 AND state IN ${ACTIVE}`,
    [f.taskId, f.state, f.error, f.finishedAt, f.at, f.step ?? null],
  );
}

/** The columns of a deployment row that `evolve` decides, and the counters kept beside them. */
interface DeploymentRow {
  state: Exclude<DeploymentStatus, "none">;
  paused_from: DeploymentState["pausedFrom"];
  planned: boolean;
  skipped: DeploymentState["skipped"];
  plan_id: string | null;
  plan_parts: number[];
  awaiting_approval: number | null;
  braked: DeploymentState["braked"];
  reason: string | null;
  hosts_total: number;
  batches_total: number;
  batches_started: number;
  batches_completed: number;
  completed_at: string | null;
}

type DeploymentLevel = Extract<MoltEvent, DeploymentEventBody> & { type: Exclude<DeploymentEventBody["type"], Touch["type"]> };

/**
 * The deployment's row as the decider's state (only what the view keeps: status, pause, plan
 * parts and skips, approval, brake), folded with the domain's `evolveDeployment`, written back:
 * the view's state machine is the decider's, so the two cannot differ. Counters and times stay
 * the projection's own.
 */
async function evolveRow(tx: Queryable, event: DeploymentLevel): Promise<void> {
  const id = event.data.deploymentId;
  const at = event.metadata.occurredAt;
  if (event.type === "DeploymentRequested") {
    const next = evolveDeployment(initialDeploymentState(), event);
    await tx.query(
      `INSERT INTO deployments (id, component, version, state, requested_by, hosts_total, created_at, updated_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7::timestamptz, $7::timestamptz)
       ON CONFLICT (id) DO NOTHING`,
      [id, event.data.component, event.data.version, next.status, event.metadata.actor, event.data.hosts.length, at],
    );
    return;
  }
  const found = await tx.query<DeploymentRow>(
    `SELECT state, paused_from, planned, skipped, plan_id, plan_parts, awaiting_approval, braked, reason,
       hosts_total, batches_total, batches_started, batches_completed, completed_at::text
     FROM deployments WHERE id = $1`,
    [id],
  );
  const row = found.rows[0];
  // The decider refuses every command before the request: nothing to fold into.
  if (row === undefined) return;
  const before: DeploymentState = {
    ...initialDeploymentState(),
    status: row.state,
    deploymentId: id,
    planned: row.planned,
    pausedFrom: row.paused_from,
    skipped: row.skipped,
    pendingPlan: row.plan_id === null ? null : { planId: row.plan_id, parts: row.plan_parts, batches: new Map() },
    awaitingApproval: row.awaiting_approval,
    braked: row.braked,
  };
  const next = evolveDeployment(before, event);
  const counted = { ...row, ...countersAfter(row, event, at, next.status !== before.status) };
  await tx.query(
    `UPDATE deployments SET state = $2, paused_from = $3, planned = $4, skipped = $5::jsonb, plan_id = $6, plan_parts = $7::jsonb,
       awaiting_approval = $8, braked = $9::jsonb, reason = $10, hosts_total = $11, batches_total = $12, batches_started = $13,
       batches_completed = $14, completed_at = $15::timestamptz, updated_at = $16::timestamptz
     WHERE id = $1`,
    [
      id,
      next.status,
      next.pausedFrom,
      next.planned,
      JSON.stringify(next.skipped),
      next.pendingPlan?.planId ?? null,
      JSON.stringify(next.pendingPlan?.parts ?? []),
      next.awaitingApproval,
      next.braked === null ? null : JSON.stringify(next.braked),
      counted.reason,
      counted.hosts_total,
      counted.batches_total,
      counted.batches_started,
      counted.batches_completed,
      counted.completed_at,
      at,
    ],
  );
  await evolveBatches(tx, event, at);
}

/**
 * A run of HostsAssigned (or of HostOutcomeRecorded) in one statement: the hosts' attempts and
 * batches recorded (an outcome counts once, for the attempt assigned, as the decider counts it),
 * their batches' counters moved, each deployment's updated_at set to its last event's time.
 */
async function applyTouches(tx: Queryable, run: Touch[]): Promise<void> {
  const latest = new Map<string, string>();
  for (const e of run) latest.set(e.data.deploymentId, e.metadata.occurredAt);
  const touched = `UPDATE deployments d SET updated_at = u.at FROM unnest($1::text[], $2::timestamptz[]) AS u(id, at) WHERE d.id = u.id`;
  const touchedParams = [[...latest.keys()], [...latest.values()]];
  if (run[0]!.type === "HostsAssigned") {
    const rows = (run as Array<Extract<Touch, { type: "HostsAssigned" }>>).flatMap((e) => e.data.hosts.map((h) => [e.data.deploymentId, h, e.data.attempt, e.data.batch] as const));
    await tx.query(
      `WITH added AS (
         INSERT INTO deployment_hosts (deployment_id, host_id, attempt, batch)
         SELECT * FROM unnest($3::text[], $4::text[], $5::int[], $6::int[])
         ON CONFLICT DO NOTHING
         RETURNING deployment_id, batch
       ), counted AS (
         UPDATE deployment_batches b SET assigned = b.assigned + n.n
         FROM (SELECT deployment_id, batch, count(*)::int AS n FROM added GROUP BY deployment_id, batch) n
         WHERE b.deployment_id = n.deployment_id AND b.idx = n.batch
       )
       ${touched}`,
      [...touchedParams, ...columns(rows, 4)],
    );
    return;
  }
  const rows = (run as Array<Extract<Touch, { type: "HostOutcomeRecorded" }>>).map((e) => [e.data.deploymentId, e.data.hostId, e.data.attempt, e.data.outcome] as const);
  await tx.query(
    `WITH recorded AS (
       UPDATE deployment_hosts h SET outcome = o.outcome
       FROM (SELECT DISTINCT ON (deployment_id, host_id, attempt) * FROM unnest($3::text[], $4::text[], $5::int[], $6::text[]) AS o(deployment_id, host_id, attempt, outcome)) o
       WHERE h.deployment_id = o.deployment_id AND h.host_id = o.host_id AND h.attempt = o.attempt AND h.outcome IS NULL
       RETURNING h.deployment_id, h.batch, o.outcome
     ), counted AS (
       UPDATE deployment_batches b SET ${OUTCOME_COLUMNS.map((c) => `${c} = b.${c} + n.${c}`).join(", ")}
       FROM (
         SELECT deployment_id, batch, ${HostOutcome.options.map((o) => `count(*) FILTER (WHERE outcome = '${o}')::int AS ${outcomeColumn(o)}`).join(", ")}
         FROM recorded GROUP BY deployment_id, batch
       ) n
       WHERE b.deployment_id = n.deployment_id AND b.idx = n.batch
     )
     ${touched}`,
    [...touchedParams, ...columns(rows, 4)],
  );
}

/** Rows as one array per column, for unnest. */
function columns(rows: ReadonlyArray<ReadonlyArray<unknown>>, width: number): unknown[][] {
  return Array.from({ length: width }, (_, c) => rows.map((r) => r[c]));
}

/** The batch rows a deployment-level event adds or moves (one statement; none for the rest). */
async function evolveBatches(tx: Queryable, event: DeploymentLevel, at: string): Promise<void> {
  const id = event.data.deploymentId;
  switch (event.type) {
    case "DeploymentPlanned": {
      // The seal names the batches; a plan sealed again (as evolve allows) replaces them.
      const b = event.data.batches;
      await tx.query(
        `WITH gone AS (DELETE FROM deployment_batches WHERE deployment_id = $1 AND idx <> ALL($2::int[]))
         INSERT INTO deployment_batches (deployment_id, idx, kind, size)
         SELECT $1, * FROM unnest($2::int[], $3::text[], $4::int[])
         ON CONFLICT (deployment_id, idx) DO UPDATE SET kind = excluded.kind, size = excluded.size`,
        [id, b.map((x) => x.index), b.map((x) => x.kind), b.map((x) => x.size)],
      );
      return;
    }
    case "DeploymentRetried":
      await tx.query(
        `INSERT INTO deployment_batches (deployment_id, idx, kind, size) VALUES ($1, $2, 'retry', $3) ON CONFLICT (deployment_id, idx) DO NOTHING`,
        [id, event.data.index, event.data.hosts],
      );
      return;
    case "BatchStarted":
      await tx.query(`UPDATE deployment_batches SET started_at = COALESCE(started_at, $3::timestamptz) WHERE deployment_id = $1 AND idx = $2`, [
        id,
        event.data.index,
        at,
      ]);
      return;
    case "BatchCompleted":
      await tx.query(`UPDATE deployment_batches SET finished_at = COALESCE(finished_at, $3::timestamptz) WHERE deployment_id = $1 AND idx = $2`, [
        id,
        event.data.index,
        event.data.at ?? at,
      ]);
      return;
    default:
      return;
  }
}

/** What the view counts beside the state: plan sizes, batches, the reason shown, when it ended. */
function countersAfter(row: DeploymentRow, event: DeploymentLevel, at: string, moved: boolean): Partial<DeploymentRow> {
  switch (event.type) {
    case "DeploymentPlanned":
      return { hosts_total: event.data.batches.reduce((n, b) => n + b.size, 0) + event.data.skipped, batches_total: event.data.batches.length };
    case "DeploymentRetried":
      return { batches_total: row.batches_total + 1, completed_at: null };
    case "BatchStarted":
      return { batches_started: row.batches_started + 1 };
    case "BatchCompleted":
      return { batches_completed: row.batches_completed + 1 };
    case "DeploymentPaused":
      return moved ? { reason: event.data.reason ?? null } : {};
    case "DeploymentResumed":
      return moved ? { reason: null } : {};
    case "DeploymentCancelled":
      return { reason: event.data.reason ?? row.reason, completed_at: at };
    case "DeploymentCompleted":
      return { completed_at: at };
    case "DeploymentFailed":
      return { reason: event.data.reason, completed_at: at };
    default:
      return {};
  }
}
