import {
  ComponentName,
  HostId,
  HostOutcome,
  Id,
  TaskStateView,
  type BatchProgress,
  type DeploymentList,
  type DeploymentView,
  type TaskList,
  type TaskView,
} from "@molt/contracts";
import type { Db } from "@molt/db";
import { HttpError, type App } from "@molt/runtime";
import { z } from "zod";
import { outcomeColumn, TASK_STATES, type TaskState } from "./projection.js";

export interface DeploymentRow {
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
  batch_items: BatchJson[] | null;
}

/** A batch as jsonb_build_object renders it: timestamps are PostgreSQL's text. */
type BatchJson = Omit<BatchProgress, "state" | "finished" | "outcomes"> & { outcomes: Record<HostOutcome, number> };

export interface TaskRow {
  task_id: string;
  deployment_id: string;
  component: string;
  host_id: string;
  version: string;
  from_version: string | null;
  attempt: number;
  state: TaskState;
  current_step: string | null;
  error: string | null;
  log_tail: string | null;
  allocated_at: Date;
  updated_at: Date;
  finished_at: Date | null;
  batch: number | null;
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
  logTail: string | null;
}

// Counts follow each host's latest attempt, so a host retried after a failure counts once.
// Batches ride along as JSON, so a deployment and its batches come from one snapshot.
export const DEPLOYMENT_SELECT = `
  SELECT d.*, c.counts, (
    SELECT jsonb_agg(jsonb_build_object(
      'index', b.idx, 'kind', b.kind, 'size', b.size, 'assigned', b.assigned, 'startedAt', b.started_at, 'finishedAt', b.finished_at,
      'outcomes', jsonb_build_object(${HostOutcome.options.map((o) => `'${o}', b.${outcomeColumn(o)}`).join(", ")})) ORDER BY b.idx)
    FROM deployment_batches b WHERE b.deployment_id = d.id
  ) AS batch_items
  FROM deployments d
  LEFT JOIN LATERAL (
    SELECT jsonb_object_agg(state, n) AS counts FROM (
      SELECT state, count(*)::int AS n FROM (
        SELECT DISTINCT ON (host_id) state FROM tasks WHERE deployment_id = d.id ORDER BY host_id, attempt DESC
      ) latest GROUP BY state
    ) per_state
  ) c ON true`;

const iso = (d: Date | null) => (d === null ? null : d.toISOString());
const isoOf = (d: Date) => d.toISOString();
const isoText = (t: string | null) => (t === null ? null : new Date(t).toISOString());

export function counts(row: DeploymentRow): Record<TaskState, number> {
  return Object.fromEntries(TASK_STATES.map((s) => [s, row.counts?.[s] ?? 0])) as Record<TaskState, number>;
}

export function deployment(row: DeploymentRow) {
  return {
    id: row.id,
    component: row.component,
    version: row.version,
    state: row.state,
    requestedBy: row.requested_by,
    createdAt: isoOf(row.created_at),
    updatedAt: isoOf(row.updated_at),
    completedAt: iso(row.completed_at),
    hostsTotal: row.hosts_total,
    skipped: row.skipped,
    batches: {
      total: row.batches_total,
      started: row.batches_started,
      completed: row.batches_completed,
      items: (row.batch_items ?? []).map(batchProgress),
    },
    awaitingApproval: row.awaiting_approval,
    braked: row.braked,
    reason: row.reason,
  };
}

function batchProgress(b: BatchJson): BatchProgress {
  const finished = Object.values(b.outcomes).reduce((n, k) => n + k, 0);
  const state = b.finishedAt !== null ? "done" : b.startedAt !== null ? "running" : "pending";
  return { ...b, state, finished, startedAt: isoText(b.startedAt), finishedAt: isoText(b.finishedAt) };
}

// Steps ride along as JSON so a task and its steps come from one snapshot.
export const TASK_SELECT = `
  SELECT t.task_id, t.deployment_id, t.component, t.host_id, t.version, t.from_version, t.attempt, t.state, t.current_step,
    t.error, t.log_tail, t.allocated_at, t.updated_at, t.finished_at,
    (SELECT h.batch FROM deployment_hosts h WHERE h.deployment_id = t.deployment_id AND h.host_id = t.host_id AND h.attempt = t.attempt) AS batch,
    COALESCE((
      SELECT jsonb_agg(jsonb_build_object(
        'seq', s.seq, 'step', s.step, 'state', s.state, 'startedAt', s.started_at, 'endedAt', s.ended_at,
        'durationMs', s.duration_ms, 'error', s.error, 'detail', s.detail, 'logTail', s.log_tail) ORDER BY s.seq)
      FROM task_steps s WHERE s.task_id = t.task_id
    ), '[]'::jsonb) AS steps
  FROM tasks t`;

