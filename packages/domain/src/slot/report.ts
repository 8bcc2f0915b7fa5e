import type { JournalEntry, SlotState, StepReport, TaskOutcome } from "@molt/contracts";
import { unreachable } from "../decider.js";
import { evolveSlot, type SlotEventBody } from "./state.js";

/**
 * The agent retries a report until it gets one of these, so each is final for that report:
 * `duplicate` tells it to move on, `refused` tells it to stop sending for this task.
 */
export type ReportResult =
  | { status: "accepted"; events: SlotEventBody[] }
  | { status: "duplicate" }
  | { status: "refused"; reason: string };

type ActiveTask = NonNullable<SlotState["active"]>;

export function recordReport(report: StepReport, state: SlotState): ReportResult {
  const { taskId, entries } = report;
  const active = state.active;
  if (active === null || active.taskId !== taskId) {
    const done = state.recent.find((r) => r.taskId === taskId);
    if (done === undefined) return refused(`unknown task ${taskId}`);
    // A late retry of entries we already stored must read as success, or the agent would think it lost them.
    if (entries.every((e) => e.seq <= done.lastSeq)) return { status: "duplicate" };
    return refused(`task ${taskId} is ${describeOutcome(done.outcome)}`);
  }

  // Overlap with what is stored happens when an agent retries after a lost answer: keep only the new tail.
  const fresh = entries.filter((e) => e.seq > active.lastSeq);
  if (fresh.length === 0) return { status: "duplicate" };

  // Check each entry against the state as the earlier entries of this same report leave it, and
  // refuse the whole report on the first bad one so a commit never holds half a report.
  let cursor = state;
  const events: SlotEventBody[] = [];
  for (const entry of fresh) {
    const current = cursor.active;
    if (current === null) return refused(`${entry.kind} at seq ${entry.seq} comes after task ${taskId} ended`);
    const expected = current.lastSeq + 1;
    if (entry.seq !== expected) return refused(`out of order: expected seq ${expected}, got ${entry.seq}`);
    const illegal = illegalTransition(current, entry);
    if (illegal !== undefined) return refused(illegal);
    const body = eventFor(taskId, entry);
    events.push(body);
    cursor = evolveSlot(cursor, body);
  }
  return { status: "accepted", events };
}

function refused(reason: string): ReportResult {
  return { status: "refused", reason };
}

function describeOutcome(outcome: TaskOutcome): string {
  switch (outcome) {
    case "succeeded":
    case "failed":
    case "rejected":
      return `finished (${outcome})`;
    case "timed-out":
      return "timed out";
    case "cancelled":
      return "withdrawn (cancelled)";
    default:
      return unreachable(outcome);
  }
}

function illegalTransition(task: ActiveTask, entry: JournalEntry): string | undefined {
  const what = `${entry.kind} at seq ${entry.seq}`;
  const notAccepted = task.status === "running" ? undefined : `${what}: task ${task.taskId} has not been accepted`;
  const stepOpen = task.openStep === null ? undefined : `${what}: step ${task.openStep} is still open`;
  switch (entry.kind) {
    case "accepted":
      return task.status === "running" ? `${what}: task ${task.taskId} is already running` : undefined;
    case "step-started":
    case "rolled-back":
    case "succeeded":
    case "failed":
      return notAccepted ?? stepOpen;
    case "step-succeeded":
    case "step-failed":
      if (notAccepted !== undefined) return notAccepted;
      if (task.openStep === entry.step) return undefined;
      return task.openStep === null
        ? `${what}: step ${entry.step} is not open`
        : `${what}: step ${entry.step} is not open (step ${task.openStep} is)`;
    case "rejected":
      // A second client that finds the component locked ends at once, with or without accepting first.
      return stepOpen;
    default:
      return unreachable(entry);
  }
}

function eventFor(taskId: string, entry: JournalEntry): SlotEventBody {
  switch (entry.kind) {
    case "accepted":
      return { type: "TaskAccepted", data: { taskId, seq: entry.seq, at: entry.at } };
    case "step-started":
      return { type: "TaskStepStarted", data: { taskId, seq: entry.seq, step: entry.step, at: entry.at } };
    case "step-succeeded":
    case "step-failed": {
      const ended = { taskId, seq: entry.seq, step: entry.step, at: entry.at, durationMs: entry.durationMs };
      return entry.kind === "step-succeeded"
        ? { type: "TaskStepSucceeded", data: { ...ended, ...(entry.detail !== undefined ? { detail: entry.detail } : {}) } }
        : { type: "TaskStepFailed", data: { ...ended, error: entry.error, ...(entry.logTail !== undefined ? { logTail: entry.logTail } : {}) } };
    }
    case "rolled-back":
      return { type: "TaskRolledBack", data: { taskId, seq: entry.seq, at: entry.at, reason: entry.reason } };
    case "succeeded":
      return { type: "TaskSucceeded", data: { taskId, seq: entry.seq, at: entry.at, version: entry.version } };
    case "failed":
      return {
        type: "TaskFailed",
        data: {
          taskId,
          seq: entry.seq,
          at: entry.at,
          reason: entry.reason,
          ...(entry.step !== undefined ? { step: entry.step } : {}),
        },
      };
    case "rejected":
      return { type: "TaskRejected", data: { taskId, seq: entry.seq, at: entry.at, reason: entry.reason } };
    default:
      return unreachable(entry);
  }
}
