import { headers as natsHeaders, type NatsConnection } from "@nats-io/transport-node";
import { type DesiredState, type JournalEntry, ReportAnswer, type Step, type StepReport, subjects } from "@molt/contracts";
import { pidAlive } from "../client/lock.js";
import { isTerminal, type JournalRecord, openJournal, readJournal, taskPaths, writeForwarded } from "../host/task-files.js";
import { errorMessage, type Log } from "../log.js";
import type { AgentMetrics } from "./metrics.js";
import { type DeadRunOutcome, recoverDeadRun } from "./recover.js";
import type { ClientExit, ClientRun } from "./runners.js";

/** Entries per report: the contract's bound. */
export const MAX_BATCH = 64;

export interface ForwarderDeps {
  readonly nc: NatsConnection;
  readonly hostId: string;
  readonly root: string;
  readonly log: Log;
  readonly retryMs: number;
  readonly requestTimeoutMs: number;
  /** How often the journal file is re-read while the task is open (a child process cannot poke us). */
  readonly journalPollMs: number;
  /**
   * How long the first unsent entry waits for the entries right behind it before a report goes
   * (default 0: at once). Each report is one commit that feedback appends and every consumer
   * (allocator, projector, audit) reads, so a simulated host with zero step delay sends its
   * dozen entries in one or two reports instead of four or five. A verdict is never held back.
   */
  readonly lingerMs?: number;
  readonly metrics?: AgentMetrics;
}

/** Where a task's client stands when its watch begins. */
export type ClientState =
  | { readonly kind: "running"; readonly run: ClientRun }
  /** Launched before an agent restart; its pid may still be alive. */
  | { readonly kind: "pid"; readonly pid: number }
  /** Nobody runs it any more: if the journal has no verdict, the agent writes one with this reason. */
  | { readonly kind: "gone"; readonly reason: string };

export interface TaskWatch {
  readonly taskId: string;
  /**
   * The journal grew: read it now instead of at the next poll. An in-process run passes the
   * entry it has just appended (written, and fsynced where the process fsyncs), so it is
   * forwarded without reading the file back.
   */
  poke(entry?: JournalEntry): void;
  stop(): Promise<void>;
  /** Resolves once the client is done and every entry was answered (or the watch was stopped). */
  readonly done: Promise<void>;
}

/**
 * Follows one task: tails its journal and forwards unanswered entries in seq order to feedback
 * (request/reply, retried until answered), records the answered seq durably, and when the client
 * is gone without a verdict journals `failed` on its behalf, so every launched task ends.
 */
