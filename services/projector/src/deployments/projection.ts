import { TASK_STATES, type MoltEvent, type TaskStateView } from "@molt/contracts";
import type { Queryable } from "@molt/db";
import { unreachable } from "@molt/domain";
import type { Projection } from "../projection/projection.js";

export { TASK_STATES };
export type TaskState = TaskStateView;
const ACTIVE = "('allocated', 'dispatched', 'running')";

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
];

/**
 * deployments, tasks (one row per host per attempt) and task_steps. One statement per event, no
 * reads: every event carries what its rows need (slot events are keyed by task id).
 */
export function deploymentsProjection(): Projection {
  return {
    name: "deployments",
    migrations: MIGRATIONS,
    async apply(tx, c) {
      const events = c.commit.events;
      for (let i = 0; i < events.length; i++) {
        const event = events[i]!;
        // A group commit of outcomes (or assignments) holds hundreds of events that each only set
        // their deployment's updated_at: the last of a run on one deployment leaves the same row.
        const next = events[i + 1];
        if (next && onlyTouches(event) && onlyTouches(next) && event.data.deploymentId === next.data.deploymentId) continue;
        await applyEvent(tx, event);
      }
    },
  };
}

type Touch = Extract<MoltEvent, { type: "HostsAssigned" | "HostOutcomeRecorded" }>;
const onlyTouches = (e: MoltEvent): e is Touch => e.type === "HostsAssigned" || e.type === "HostOutcomeRecorded";

