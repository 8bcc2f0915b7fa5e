import type { DesiredState, JournalEntry, Step, TrustedKeys } from "@molt/contracts";
import type { JournalWriter } from "../host/task-files.js";
import { componentPaths } from "../host/layout.js";
import { type Fetch, fetchGet, nodeGet } from "./download.js";
import type { ExtractLimits } from "./extract.js";
import { type Crash, noCrash } from "./crash.js";
import { filesOnly, type ComponentConfig } from "../agent/components.js";
import { injectedFault } from "./fault.js";
import { CommandFailedError, LOG_TAIL_CHARS } from "./process.js";
import { type Facts, machineFor, NO_FACTS, type StepMachine, type StepSpec, type TaskInput, TaskRejectedError } from "./machine.js";

/** A repository away for a minute or so is ridden out; the deadline ends the tries in any case. */
export const DEFAULT_RETRY = { attempts: 8, delayMs: 1_000 } as const;

export const DEFAULT_LIMITS: ExtractLimits = { maxEntries: 100_000, maxBytes: 8 * 1024 ** 3 };

export interface RunTaskOptions {
  readonly root: string;
  readonly task: DesiredState;
  /** A fresh journal for this task: the run refuses one that already has entries. */
  readonly journal: JournalWriter;
  /** Download with this fetch instead of node:http(s) (the simulator may pass one). */
  readonly fetch?: Fetch;
  /** Artificial pause inside each step so a demo can be watched. */
  readonly stepDelayMs?: number;
  readonly limits?: ExtractLimits;
  /** Download through this mirror base URL (same path and query) instead of the package URL's origin. */
  readonly mirror?: string;
  readonly now?: () => Date;
  /** Cancel (the task was withdrawn): honoured only by steps before anything on the host changes. */
  readonly signal?: AbortSignal;
  /** `MOLT_SIM_FAULT_FILE`: a JSON file naming hosts and a step to fail (re-read at every step). */
  readonly faultFile?: string;
  readonly machine?: StepMachine;
  readonly crash?: Crash;
  /** Download retries: tries (each resuming the last) and the first pause, doubled each time up to 30 s. */
  readonly retry?: { readonly attempts: number; readonly delayMs: number };
  /** How the component runs (process, health, hooks); files only when absent. */
  readonly component?: ComponentConfig;
  /** Publisher keys this host trusts; null or absent: none configured. */
  readonly trust?: TrustedKeys | null;
}

export type Verdict = Extract<JournalEntry, { kind: "succeeded" | "failed" | "rejected" }>;

/**
 * Runs one task through its step machine, journaling every transition: `accepted`, then
 * step-started / step-succeeded / step-failed per step, then exactly one verdict. Resolves with
 * the verdict entry; rejects only if the journal itself cannot be written (then whoever watches
 * the run, the agent, writes the verdict).
 */
export async function runTask(opts: RunTaskOptions): Promise<Verdict> {
  const { journal, task } = opts;
  if (journal.lastSeq !== 0) throw new Error(`task ${task.taskId} already has a journal (seq ${journal.lastSeq}); it runs at most once`);
  const now = opts.now ?? (() => new Date());
  const component = opts.component ?? filesOnly(task.component);
  const machine = opts.machine ?? machineFor(task.kind, component);
  // Capped: timers overflow past 2^31 ms (about 24 days) and would fire at once.
  const untilDeadline = Math.min(2 ** 31 - 1, Math.max(0, Date.parse(task.deadline) - now().getTime()));
  const deadline = AbortSignal.timeout(untilDeadline);
  const cancelOrDeadline = opts.signal ? AbortSignal.any([opts.signal, deadline]) : deadline;
  const never = new AbortController().signal;
  const signalFor = (spec: StepSpec): AbortSignal =>
    spec.stopsOn === "cancel-or-deadline" ? cancelOrDeadline : spec.stopsOn === "deadline" ? deadline : never;
  const input: TaskInput = {
    root: opts.root,
    task,
    paths: componentPaths(opts.root, task.component),
    get: opts.fetch ? fetchGet(opts.fetch) : nodeGet,
    limits: opts.limits ?? DEFAULT_LIMITS,
    mirror: opts.mirror,
    now,
    component,
    trust: opts.trust ?? null,
    retry: opts.retry ?? DEFAULT_RETRY,
    crash: opts.crash ?? noCrash,
  };
  let facts: Facts = NO_FACTS;
  await journal.append({ kind: "accepted" });
  let failure: { step: Step; error: string; rejected: boolean } | null = null;
  let at = machine.start as keyof StepMachine["steps"] | "END";
  while (at !== "END") {
    const spec = machine.steps[at];
    if (spec === undefined) throw new Error(`step machine has no step ${at}`);
    const signal = signalFor(spec);
    await journal.append({ kind: "step-started", step: spec.step });
    const started = performance.now();
    try {
      if (opts.stepDelayMs) await new Promise((r) => setTimeout(r, opts.stepDelayMs));
      signal.throwIfAborted();
      const fault = await injectedFault(opts.faultFile, task.hostId, spec.step);
      if (fault !== undefined) throw new Error(fault);
      const result = await spec.run({ input, facts, signal, failing: failure !== null });
      facts = { ...facts, ...result.facts };
      const durationMs = Math.round(performance.now() - started);
      const detail = result.detail ? { detail: result.detail.slice(0, 1000) } : {};
      await journal.append({ kind: "step-succeeded", step: spec.step, durationMs, ...detail });
      // The old version runs again: say so, with the reason, before the cleanup and the verdict.
      if (spec.step === "rollback" && failure !== null) await journal.append({ kind: "rolled-back", reason: failure.error });
      at = spec.onSuccess;
    } catch (err) {
      const durationMs = Math.round(performance.now() - started);
      const error = describe(err, signal, task.deadline).slice(0, 4000);
      // A command that failed sends the end of its output along (the short error keeps 500 bytes).
      const logTail = err instanceof CommandFailedError && err.output ? { logTail: err.output.slice(-LOG_TAIL_CHARS) } : {};
      await journal.append({ kind: "step-failed", step: spec.step, durationMs, error, ...logTail });
      // The first failure decides the verdict; cleanup that follows does not change it.
      failure ??= { step: spec.step, error, rejected: err instanceof TaskRejectedError };
      at = spec.onFailure;
    }
  }
  if (failure === null) return (await journal.append({ kind: "succeeded", version: task.version })) as Verdict;
  if (failure.rejected) return (await journal.append({ kind: "rejected", reason: failure.error })) as Verdict;
  return (await journal.append({ kind: "failed", reason: failure.error, step: failure.step })) as Verdict;
}

/** A step stopped by the deadline or a cancel says so, not "This operation was aborted". */
function describe(err: unknown, signal: AbortSignal, deadline: string): string {
  if (signal.aborted) {
    const reason: unknown = signal.reason;
    if (reason instanceof DOMException && reason.name === "TimeoutError") return `deadline ${deadline} reached`;
    if (reason instanceof Error) return reason.message;
  }
  return err instanceof Error ? err.message : String(err);
}

/** The abort reason a cancelled client uses, so the journal says why it stopped. */
export function cancelled(why: string): Error {
  return new Error(`cancelled: ${why}`);
}
