import type { MoltEvent, TaskStateView } from "@molt/contracts";
import type { Queryable } from "@molt/db";
import { unreachable } from "@molt/domain";

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
const isStepEvent = (e: MoltEvent) => e.type === "TaskStepStarted" || e.type === "TaskStepSucceeded" || e.type === "TaskStepFailed";
const isStepEnd = (e: MoltEvent): e is StepEnd => e.type === "TaskStepSucceeded" || e.type === "TaskStepFailed";

/** A step's start followed, in its commit, by that step's end: one complete row (the usual report). */
export function endsPair(start: MoltEvent, next: MoltEvent | undefined): next is StepEnd {
  return next !== undefined && start.type === "TaskStepStarted" && isStepEnd(next) && next.data.taskId === start.data.taskId && next.data.step === start.data.step;
}
const ACTIVE: ReadonlySet<TaskStateView> = new Set(["allocated", "dispatched", "running"]);
const INT4_MAX = 2_147_483_647;

/**
 * Whether a run's task events hold a value its integer columns refuse (a seq or an attempt past
 * int4). The statements of the commit-by-commit path bind every parameter whether or not a row
 * changes, so they refuse such a commit even where the folded run would write nothing from it;
 * a run holding one is applied commit by commit instead (the follower's fallback), so both paths
 * refuse exactly the same commits.
 */
export function refusedByColumns(e: MoltEvent): boolean {
  if (!isTaskEvent(e)) return false;
  if ("seq" in e.data && e.data.seq > INT4_MAX) return true;
  return e.type === "TaskAllocated" && e.data.attempt > INT4_MAX;
}

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
 * states its statement's WHERE allows, a step row is inserted only if its key is free, a step's
 * end closes every open row of that step), and written back with one statement per table. Cost
 * per run: at most two reads and two writes, however many events it holds.
 */
export class TaskRun {
  private readonly dirtyTasks = new Set<string>();
  private readonly dirtySteps = new Set<StepRow>();

  private constructor(
    private readonly tasks: Map<string, TaskRow>,
    private readonly steps: Map<string, Map<number, StepRow>>,
    /** Tasks whose step rows were read; the others' step events in the run are all start+end pairs. */
    private readonly stepsRead: ReadonlySet<string>,
    /** Tasks whose first event in the run is their allocation: not read, presumed to have no row yet (checked when written). */
    private readonly presumedNew: ReadonlySet<string>,
  ) {}