export function task(t: TaskRow): TaskView {
  return {
    taskId: t.task_id,
    deploymentId: t.deployment_id,
    component: t.component,
    hostId: t.host_id,
    version: t.version,
    fromVersion: t.from_version,
    attempt: t.attempt,
    state: t.state,
    currentStep: t.current_step,
    error: t.error,
    logTail: t.log_tail,
    batch: t.batch,
    allocatedAt: isoOf(t.allocated_at),
    updatedAt: isoOf(t.updated_at),
    finishedAt: iso(t.finished_at),
    steps: t.steps.map((s) => ({ ...s, startedAt: isoText(s.startedAt), endedAt: isoText(s.endedAt) })),
  };
}

/** Opaque keyset cursors: the sort key of the last row of a page. */
const encodeCursor = (parts: Array<string | number>) => Buffer.from(JSON.stringify(parts)).toString("base64url");
function decodeCursor<T extends z.ZodType>(cursor: string, shape: T): z.infer<T> {
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"));
  } catch {
    throw new HttpError(400, "validation", "cursor is not one this API gave out");
  }
  const parsed = shape.safeParse(raw);
  if (!parsed.success) throw new HttpError(400, "validation", "cursor is not one this API gave out");
  return parsed.data;
}

const DeploymentQuery = z.object({
  state: z.enum(["requested", "planned", "running", "paused", "completed", "failed", "cancelled"]).optional(),
  component: ComponentName.optional(),
  cursor: z.string().max(512).optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(50),
});

const TaskQuery = z.object({
  state: TaskStateView.optional(),
  /** Tasks whose current (last started) step is this one: for a failed task, the step it failed at. */
  step: z.string().regex(/^[a-z-]{1,32}$/, "step must be a step name such as download").optional(),
  host: HostId.optional(),
  /** Every attempt, not only each host's latest. */
  allAttempts: z.enum(["true", "false"]).default("false"),
  cursor: z.string().max(512).optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});

/** A host's tasks across deployments: the deployment task query's state, cursor and limit, by component. */
const HostTaskQuery = TaskQuery.pick({ state: true, cursor: true, limit: true }).extend({ component: ComponentName.optional() });

