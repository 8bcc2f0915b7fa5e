import type { EventOf, SlotState, StepReport } from "@molt/contracts";
import { unreachable, type Decider } from "../decider.js";
import { IllegalStateError, SlotBusyError } from "../errors.js";
import { recordReport, type ReportResult } from "./report.js";
import { evolveSlot, initialSlotState, type SlotEventBody } from "./state.js";

export type AllocateTask = { type: "AllocateTask"; data: EventOf<"TaskAllocated">["data"] };
export type DispatchTask = { type: "DispatchTask"; data: { taskId: string; revision: number } };
export type RecordReport = { type: "RecordReport"; data: { report: StepReport } };
/** `now` is an ISO 8601 date-time from the caller's clock. */
export type TimeOutTask = { type: "TimeOutTask"; data: { taskId: string; now: string } };
export type CancelTask = { type: "CancelTask"; data: { taskId: string; reason: string } };
export type QuarantineSlot = { type: "QuarantineSlot"; data: { hostId: string; component: string; reason: string; by: "failures" | "operator" } };
export type ClearQuarantine = { type: "ClearQuarantine"; data: { hostId: string; component: string } };
export type SlotCommand = AllocateTask | DispatchTask | RecordReport | TimeOutTask | CancelTask | QuarantineSlot | ClearQuarantine;

export type SlotDecision = SlotEventBody[] | ReportResult;

export function decideSlot(command: RecordReport, state: SlotState): ReportResult;
export function decideSlot(command: Exclude<SlotCommand, RecordReport>, state: SlotState): SlotEventBody[];
export function decideSlot(command: SlotCommand, state: SlotState): SlotDecision;
export function decideSlot(command: SlotCommand, state: SlotState): SlotDecision {
  switch (command.type) {
    case "AllocateTask":
      return allocate(command.data, state);
    case "DispatchTask":
      return dispatch(command.data, state);
    case "RecordReport":
      return recordReport(command.data.report, state);
    case "TimeOutTask":
      return timeOut(command.data, state);
    case "CancelTask":
      return cancel(command.data, state);
    case "QuarantineSlot":
      return state.quarantined ? [] : [{ type: "HostQuarantined", data: command.data }];
    case "ClearQuarantine":
      if (!state.quarantined) throw new IllegalStateError(`${command.data.hostId} (${command.data.component}) is not quarantined`);
      return [{ type: "HostQuarantineCleared", data: command.data }];
    default:
      return unreachable(command);
  }
}

function allocate(data: AllocateTask["data"], state: SlotState): SlotEventBody[] {
  // Task ids are deterministic, so seeing the same one again is the allocator's own redelivery.
  if (state.active?.taskId === data.taskId || isRecent(state, data.taskId)) return [];
  if (state.active !== null) throw new SlotBusyError(data.taskId, state.active.taskId);
  return [{ type: "TaskAllocated", data }];
}

function dispatch(data: DispatchTask["data"], state: SlotState): SlotEventBody[] {
  const active = state.active;
  if (active?.taskId === data.taskId) return active.status === "allocated" ? [{ type: "TaskDispatched", data }] : [];
  if (isRecent(state, data.taskId)) return [];
  throw new IllegalStateError(`cannot dispatch task ${data.taskId}: it was never allocated on this slot`);
}

function timeOut(data: TimeOutTask["data"], state: SlotState): SlotEventBody[] {
  const active = state.active;
  if (active?.taskId !== data.taskId) return [];
  // Parse rather than compare strings: ISO timestamps may differ in fractional-second precision.
  if (Date.parse(data.now) < Date.parse(active.deadline)) return [];
  return [{ type: "TaskTimedOut", data: { taskId: active.taskId, deadline: active.deadline } }];
}

function cancel(data: CancelTask["data"], state: SlotState): SlotEventBody[] {
  const active = state.active;
  // Once the host has accepted, stopping half-way would be worse than letting it finish or roll back.
  if (active?.taskId !== data.taskId || active.status === "running") return [];
  return [{ type: "TaskCancelled", data }];
}

function isRecent(state: SlotState, taskId: string): boolean {
  return state.recent.some((r) => r.taskId === taskId);
}

export const slotDecider: Decider<SlotState, SlotCommand, SlotEventBody, SlotDecision> = {
  decide: decideSlot,
  evolve: evolveSlot,
  initialState: initialSlotState,
};