export function watchTask(deps: ForwarderDeps, task: DesiredState, client: ClientState, forwarded: number): TaskWatch {
  const paths = taskPaths(deps.root, task.taskId);
  const lingerMs = deps.lingerMs ?? 0;
  const log = deps.log.child({ taskId: task.taskId, component: task.component });
  let offset = 0;
  let answered = forwarded;
  const pending: JournalEntry[] = [];
  let clientDone = false;
  let stopped = false;
  /** Set once feedback refused a report: it is final for the task, so later entries are not sent. */
  let refused: string | undefined;
  let wake: (() => void) | null = null;
  /**
   * Entries handed over by the run as it appends them (in-process runs): the file is then read
   * only if one arrives out of order or the agent journals a verdict for a run that ended without
   * one. The simulator's dozen appends per task were a dozen reads of the file otherwise.
   */
  let handed = false;
  let mustRead = false;
  let sawVerdict = false;

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        wake = null;
        resolve();
      }, ms);
      wake = () => {
        clearTimeout(timer);
        wake = null;
        resolve();
      };
    });
  const lastSeen = () => Math.max(answered, pending.at(-1)?.seq ?? 0);
  const poke = (entry?: JournalEntry) => {
    if (entry !== undefined) {
      if (entry.seq === lastSeen() + 1 && !mustRead) {
        handed = true;
        pending.push(entry);
        if (isTerminal(entry)) sawVerdict = true;
      } else if (entry.seq > lastSeen()) mustRead = true;
    }
    wake?.();
  };

  /** Appends the agent's verdict unless the journal already ends the task. */
  const finish = async (reason: string) => {
    // A stopped watch leaves the verdict to whoever watches the task next (the restarted agent),
    // so two watchers never both append one.
    if (stopped) return;
    if (sawVerdict && !mustRead) {
      // The run handed over its verdict as it journaled it: nothing to add, nothing to read.
      clientDone = true;
      poke();
      return;
    }
    try {
      const all = await readJournal(paths.journal, 0);
      const outcome = all.corrupt || all.entries.some(isTerminal) ? undefined : await recoverDeadRun(deps.root, task, all.entries, log);
      const records = all.corrupt ? [] : verdictFor(all.entries, reason, Date.now(), outcome);
      if (records.length > 0) {
        const journal = await openJournal(paths.journal);
        try {
          for (const r of records) await journal.append(r);
        } finally {
          await journal.close();
        }
        log.warn({ reason, verdict: records.at(-1)?.kind }, "upgrade client ended without a verdict; the agent journaled one");
      }
    } catch (err) {
      log.error({ err: errorMessage(err) }, "could not journal the verdict of a dead upgrade client");
    }
    clientDone = true;
    poke();
  };

  if (client.kind === "running") void client.run.exited.then((exit) => finish(exitReason(exit)));
  else if (client.kind === "gone") void finish(client.reason);

  /** Reads what the file holds past `offset`; skipped while the run hands every entry over, unless `force`d. */
  const pull = async (force = false): Promise<boolean> => {
    if (handed && !mustRead && !force) return true;
    mustRead = false;
    const read = await readJournal(paths.journal, offset);
    offset = read.offset;
    for (const e of read.entries) if (e.seq > answered && e.seq > (pending.at(-1)?.seq ?? 0)) pending.push(e);
    if (read.corrupt) {
      log.error({ problem: read.corrupt }, "task journal is corrupt; forwarding stops at the bad line");
      return false;
    }
    return true;
  };

  /** Sends the next batch until feedback answers it; false if stopped first. */
  const sendBatch = async (): Promise<boolean> => {
    const batch: JournalEntry[] = [];
    for (const e of pending) {
      if (batch.length >= MAX_BATCH || (batch.length > 0 && e.seq !== batch[batch.length - 1]!.seq + 1)) break;
      batch.push(e);
    }
    const report: StepReport = { hostId: deps.hostId, taskId: task.taskId, component: task.component, entries: batch };
    const body = JSON.stringify(report);
    // The task's trace (when the agent traces) goes on to feedback in the request's headers.
    const traced = task.traceparent ? natsHeaders() : undefined;
    traced?.set("traceparent", task.traceparent!);
    const first = batch[0]!.seq;
    const last = batch[batch.length - 1]!.seq;
    for (let attempt = 1; !stopped; attempt++) {
      try {
        const msg = await deps.nc.request(subjects.report(deps.hostId), body, { timeout: deps.requestTimeoutMs, ...(traced ? { headers: traced } : {}) });
        const answer = ReportAnswer.safeParse(msg.json());
        if (!answer.success) throw new Error(`feedback answered something that is not a ReportAnswer: ${msg.string().slice(0, 200)}`);
        if (answer.data.status === "refused") {
          refused = answer.data.reason ?? "refused";
          log.warn({ first, last, reason: refused }, "feedback refused the report; this task's later entries are not sent");
        } else {
          log.debug({ first, last, status: answer.data.status, attempt }, "report answered");
          deps.metrics?.forwarded(task, batch);
        }
        await writeForwarded(deps.root, task.taskId, last);
        answered = last;
        pending.splice(0, batch.length);
        return true;
      } catch (err) {
        // Feedback being away for a moment is normal; for a long time it is worth a warning (once).
        const fields = { first, last, attempt, err: errorMessage(err) };
        if (attempt === 20) log.warn(fields, "report still not answered; retrying");
        else log.debug(fields, "report not answered; retrying");
        await sleep(deps.retryMs);
      }
    }
    return false;
  };

  const loop = async () => {
    let pidChecked = 0;
    while (!stopped) {
      if (!(await pull())) return;
      if (pending.length > 0 && refused !== undefined) {
        // Still tailed so `forwarded` keeps up and the task closes; nothing more goes to feedback.
        answered = pending.at(-1)!.seq;
        pending.length = 0;
        await writeForwarded(deps.root, task.taskId, answered);
        continue;
      }
      if (pending.length > 0) {
        // Woken by each append (in-process runs poke): the report goes as soon as it is full or
        // holds the verdict, else when the linger is over.
        const until = Date.now() + lingerMs;
        while (!stopped && Date.now() < until && pending.length < MAX_BATCH && !pending.some(isTerminal)) {
          await sleep(until - Date.now());
          if (!(await pull())) return;
        }
        if (!(await sendBatch())) return;
        continue;
      }
      if (clientDone) {
        // One more read after the client ended: its last entries (or ours) may have just landed.
        // Not needed when the run handed over its verdict: nothing is journaled after one.
        if (!(handed && sawVerdict && !mustRead)) await pull(true);
        if (pending.length === 0) {
          log.info({ lastSeq: answered }, "task closed: every journal entry answered");
          return;
        }
        continue;
      }
      if (client.kind === "pid" && Date.now() - pidChecked >= 1000) {
        pidChecked = Date.now();
        if (!pidAlive(client.pid)) await finish(`upgrade client (pid ${client.pid}) exited without a verdict`);
        continue;
      }
      await sleep(deps.journalPollMs);
    }
  };

  const done = loop().catch((err: unknown) => log.error({ err: errorMessage(err) }, "task watch failed"));
  return {
    taskId: task.taskId,
    poke,
    done,
    async stop() {
      stopped = true;
      poke();
      await done;
    },
  };
}

