import { Id } from "@molt/contracts";
import type { Db } from "@molt/db";
import { HttpError, type App } from "@molt/runtime";
import { z } from "zod";
import { TASK_STATES, type TaskState } from "./projection.js";

interface DeploymentRow {
  id: string;
  component: string;
  version: string;
  state: string;
  requested_by: string;
  hosts_total: number;
  skipped: Array<{ hostId: string; reason: string }>;
  batches_total: number;
  batches_started: number;
  batches_completed: number;
  awaiting_approval: number | null;
  braked: { failed: number; finished: number; threshold: number } | null;
  reason: string | null;
  created_at: Date;
  updated_at: Date;
  completed_at: Date | null;
  counts: Partial<Record<TaskState, number>> | null;
}

interface TaskRow {
  task_id: string;
  host_id: string;
  version: string;
  from_version: string | null;
  attempt: number;
  state: TaskState;
  current_step: string | null;
  error: string | null;
  allocated_at: Date;
  updated_at: Date;
  finished_at: Date | null;
  steps: StepJson[];
}

/** A step as jsonb_build_object renders it: timestamps are PostgreSQL's text. */
interface StepJson {
  seq: number;
  step: string;
  state: "running" | "succeeded" | "failed";
  startedAt: string | null;
  endedAt: string | null;
  durationMs: number | null;
  error: string | null;
  detail: string | null;
}

// Counts follow each host's latest attempt, so a host retried after a failure counts once.
const DEPLOYMENT_SELECT = `
  SELECT d.*, c.counts FROM deployments d
  LEFT JOIN LATERAL (
    SELECT jsonb_object_agg(state, n) AS counts FROM (
      SELECT state, count(*)::int AS n FROM (
        SELECT DISTINCT ON (host_id) state FROM tasks WHERE deployment_id = d.id ORDER BY host_id, attempt DESC
      ) latest GROUP BY state
    ) per_state
  ) c ON true`;

const iso = (d: Date | null) => (d === null ? null : d.toISOString());
const isoText = (t: string | null) => (t === null ? null : new Date(t).toISOString());

function counts(row: DeploymentRow): Record<TaskState, number> {
  return Object.fromEntries(TASK_STATES.map((s) => [s, row.counts?.[s] ?? 0])) as Record<TaskState, number>;
}

function deployment(row: DeploymentRow) {
  return {
    id: row.id,
    component: row.component,
    version: row.version,
    state: row.state,
    requestedBy: row.requested_by,
    createdAt: iso(row.created_at),
    updatedAt: iso(row.updated_at),
    completedAt: iso(row.completed_at),
    hostsTotal: row.hosts_total,
    skipped: row.skipped,
    batches: { total: row.batches_total, started: row.batches_started, completed: row.batches_completed },
    awaitingApproval: row.awaiting_approval,
    braked: row.braked,
    reason: row.reason,
  };
}

export function deploymentRoutes(app: App, deps: { db: Db }): void {
  const { db } = deps;

  app.get(
    "/v1/deployments",
    { schema: { querystring: z.object({ limit: z.coerce.number().int().min(1).max(1000).default(50) }) } },
    async (req) => {
      const r = await db.query<DeploymentRow>(`${DEPLOYMENT_SELECT} ORDER BY d.created_at DESC, d.id DESC LIMIT $1`, [req.query.limit]);
      return { deployments: r.rows.map((row) => ({ deployment: deployment(row), counts: counts(row) })) };
    },
  );

  app.get("/v1/deployments/:id", { schema: { params: z.object({ id: Id }) } }, async (req) => {
    const { id } = req.params;
    const found = await db.query<DeploymentRow>(`${DEPLOYMENT_SELECT} WHERE d.id = $1`, [id]);
    const row = found.rows[0];
    if (row === undefined) throw new HttpError(404, "not_found", `no deployment ${id}`);
    // Steps ride along as JSON so tasks and their steps come from one snapshot.
    const tasks = await db.query<TaskRow>(
      `SELECT t.task_id, t.host_id, t.version, t.from_version, t.attempt, t.state, t.current_step, t.error,
         t.allocated_at, t.updated_at, t.finished_at,
         COALESCE((
           SELECT jsonb_agg(jsonb_build_object(
             'seq', s.seq, 'step', s.step, 'state', s.state, 'startedAt', s.started_at, 'endedAt', s.ended_at,
             'durationMs', s.duration_ms, 'error', s.error, 'detail', s.detail) ORDER BY s.seq)
           FROM task_steps s WHERE s.task_id = t.task_id
         ), '[]'::jsonb) AS steps
       FROM tasks t WHERE t.deployment_id = $1 ORDER BY t.allocated_at, t.host_id, t.attempt`,
      [id],
    );
    return {
      deployment: deployment(row),
      counts: counts(row),
      tasks: tasks.rows.map((t) => ({
        taskId: t.task_id,
        hostId: t.host_id,
        version: t.version,
        fromVersion: t.from_version,
        attempt: t.attempt,
        state: t.state,
        currentStep: t.current_step,
        error: t.error,
        allocatedAt: iso(t.allocated_at),
        updatedAt: iso(t.updated_at),
        finishedAt: iso(t.finished_at),
        steps: t.steps.map((s) => ({ ...s, startedAt: isoText(s.startedAt), endedAt: isoText(s.endedAt) })),
      })),
    };
  });
}
