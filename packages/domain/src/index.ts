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
export type { AllocateTask, CancelTask, ClearQuarantine, DispatchTask, QuarantineSlot, RecordReport, SlotCommand, SlotDecision, TimeOutTask } from "./slot/decide.js";

export {
  brakeFigures,
  DEFAULT_STRATEGY,
  evolveDeployment,
  inFlightHosts,
  initialDeploymentState,
  isCompleted,
  isFailure,
  isTerminal,
  totals,
} from "./deployment/state.js";
export type { BatchState, DeploymentEventBody, DeploymentState, DeploymentStatus, HostEntry, SkippedHost } from "./deployment/state.js";
export { decideDeployment, deploymentDecider, describe as describeDeployment, startBlocker } from "./deployment/decide.js";
export type {
  ApproveCanary,
  AssignHosts,
  AwaitApproval,
  BrakeDeployment,
  CancelDeployment,
  CompleteBatch,
  CompleteDeployment,
  DeploymentCommand,
  EngineCommand,
  FailDeployment,
  HostOutcomeData,
  OperatorCommand,
  PauseDeployment,
  RecordHostOutcome,
  RecordPlanPart,
  RequestDeployment,
  ResumeDeployment,
  RetryDeployment,
  SealPlan,
  StartBatch,
} from "./deployment/decide.js";
export { ASSIGN_CHUNK, countOf, nextCommands } from "./deployment/next.js";
export type { NextStep } from "./deployment/next.js";