/**
 * What the agent journals for a client that ended without a verdict, shaped so feedback accepts
 * it as a transition: nothing if there is a verdict; `rejected` if the client never accepted
 * (it touched nothing); else the open step is closed as failed, then what recovery found: a
 * rollback step and `rolled-back` then `failed`, or `succeeded` (the switch was confirmed), or `failed`.
 */
export function verdictFor(
  entries: readonly JournalEntry[],
  reason: string,
  nowMs: number,
  outcome: DeadRunOutcome = { kind: "failed" },
): JournalRecord[] {
  if (entries.some(isTerminal)) return [];
  if (!entries.some((e) => e.kind === "accepted")) return [{ kind: "rejected", reason }];
  let open: Extract<JournalEntry, { kind: "step-started" }> | undefined;
  let lastStep: Step | undefined;
  for (const e of entries) {
    if (e.kind === "step-started") {
      open = e;
      lastStep = e.step;
    } else if (e.kind === "step-succeeded" || e.kind === "step-failed") open = undefined;
  }
  const out: JournalRecord[] = [];
  if (open) out.push({ kind: "step-failed", step: open.step, durationMs: Math.max(0, nowMs - Date.parse(open.at)), error: reason });
  switch (outcome.kind) {
    case "succeeded":
      out.push({ kind: "succeeded", version: outcome.version });
      return out;
    case "rolled-back":
      out.push(
        { kind: "step-started", step: "rollback" },
        { kind: "step-succeeded", step: "rollback", durationMs: 0, detail: outcome.detail },
        { kind: "rolled-back", reason },
      );
      break;
    case "rollback-failed":
      out.push({ kind: "step-started", step: "rollback" }, { kind: "step-failed", step: "rollback", durationMs: 0, error: outcome.error });
      break;
    case "failed":
      break;
    default: {
      const never: never = outcome;
      throw new Error(`unexpected outcome ${JSON.stringify(never)}`);
    }
  }
  out.push({ kind: "failed", reason, ...(lastStep ? { step: lastStep } : {}) });
  return out;
}

export function exitReason(exit: ClientExit): string {
  if (exit.error) return `upgrade client could not run: ${exit.error}`;
  if (exit.signal) return `upgrade client was killed by ${exit.signal}`;
  return `upgrade client exited with code ${exit.code ?? "unknown"}`;
}