export function deploymentRoutes(app: App, deps: { db: Db }): void {
  const { db } = deps;

  app.get("/v1/deployments", { schema: { querystring: DeploymentQuery } }, async (req): Promise<DeploymentList> => {
    const q = req.query;
    const where: string[] = [];
    const params: unknown[] = [];
    const param = (v: unknown) => `$${params.push(v)}`;
    if (q.state !== undefined) where.push(`d.state = ${param(q.state)}`);
    if (q.component !== undefined) where.push(`d.component = ${param(q.component)}`);
    if (q.cursor !== undefined) {
      const [createdAt, id] = decodeCursor(q.cursor, z.tuple([z.iso.datetime(), Id]));
      where.push(`(d.created_at, d.id) < (${param(createdAt)}::timestamptz, ${param(id)})`);
    }
    const r = await db.query<DeploymentRow>(
      `${DEPLOYMENT_SELECT} ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY d.created_at DESC, d.id DESC LIMIT ${param(q.limit + 1)}`,
      params,
    );
    const page = r.rows.slice(0, q.limit);
    const last = page.at(-1);
    return {
      deployments: page.map((row) => ({ deployment: deployment(row), counts: counts(row) })),
      next: r.rows.length > q.limit && last ? encodeCursor([isoOf(last.created_at), last.id]) : null,
    };
  });

  const findDeployment = async (id: string): Promise<DeploymentRow> => {
    const found = await db.query<DeploymentRow>(`${DEPLOYMENT_SELECT} WHERE d.id = $1`, [id]);
    const row = found.rows[0];
    if (row === undefined) throw new HttpError(404, "not_found", `no deployment ${id}`);
    return row;
  };

  app.get("/v1/deployments/:id", { schema: { params: z.object({ id: Id }) } }, async (req): Promise<DeploymentView> => {
    const row = await findDeployment(req.params.id);
    const tasks = await db.query<TaskRow>(`${TASK_SELECT} WHERE t.deployment_id = $1 ORDER BY t.allocated_at, t.host_id, t.attempt`, [req.params.id]);
    return { deployment: deployment(row), counts: counts(row), tasks: tasks.rows.map(task) };
  });

  app.get(
    "/v1/deployments/:id/tasks",
    { schema: { params: z.object({ id: Id }), querystring: TaskQuery } },
    async (req): Promise<TaskList> => {
      await findDeployment(req.params.id);
      const q = req.query;
      const params: unknown[] = [req.params.id];
      const param = (v: unknown) => `$${params.push(v)}`;
      const where = ["t.deployment_id = $1"];
      if (q.allAttempts === "false")
        where.push("NOT EXISTS (SELECT 1 FROM tasks n WHERE n.deployment_id = t.deployment_id AND n.host_id = t.host_id AND n.attempt > t.attempt)");
      if (q.state !== undefined) where.push(`t.state = ${param(q.state)}`);
      if (q.step !== undefined) where.push(`t.current_step = ${param(q.step)}`);
      if (q.host !== undefined) where.push(`t.host_id = ${param(q.host)}`);
      if (q.cursor !== undefined) {
        const [hostId, attempt] = decodeCursor(q.cursor, z.tuple([HostId, z.number().int()]));
        where.push(`(t.host_id, t.attempt) > (${param(hostId)}, ${param(attempt)})`);
      }
      const r = await db.query<TaskRow>(`${TASK_SELECT} WHERE ${where.join(" AND ")} ORDER BY t.host_id, t.attempt LIMIT ${param(q.limit + 1)}`, params);
      const page = r.rows.slice(0, q.limit);
      const last = page.at(-1);
      return { tasks: page.map(task), next: r.rows.length > q.limit && last ? encodeCursor([last.host_id, last.attempt]) : null };
    },
  );

  // The index of a host's deployments: its tasks (one per deployment attempt), newest first.
  app.get(
    "/v1/hosts/:hostId/tasks",
    { schema: { params: z.object({ hostId: HostId }), querystring: HostTaskQuery } },
    async (req): Promise<TaskList> => {
      const q = req.query;
      const params: unknown[] = [req.params.hostId];
      const param = (v: unknown) => `$${params.push(v)}`;
      const where = ["t.host_id = $1"];
      if (q.component !== undefined) where.push(`t.component = ${param(q.component)}`);
      if (q.state !== undefined) where.push(`t.state = ${param(q.state)}`);
      if (q.cursor !== undefined) {
        const [allocatedAt, taskId] = decodeCursor(q.cursor, z.tuple([z.string().max(64), Id]));
        where.push(`(t.allocated_at, t.task_id) < (${param(allocatedAt)}::timestamptz, ${param(taskId)})`);
      }
      const r = await db.query<TaskRow>(`${TASK_SELECT} WHERE ${where.join(" AND ")} ORDER BY t.allocated_at DESC, t.task_id DESC LIMIT ${param(q.limit + 1)}`, params);
      const page = r.rows.slice(0, q.limit);
      const last = page.at(-1);
      if (page.length === 0 && q.cursor === undefined) {
        const known = await db.query("SELECT 1 FROM fleet_hosts WHERE host_id = $1", [req.params.hostId]);
        if (known.rows.length === 0) throw new HttpError(404, "not_found", `no host ${req.params.hostId}`);
      }
      return { tasks: page.map(task), next: r.rows.length > q.limit && last ? encodeCursor([isoOf(last.allocated_at), last.task_id]) : null };
    },
  );

  app.get("/v1/tasks/:taskId", { schema: { params: z.object({ taskId: Id }) } }, async (req): Promise<TaskView> => {
    const r = await db.query<TaskRow>(`${TASK_SELECT} WHERE t.task_id = $1`, [req.params.taskId]);
    const row = r.rows[0];
    if (row === undefined) throw new HttpError(404, "not_found", `no task ${req.params.taskId}`);
    return task(row);
  });
}