  /**
   * Reads the rows of the tasks the run's commits name: their tasks rows, and the step rows of
   * those with a lone step start or end in the run. A start+end pair only inserts a complete row
   * if its key is free and nothing in a run changes a complete row, so `ON CONFLICT DO NOTHING`
   * decides it without a read (the usual report: most runs read no step rows). Keys are probed by
   * index (= ANY). A task whose first event in the run is its allocation is not read at all: it
   * has no row yet unless its allocation was delivered twice, which `write` finds (the upsert
   * leaves such a row alone and counts it) and then refuses the run, which the follower applies
   * commit by commit instead.
   */
  static async load(tx: Queryable, commits: Iterable<{ commit: { events: readonly MoltEvent[] } }>): Promise<TaskRun> {
    const ids = new Set<string>();
    const withSteps = new Set<string>();
    const presumedNew = new Set<string>();
    for (const { commit } of commits)
      for (let i = 0; i < commit.events.length; i++) {
        const e = commit.events[i]!;
        if (!isTaskEvent(e)) continue;
        if (!ids.has(e.data.taskId)) {
          ids.add(e.data.taskId);
          if (e.type === "TaskAllocated") presumedNew.add(e.data.taskId);
        }
        if (endsPair(e, commit.events[i + 1])) i++;
        else if (isStepEvent(e)) withSteps.add(e.data.taskId);
      }
    const tasks = new Map<string, TaskRow>();
    const steps = new Map<string, Map<number, StepRow>>();
    const toRead = [...ids].filter((id) => !presumedNew.has(id));
    if (toRead.length > 0) {
      const t = await tx.query<TaskRow>(
        `SELECT task_id, deployment_id, host_id, component, version, from_version, attempt, state, current_step, error,
           deadline::text AS deadline, allocated_at::text AS allocated_at, updated_at::text AS updated_at,
           finished_at::text AS finished_at, log_tail
         FROM tasks WHERE task_id = ANY($1::text[])`,
        [toRead],
      );
      for (const row of t.rows) tasks.set(row.task_id, row);
    }
    if (withSteps.size > 0) {
      const s = await tx.query<Omit<StepRow, "derived">>(
        `SELECT task_id, seq, step, state, started_at::text AS started_at, ended_at::text AS ended_at, duration_ms, error, detail, log_tail
         FROM task_steps WHERE task_id = ANY($1::text[])`,
        [[...withSteps]],
      );
      for (const row of s.rows) stepsOf(steps, row.task_id).set(row.seq, { ...row, derived: false });
    }
    return new TaskRun(tasks, steps, withSteps, presumedNew);
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
        let closed = false;
        for (const s of this.steps.get(d.taskId)?.values() ?? [])
          if (s.step === d.step && s.state === "running") {
            Object.assign(s, end);
            this.dirtySteps.add(s);
            closed = true;
          }
        if (!closed) this.insertStep({ task_id: d.taskId, seq: d.seq, step: d.step, started_at: null, derived: true, ...end });
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

  /**
   * Writes the rows the run changed: one statement per table. json_to_recordset, not jsonb: the
   * rows are read once, so building a jsonb of the whole run first is wasted work.
   */
  async write(tx: Queryable): Promise<void> {
    if (this.dirtyTasks.size > 0) {
      // A presumed-new task that had a row after all (its allocation delivered twice) is left
      // alone and not counted: the run's rows for it were folded from nothing, so the run is
      // refused and applied commit by commit (the transaction rolls back).
      const written = await tx.query<{ n: number }>(
        `WITH w AS (INSERT INTO tasks (task_id, deployment_id, host_id, component, version, from_version, attempt, state, current_step, error,
           deadline, allocated_at, updated_at, finished_at, log_tail)
         SELECT task_id, deployment_id, host_id, component, version, from_version, attempt, state, current_step, error,
           deadline, allocated_at, updated_at, finished_at, log_tail
         FROM json_to_recordset($1::json) AS r(task_id text, deployment_id text, host_id text, component text, version text,
           from_version text, attempt integer, state text, current_step text, error text, deadline timestamptz,
           allocated_at timestamptz, updated_at timestamptz, finished_at timestamptz, log_tail text)
         ON CONFLICT (task_id) DO UPDATE SET state = EXCLUDED.state, current_step = EXCLUDED.current_step, error = EXCLUDED.error,
           updated_at = EXCLUDED.updated_at, finished_at = EXCLUDED.finished_at, log_tail = EXCLUDED.log_tail
         WHERE tasks.task_id <> ALL($2::text[])
         RETURNING 1) SELECT count(*)::int AS n FROM w`,
        [JSON.stringify([...this.dirtyTasks].map((id) => this.tasks.get(id)!)), [...this.presumedNew]],
      );
      if (written.rows[0]!.n !== this.dirtyTasks.size) throw new PresumedNewError();
    }
    // Rows of tasks whose step rows were read: inserted (key known free) or changed (an open row
    // closed). Rows of the others (pairs only): inserted where the key is free, as one by one.
    const [read, paired] = [[] as StepRow[], [] as StepRow[]];
    for (const row of this.dirtySteps) (this.stepsRead.has(row.task_id) ? read : paired).push(row);
    if (read.length > 0)
      await tx.query(
        `${STEPS_INSERT}
         ON CONFLICT (task_id, seq) DO UPDATE SET state = EXCLUDED.state, ended_at = EXCLUDED.ended_at,
           duration_ms = EXCLUDED.duration_ms, error = EXCLUDED.error, detail = EXCLUDED.detail, log_tail = EXCLUDED.log_tail`,
        [JSON.stringify(read)],
      );
    if (paired.length > 0) await tx.query(`${STEPS_INSERT} ON CONFLICT (task_id, seq) DO NOTHING`, [JSON.stringify(paired)]);
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

/** A task allocated in the run already had a row: the run goes commit by commit (see TaskRun.load). */
export class PresumedNewError extends Error {
  constructor() {
    super("a task allocated in the run already had a row: applied commit by commit");
  }
}

/**
 * When a step whose start was never reported began: its end minus its duration, or unknown (null)
 * for a duration past ~3,000 years (ends are after 1970, so the start stays a timestamp). It must
 * never fail: PostgreSQL folds this expression with the parameters of the commit-by-commit
 * statement while planning, so it would refuse the commit even where no row is inserted (the key
 * taken), which a folded run does not. An interval times a factor, not
 * `make_interval(secs => ms / 1000)`: that division underflows (SQLSTATE 22003) for a duration
 * below ~1e-320 ms, which the contract lets through.
 */
export const derivedStart = (endedAt: string, durationMs: string) =>
  `CASE WHEN ${durationMs} <= ${MAX_DERIVED_MS} THEN ${endedAt} - ${durationMs} * interval '1 millisecond' END`;
const MAX_DERIVED_MS = 1e14;

const STEPS_INSERT = `INSERT INTO task_steps (task_id, seq, step, state, started_at, ended_at, duration_ms, error, detail, log_tail)
  SELECT task_id, seq, step, state,
    CASE WHEN derived THEN ${derivedStart("ended_at", "duration_ms")} ELSE started_at END,
    ended_at, duration_ms, error, detail, log_tail
  FROM json_to_recordset($1::json) AS r(task_id text, seq integer, step text, state text, started_at timestamptz,
    ended_at timestamptz, duration_ms float8, error text, detail text, log_tail text, derived boolean)`;

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
