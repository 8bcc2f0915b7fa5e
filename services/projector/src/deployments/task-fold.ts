import type { MoltEvent, TaskStateView } from "@molt/contracts";
import type { Queryable } from "@molt/db";
import { unreachable } from "@molt/domain";
import type { ProjectedCommit } from "../projection/projection.js";

type TaskEvent = Extract<
  MoltEvent,
  {
    type:
      | "TaskAllocated"
      | "TaskDispatched"
      | "TaskAccepted"
      | "TaskStepStarted"
      | "TaskStepSucceeded"
      | "TaskStepFailed"
      | "TaskRolledBack"
      | "TaskSucceeded"
      | "TaskFailed"
      | "TaskRejected"
      | "TaskTimedOut"
      | "TaskCancelled";
  }
>;
type StepStart = Extract<MoltEvent, { type: "TaskStepStarted" }>;
type StepEnd = Extract<MoltEvent, { type: "TaskStepSucceeded" | "TaskStepFailed" }>;

const TASK_EVENTS = new Set<MoltEvent["type"]>([
  "TaskAllocated",
  "TaskDispatched",
  "TaskAccepted",
  "TaskStepStarted",
  "TaskStepSucceeded",
  "TaskStepFailed",
  "TaskRolledBack",
  "TaskSucceeded",
  "TaskFailed",
  "TaskRejected",
  "TaskTimedOut",
  "TaskCancelled",
]);
export const isTaskEvent = (e: MoltEvent): e is TaskEvent => TASK_EVENTS.has(e.type);
const ACTIVE: ReadonlySet<TaskStateView> = new Set(["allocated", "dispatched", "running"]);

/** A tasks row as SQL text goes in and out of it (timestamps as text: no precision lost on the way). */
interface TaskRow {
  task_id: string;
  deployment_id: string;
  host_id: string;
  component: string;
  version: string;
  from_version: string | null;
  attempt: number;
  state: TaskStateView;
  current_step: string | null;
  error: string | null;
  deadline: string | null;
  allocated_at: string;
  updated_at: string;
  finished_at: string | null;
  log_tail: string | null;
}

interface StepRow {
  task_id: string;
  seq: number;
  step: string;
  state: "running" | "succeeded" | "failed";
  started_at: string | null;
  ended_at: string | null;
  duration_ms: number | null;
  error: string | null;
  detail: string | null;
  log_tail: string | null;
  /** A step whose start was never reported: started_at is ended_at minus the duration, computed in SQL as the per-event statement does. */
  derived: boolean;
}

/**
 * The tasks and task_steps rows a run of commits touches, read once, changed in memory event by
 * event exactly as the per-event statements change them (same guards: a task moves only from the
 * states its statement's WHERE allows, a step row is inserted only if its key is free), and
 * written back with one statement per table. Cost per run: two reads, two writes, however many
 * events it holds.
 */
export class TaskFold {
  private readonly dirtyTasks = new Set<string>();
  private readonly dirtySteps = new Set<StepRow>();

  private constructor(
    private readonly tasks: Map<string, TaskRow>,
    private readonly steps: Map<string, Map<number, StepRow>>,
  ) {}

  /** Reads the rows of every task the run's events name (one query per table). */
  static async load(tx: Queryable, commits: readonly ProjectedCommit[]): Promise<TaskFold> {
    const ids = new Set<string>();
    for (const c of commits) for (const e of c.commit.events) if (isTaskEvent(e)) ids.add(e.data.taskId);
    const tasks = new Map<string, TaskRow>();
    const steps = new Map<string, Map<number, StepRow>>();
    if (ids.size > 0) {
      const keys = JSON.stringify([...ids]);
      // = ANY(ARRAY(...)): an index scan; IN (SELECT jsonb_array_elements_text(...)) planned a hash join over the whole table.
      const [t, s] = [
        await tx.query<TaskRow>(
          `SELECT task_id, deployment_id, host_id, component, version, from_version, attempt, state, current_step, error,
             deadline::text AS deadline, allocated_at::text AS allocated_at, updated_at::text AS updated_at,
             finished_at::text AS finished_at, log_tail
           FROM tasks WHERE task_id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))`,
          [keys],
        ),
        await tx.query<Omit<StepRow, "derived">>(
          `SELECT task_id, seq, step, state, started_at::text AS started_at, ended_at::text AS ended_at, duration_ms, error, detail, log_tail
           FROM task_steps WHERE task_id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))`,
          [keys],
        ),
      ];
      for (const row of t.rows) tasks.set(row.task_id, row);
      for (const row of s.rows) stepsOf(steps, row.task_id).set(row.seq, { ...row, derived: false });
    }
    return new TaskFold(tasks, steps);
  }

