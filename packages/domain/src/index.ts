export { toEnvelopes, unreachable } from "./decider.js";
export type { CommandMeta, Decider, Envelope, EventBody, EventBodyOf } from "./decider.js";
export {
  ConflictError,
  DomainError,
  IdempotencyMismatchError,
  IllegalStateError,
  NotFoundError,
  SlotBusyError,
  ValidationError,
} from "./errors.js";
export type { DomainErrorCode } from "./errors.js";

export { evolveSlot, initialSlotState, isActive, outcomeOf, SLOT_RECENT_LIMIT } from "./slot/state.js";
export type { SlotEventBody } from "./slot/state.js";
export type { ReportResult } from "./slot/report.js";
export { decideSlot, slotDecider } from "./slot/decide.js";
export type { AllocateTask, CancelTask, DispatchTask, RecordReport, SlotCommand, SlotDecision, TimeOutTask } from "./slot/decide.js";

export { evolveDeployment, initialDeploymentState, isTerminal, nextBatchToStart } from "./deployment/state.js";
export type {
  CompletedBatch,
  DeploymentEventBody,
  DeploymentState,
  DeploymentStatus,
  SkippedHost,
} from "./deployment/state.js";
export { decideDeployment, deploymentDecider } from "./deployment/decide.js";
export type {
  CancelDeployment,
  CompleteBatch,
  DeploymentCommand,
  FailDeployment,
  PauseDeployment,
  PlanDeployment,
  RequestDeployment,
  ResumeDeployment,
  StartBatch,
} from "./deployment/decide.js";
