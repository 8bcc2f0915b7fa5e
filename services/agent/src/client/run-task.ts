import type { DesiredState, JournalEntry, Step } from "@molt/contracts";
import type { JournalWriter } from "../host/task-files.js";
import { componentPaths } from "../host/layout.js";
import type { Fetch } from "./download.js";
import type { ExtractLimits } from "./extract.js";
import { FILES_ONLY_MACHINE, type StepMachine, type TaskContext, TaskRejectedError } from "./steps.js";

export const DEFAULT_LIMITS: ExtractLimits = { maxEntries: 100_000, maxBytes: 8 * 1024 ** 3 };

export interface RunTaskOptions {
  readonly root: string;
  readonly task: DesiredState;
  /** A fresh journal for this task: the run refuses one that already has entries. */
  readonly journal: JournalWriter;
  readonly fetch?: Fetch;
  /** Artificial pause inside each step so a demo can be watched. */
  readonly stepDelayMs?: number;
  readonly limits?: ExtractLimits;
  /** Download through this mirror base URL (same path and query) instead of the package URL's origin. */
  readonly mirror?: string;
  readonly now?: () => Date;
  readonly signal?: AbortSignal;
  readonly machine?: StepMachine;
}

export type Verdict = Extract<JournalEntry, { kind: "succeeded" | "failed" | "rejected" }>;

/**
 * Runs one task through the step machine, journaling every transition: `accepted`, then
 * step-started / step-succeeded / step-failed per step, then exactly one verdict. Resolves with
 * the verdict entry; rejects only if the journal itself cannot be written (then whoever watches
 * the run, the agent, writes the verdict).
 */
export async function runTask(opts: RunTaskOptions): Promise<Verdict> {
  const { journal, task } = opts;
  if (journal.lastSeq !== 0) throw new Error(`task ${task.taskId} already has a journal (seq ${journal.lastSeq}); it runs at most once`);
  const now = opts.now ?? (() => new Date());
  const machine = opts.machine ?? FILES_ONLY_MACHINE;
  // Capped: timers overflow past 2^31 ms (about 24 days) and would fire at once.
  const untilDeadline = Math.min(2 ** 31 - 1, Math.max(0, Date.parse(task.deadline) - now().getTime()));
  const deadline = AbortSignal.timeout(untilDeadline);
  const signal = opts.signal ? AbortSignal.any([opts.signal, deadline]) : deadline;
  const ctx: TaskContext = {
    root: opts.root,
    task,
    paths: componentPaths(opts.root, task.component),
    fetch: opts.fetch ?? globalThis.fetch,
    signal,
    limits: opts.limits ?? DEFAULT_LIMITS,
    mirror: opts.mirror,
    now,
    lock: null,
    previousVersion: null,
    switched: false,
  };
  await journal.append({ kind: "accepted" });
  let failure: { step: Step; error: string; rejected: boolean } | null = null;
  let at = machine.start as keyof StepMachine["steps"] | "END";
  while (at !== "END") {
    const spec = machine.steps[at];
    await journal.append({ kind: "step-started", step: spec.step });
    const started = performance.now();
    try {
      if (opts.stepDelayMs) await new Promise((r) => setTimeout(r, opts.stepDelayMs));
      const detail = await spec.run(ctx);
      const durationMs = Math.round(performance.now() - started);
      await journal.append({ kind: "step-succeeded", step: spec.step, durationMs, ...(detail ? { detail: detail.slice(0, 1000) } : {}) });
      at = spec.onSuccess;
    } catch (err) {
      const durationMs = Math.round(performance.now() - started);
      const error = describe(err, signal, task.deadline).slice(0, 4000);
      await journal.append({ kind: "step-failed", step: spec.step, durationMs, error });
      // The first failure decides the verdict; cleanup that follows does not change it.
      failure ??= { step: spec.step, error, rejected: err instanceof TaskRejectedError };
      at = spec.onFailure;
    }
  }
  const verdict: Verdict =
    failure === null
      ? ((await journal.append({ kind: "succeeded", version: task.version })) as Verdict)
      : failure.rejected
        ? ((await journal.append({ kind: "rejected", reason: failure.error })) as Verdict)
        : ((await journal.append({ kind: "failed", reason: failure.error, step: failure.step })) as Verdict);
  return verdict;
}

function describe(err: unknown, signal: AbortSignal, deadline: string): string {
  const reason: unknown = signal.aborted ? signal.reason : undefined;
  if (reason instanceof DOMException && reason.name === "TimeoutError") return `deadline ${deadline} reached`;
  return err instanceof Error ? err.message : String(err);
}