  /** What `applyEvent` does for a task event, in memory. */
  event(event: TaskEvent): void {
    const at = event.metadata.occurredAt;
    switch (event.type) {
      case "TaskAllocated": {
        const d = event.data;
        if (this.tasks.has(d.taskId)) return;
        this.tasks.set(d.taskId, {
          task_id: d.taskId,
          deployment_id: d.deploymentId,
          host_id: d.hostId,
          component: d.component,
          version: d.version,
          from_version: d.fromVersion,
          attempt: d.attempt,
          state: "allocated",
          current_step: null,
          error: null,
          deadline: d.deadline,
          allocated_at: at,
          updated_at: at,
          finished_at: null,
          log_tail: null,
        });
        this.dirtyTasks.add(d.taskId);
        return;
      }
      case "TaskDispatched":
        return this.task(event.data.taskId, (t) => t.state === "allocated", { state: "dispatched", updated_at: at });
      case "TaskAccepted":
        return this.task(event.data.taskId, (t) => t.state === "allocated" || t.state === "dispatched", { state: "running", updated_at: at });
      case "TaskStepStarted": {
        const d = event.data;
        this.insertStep({ task_id: d.taskId, seq: d.seq, step: d.step, state: "running", started_at: d.at, ended_at: null, duration_ms: null, error: null, detail: null, log_tail: null, derived: false });
        return this.task(d.taskId, () => true, { current_step: d.step, updated_at: at });
      }
      case "TaskStepSucceeded":
      case "TaskStepFailed": {
        const d = event.data;
        const end = stepEnd(event);
        // Closes every open row of this step; a step whose start was never reported gets a row of its own.
        const open = [...(this.steps.get(d.taskId)?.values() ?? [])].filter((s) => s.step === d.step && s.state === "running");
        for (const s of open) {
          Object.assign(s, end);
          this.dirtySteps.add(s);
        }
        if (open.length === 0) this.insertStep({ task_id: d.taskId, seq: d.seq, step: d.step, started_at: null, derived: true, ...end });
        return this.task(d.taskId, () => true, { current_step: d.step, updated_at: at }, end.log_tail);
      }
      case "TaskRolledBack":
        return this.task(event.data.taskId, () => true, { updated_at: at });
      case "TaskSucceeded":
        return this.finish(event.data.taskId, { state: "succeeded", error: null, finished_at: event.data.at, updated_at: at });
      case "TaskFailed":
        return this.finish(
          event.data.taskId,
          { state: "failed", error: event.data.reason, finished_at: event.data.at, updated_at: at },
          event.data.step ?? null,
        );
      case "TaskRejected":
        return this.finish(event.data.taskId, { state: "rejected", error: event.data.reason, finished_at: event.data.at, updated_at: at });
      case "TaskTimedOut":
        return this.finish(event.data.taskId, {
          state: "timed-out",
          error: `timed out: no result by the deadline ${event.data.deadline}`,
          finished_at: at,
          updated_at: at,
        });
      case "TaskCancelled":
        return this.finish(event.data.taskId, { state: "cancelled", error: event.data.reason, finished_at: at, updated_at: at });
      default:
        return unreachable(event);
    }
  }

  /** What `applyStepPair` does, in memory: one complete row (if its key is free), the task's current step. */
  pair(start: StepStart, end: StepEnd): void {
    const closed = stepEnd(end);
    this.insertStep({ task_id: start.data.taskId, seq: start.data.seq, step: start.data.step, started_at: start.data.at, derived: false, ...closed });
    this.task(start.data.taskId, () => true, { current_step: start.data.step, updated_at: end.metadata.occurredAt }, closed.log_tail);
  }