async function applyEvent(tx: Queryable, event: MoltEvent): Promise<void> {
  const at = event.metadata.occurredAt;
  switch (event.type) {
    // ---------- deployments: the same transitions as the deployment decider's evolve ----------
    case "DeploymentRequested": {
      const d = event.data;
      await tx.query(
        `INSERT INTO deployments (id, component, version, state, requested_by, hosts_total, created_at, updated_at)
         VALUES ($1, $2, $3, 'requested', $4, $5, $6::timestamptz, $6::timestamptz)
         ON CONFLICT (id) DO NOTHING`,
        [d.deploymentId, d.component, d.version, event.metadata.actor, d.hosts.length, at],
      );
      return;
    }
    case "PlanPartRecorded": {
      // Parts of one plan arrive in order from part 0; a re-plan (another plan id) starts again at 0.
      const d = event.data;
      await tx.query(
        `UPDATE deployments SET skipped = CASE WHEN $2 = 0 THEN $3::jsonb ELSE skipped || $3::jsonb END, updated_at = $4::timestamptz WHERE id = $1`,
        [d.deploymentId, d.part, JSON.stringify(d.skipped), at],
      );
      return;
    }
    case "DeploymentPlanned": {
      const d = event.data;
      const planned = d.batches.reduce((n, b) => n + b.size, 0);
      await tx.query(
        `UPDATE deployments SET
           planned = true,
           state = CASE WHEN state = 'requested' THEN 'planned' ELSE state END,
           paused_from = CASE WHEN state = 'paused' THEN 'planned' ELSE paused_from END,
           hosts_total = $2, batches_total = $3, updated_at = $4::timestamptz
         WHERE id = $1`,
        [d.deploymentId, planned + d.skipped, d.batches.length, at],
      );
      return;
    }
    case "HostsAssigned":
    case "HostOutcomeRecorded":
      // The tasks table holds each host's task; these only feed the roll engine's counters.
      await tx.query(`UPDATE deployments SET updated_at = $2::timestamptz WHERE id = $1`, [event.data.deploymentId, at]);
      return;
    case "DeploymentRetried":
      await tx.query(
        `UPDATE deployments SET state = CASE WHEN state IN ('completed', 'failed') THEN 'running' ELSE state END,
           braked = NULL, completed_at = NULL, batches_total = batches_total + 1, updated_at = $2::timestamptz
         WHERE id = $1`,
        [event.data.deploymentId, at],
      );
      return;
    case "BatchStarted":
      await tx.query(
        `UPDATE deployments SET
           state = CASE WHEN state = 'planned' THEN 'running' ELSE state END,
           paused_from = CASE WHEN state = 'paused' THEN 'running' ELSE paused_from END,
           batches_started = batches_started + 1, updated_at = $2::timestamptz
         WHERE id = $1`,
        [event.data.deploymentId, at],
      );
      return;
    case "BatchCompleted":
      await tx.query(`UPDATE deployments SET batches_completed = batches_completed + 1, updated_at = $2::timestamptz WHERE id = $1`, [
        event.data.deploymentId,
        at,
      ]);
      return;
    case "DeploymentPaused":
      await tx.query(
        `UPDATE deployments SET paused_from = state, state = 'paused', reason = $2, updated_at = $3::timestamptz
         WHERE id = $1 AND state IN ('requested', 'planned', 'running')`,
        [event.data.deploymentId, event.data.reason ?? null, at],
      );
      return;
    case "DeploymentResumed":
      await tx.query(
        `UPDATE deployments SET
           state = COALESCE(paused_from, CASE WHEN planned THEN 'planned' ELSE 'requested' END),
           paused_from = NULL, reason = NULL, updated_at = $2::timestamptz
         WHERE id = $1 AND state = 'paused'`,
        [event.data.deploymentId, at],
      );
      return;
    case "DeploymentBraked": {
      const { deploymentId, failed, finished, threshold } = event.data;
      await tx.query(`UPDATE deployments SET braked = $2::jsonb, updated_at = $3::timestamptz WHERE id = $1`, [
        deploymentId,
        JSON.stringify({ failed, finished, threshold }),
        at,
      ]);
      return;
    }
    case "CanaryAwaitingApproval":
      await tx.query(`UPDATE deployments SET awaiting_approval = $2, updated_at = $3::timestamptz WHERE id = $1`, [
        event.data.deploymentId,
        event.data.index,
        at,
      ]);
      return;
    case "CanaryApproved":
      await tx.query(`UPDATE deployments SET awaiting_approval = NULL, updated_at = $2::timestamptz WHERE id = $1`, [event.data.deploymentId, at]);
      return;
    case "DeploymentCancelled":
      return finishDeployment(tx, event.data.deploymentId, "cancelled", event.data.reason ?? null, at);
    case "DeploymentCompleted":
      return finishDeployment(tx, event.data.deploymentId, "completed", null, at);
    case "DeploymentFailed":
      return finishDeployment(tx, event.data.deploymentId, "failed", event.data.reason, at);

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
      // Closes the open row of this step; a step whose start was never reported gets a row of its own.
      await tx.query(
        `WITH closed AS (
           UPDATE task_steps SET state = $3, ended_at = $5::timestamptz, duration_ms = $6::float8, error = $7, detail = $8
           WHERE task_id = $1 AND step = $2 AND state = 'running'
           RETURNING 1
         ), added AS (
           INSERT INTO task_steps (task_id, seq, step, state, started_at, ended_at, duration_ms, error, detail)
           SELECT $1, $4, $2, $3, $5::timestamptz - make_interval(secs => $6::float8 / 1000), $5::timestamptz, $6::float8, $7, $8
           WHERE NOT EXISTS (SELECT 1 FROM closed)
           ON CONFLICT DO NOTHING
         )
         UPDATE tasks SET current_step = $2, updated_at = $9::timestamptz WHERE task_id = $1`,
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

async function finishDeployment(tx: Queryable, id: string, state: string, reason: string | null, at: string): Promise<void> {
  await tx.query(
    `UPDATE deployments SET state = $2, paused_from = NULL, reason = COALESCE($3, reason), updated_at = $4::timestamptz, completed_at = $4::timestamptz
     WHERE id = $1`,
    [id, state, reason, at],
  );
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
