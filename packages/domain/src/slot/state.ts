import type { SlotEvent, SlotState, TaskOutcome } from "@molt/contracts";
import { unreachable, type EventBody } from "../decider.js";

export type SlotEventBody = EventBody<SlotEvent>;
type ActiveTask = NonNullable<SlotState["active"]>;

/** Enough finished tasks to recognise late duplicates from agents that were offline for a while. */
export const SLOT_RECENT_LIMIT = 20;

export function initialSlotState(): SlotState {
  return { active: null, recent: [], version: null };
}

/** Accepts full envelopes as well as bodies: only `type` and `data` matter to the state. */
export function evolveSlot(state: SlotState, event: SlotEventBody): SlotState {
  switch (event.type) {
    case "TaskAllocated": {
      const d = event.data;
      return {
        ...state,
        active: {
          taskId: d.taskId,
          deploymentId: d.deploymentId,
          version: d.version,
          attempt: d.attempt,
          status: "allocated",
          lastSeq: 0,
          openStep: null,
          deadline: d.deadline,
        },
      };
    }
    case "TaskDispatched":
      // A redelivered dispatch after the host already reported must not move the task back.
      return updateActive(state, event.data.taskId, (a) => (a.status === "allocated" ? { ...a, status: "dispatched" } : a));
    case "TaskAccepted":
      return updateActive(state, event.data.taskId, (a) => ({ ...a, status: "running", lastSeq: event.data.seq }));
    case "TaskStepStarted":
      return updateActive(state, event.data.taskId, (a) => ({ ...a, openStep: event.data.step, lastSeq: event.data.seq }));
    case "TaskStepSucceeded":
    case "TaskStepFailed":
      return updateActive(state, event.data.taskId, (a) => ({ ...a, openStep: null, lastSeq: event.data.seq }));
    case "TaskRolledBack":
      return updateActive(state, event.data.taskId, (a) => ({ ...a, lastSeq: event.data.seq }));
    case "TaskSucceeded": {
      const finished = finish(state, event.data.taskId, "succeeded", event.data.seq);
      return finished === state ? state : { ...finished, version: event.data.version };
    }
    case "TaskFailed":
      return finish(state, event.data.taskId, "failed", event.data.seq);
    case "TaskRejected":
      return finish(state, event.data.taskId, "rejected", event.data.seq);
    case "TaskTimedOut":
      return finish(state, event.data.taskId, "timed-out");
    case "TaskCancelled":
      return finish(state, event.data.taskId, "cancelled");
    case "HostQuarantined":
      return { ...state, quarantined: { reason: event.data.reason, by: event.data.by } };
    case "HostQuarantineCleared":
      return { ...state, quarantined: null };
    default:
      return unreachable(event);
  }
}

function updateActive(state: SlotState, taskId: string, f: (active: ActiveTask) => ActiveTask): SlotState {
  if (state.active === null || state.active.taskId !== taskId) return state;
  return { ...state, active: f(state.active) };
}

function finish(state: SlotState, taskId: string, outcome: TaskOutcome, lastSeq?: number): SlotState {
  const a = state.active;
  if (a === null || a.taskId !== taskId) return state;
  const done = { taskId, deploymentId: a.deploymentId, outcome, lastSeq: lastSeq ?? a.lastSeq, attempt: a.attempt };
  return { ...state, active: null, recent: [done, ...state.recent].slice(0, SLOT_RECENT_LIMIT) };
}

export function isActive(state: SlotState, taskId: string): boolean {
  return state.active?.taskId === taskId;
}

/** How a finished task ended; undefined while it is active or when it is unknown (or aged out of `recent`). */
export function outcomeOf(state: SlotState, taskId: string): TaskOutcome | undefined {
  return state.recent.find((r) => r.taskId === taskId)?.outcome;
}