  /** Writes the rows the run changed: one upsert per table. */
  async write(tx: Queryable): Promise<void> {
    const tasks = [...this.dirtyTasks].map((id) => this.tasks.get(id)!);
    if (tasks.length > 0)
      await tx.query(
        `INSERT INTO tasks (task_id, deployment_id, host_id, component, version, from_version, attempt, state, current_step, error,
           deadline, allocated_at, updated_at, finished_at, log_tail)
         SELECT task_id, deployment_id, host_id, component, version, from_version, attempt, state, current_step, error,
           deadline, allocated_at, updated_at, finished_at, log_tail
         FROM jsonb_to_recordset($1::jsonb) AS r(task_id text, deployment_id text, host_id text, component text, version text,
           from_version text, attempt integer, state text, current_step text, error text, deadline timestamptz,
           allocated_at timestamptz, updated_at timestamptz, finished_at timestamptz, log_tail text)
         ON CONFLICT (task_id) DO UPDATE SET state = EXCLUDED.state, current_step = EXCLUDED.current_step, error = EXCLUDED.error,
           updated_at = EXCLUDED.updated_at, finished_at = EXCLUDED.finished_at, log_tail = EXCLUDED.log_tail`,
        [JSON.stringify(tasks)],
      );
    if (this.dirtySteps.size > 0)
      await tx.query(
        `INSERT INTO task_steps (task_id, seq, step, state, started_at, ended_at, duration_ms, error, detail, log_tail)
         SELECT task_id, seq, step, state,
           CASE WHEN derived THEN ended_at - make_interval(secs => duration_ms / 1000) ELSE started_at END,
           ended_at, duration_ms, error, detail, log_tail
         FROM jsonb_to_recordset($1::jsonb) AS r(task_id text, seq integer, step text, state text, started_at timestamptz,
           ended_at timestamptz, duration_ms float8, error text, detail text, log_tail text, derived boolean)
         ON CONFLICT (task_id, seq) DO UPDATE SET state = EXCLUDED.state, ended_at = EXCLUDED.ended_at,
           duration_ms = EXCLUDED.duration_ms, error = EXCLUDED.error, detail = EXCLUDED.detail, log_tail = EXCLUDED.log_tail`,
        [JSON.stringify([...this.dirtySteps])],
      );
  }

  /** `UPDATE tasks SET ... [, log_tail = COALESCE(logTail, log_tail)] WHERE task_id = $1 AND <when>`. */
  private task(taskId: string, when: (t: TaskRow) => boolean, set: Partial<TaskRow>, logTail?: string | null): void {
    const t = this.tasks.get(taskId);
    if (t === undefined || !when(t)) return;
    Object.assign(t, set);
    if (logTail != null) t.log_tail = logTail;
    this.dirtyTasks.add(taskId);
  }

  /** Only an active task finishes: a late duplicate never rewrites an outcome. */
  private finish(taskId: string, set: Pick<TaskRow, "state" | "error" | "finished_at" | "updated_at">, step: string | null = null): void {
    this.task(taskId, (t) => ACTIVE.has(t.state), step === null ? set : { ...set, current_step: step });
  }

  /** `INSERT INTO task_steps ... ON CONFLICT DO NOTHING`. */
  private insertStep(row: StepRow): void {
    const rows = stepsOf(this.steps, row.task_id);
    if (rows.has(row.seq)) return;
    rows.set(row.seq, row);
    this.dirtySteps.add(row);
  }
}

function stepsOf(steps: Map<string, Map<number, StepRow>>, taskId: string): Map<number, StepRow> {
  let rows = steps.get(taskId);
  if (rows === undefined) steps.set(taskId, (rows = new Map<number, StepRow>()));
  return rows;
}

/** The columns a step's end sets on its row. */
function stepEnd(end: StepEnd): Pick<StepRow, "state" | "ended_at" | "duration_ms" | "error" | "detail" | "log_tail"> {
  const failed = end.type === "TaskStepFailed";
  return {
    state: failed ? "failed" : "succeeded",
    ended_at: end.data.at,
    duration_ms: end.data.durationMs,
    error: failed ? end.data.error : null,
    detail: failed ? null : (end.data.detail ?? null),
    log_tail: failed ? (end.data.logTail ?? null) : null,
  };
}
