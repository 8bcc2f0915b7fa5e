import type { Batch, EventOf, PackageRef } from "@molt/contracts";
import { unreachable, type Decider } from "../decider.js";
import { IdempotencyMismatchError, IllegalStateError, NotFoundError, ValidationError } from "../errors.js";
import {
  evolveDeployment,
  initialDeploymentState,
  isCompleted,
  isTerminal,
  startBlocker,
  type DeploymentEventBody,
  type DeploymentState,
  type SkippedHost,
} from "./state.js";

export type RequestDeployment = { type: "RequestDeployment"; data: EventOf<"DeploymentRequested">["data"] };
export type PlanDeployment = {
  type: "PlanDeployment";
  data: { packages: Record<string, PackageRef>; batches: Batch[]; skipped: SkippedHost[] };
};
export type FailDeployment = { type: "FailDeployment"; data: { reason: string } };
export type StartBatch = { type: "StartBatch"; data: { index: number } };
export type CompleteBatch = { type: "CompleteBatch"; data: { index: number; succeeded: number; failed: number } };
export type CancelDeployment = { type: "CancelDeployment"; data: { reason?: string } };
export type PauseDeployment = { type: "PauseDeployment"; data: { reason?: string } };
export type ResumeDeployment = { type: "ResumeDeployment"; data: Record<string, never> };
export type DeploymentCommand =
  | RequestDeployment
  | PlanDeployment
  | StartBatch
  | CompleteBatch
  | CancelDeployment
  | PauseDeployment
  | ResumeDeployment
  | FailDeployment;

export function decideDeployment(command: DeploymentCommand, state: DeploymentState): DeploymentEventBody[] {
  switch (command.type) {
    case "RequestDeployment":
      return request(command.data, state);
    case "PlanDeployment":
      return plan(command.data, state);
    case "StartBatch":
      return startBatch(command.data.index, state);
    case "CompleteBatch":
      return completeBatch(command.data, state);
    case "CancelDeployment":
      return cancel(command.data.reason, state);
    case "PauseDeployment":
      return pause(command.data.reason, state);
    case "ResumeDeployment":
      return resume(state);
    case "FailDeployment":
      return fail(command.data.reason, state);
    default:
      return unreachable(command);
  }
}

function request(data: RequestDeployment["data"], state: DeploymentState): DeploymentEventBody[] {
  if (state.status === "none") return [{ type: "DeploymentRequested", data }];
  // The id derives from the idempotency key, so an existing aggregate means the key was used before.
  if (state.requestHash === data.requestHash) return [];
  throw new IdempotencyMismatchError(data.deploymentId);
}

function plan(data: PlanDeployment["data"], state: DeploymentState): DeploymentEventBody[] {
  const deploymentId = existing(state);
  if (state.planned) return [];
  if (isTerminal(state)) throw new IllegalStateError(`deployment ${deploymentId} is ${state.status}; it cannot be planned`);
  const planned: DeploymentEventBody = {
    type: "DeploymentPlanned",
    data: { deploymentId, packages: data.packages, batches: data.batches, skipped: data.skipped },
  };
  // With every host skipped no batch will ever complete, so nothing else would end the deployment.
  if (!data.batches.every((b) => b.hosts.length === 0)) return [planned];
  return [
    planned,
    { type: "DeploymentCompleted", data: { deploymentId, succeeded: 0, failed: 0, skipped: data.skipped.length } },
  ];
}

/** The deployment cannot go on (e.g. its plan cannot be stored); in-flight tasks still finish. */
function fail(reason: string, state: DeploymentState): DeploymentEventBody[] {
  const deploymentId = existing(state);
  if (isTerminal(state)) return [];
  const succeeded = state.completedBatches.reduce((n, b) => n + b.succeeded, 0);
  const failed = state.completedBatches.reduce((n, b) => n + b.failed, 0);
  return [{ type: "DeploymentFailed", data: { deploymentId, reason, succeeded, failed } }];
}

function startBatch(index: number, state: DeploymentState): DeploymentEventBody[] {
  const deploymentId = existing(state);
  if (state.startedBatches.includes(index)) return [];
  if (state.status !== "planned" && state.status !== "running")
    throw new IllegalStateError(`deployment ${deploymentId} is ${state.status}; batch ${index} cannot start`);
  const position = state.batches.findIndex((b) => b.index === index);
  if (position < 0) throw new ValidationError(`deployment ${deploymentId} has no batch ${index}`);
  const blocker = startBlocker(state, position);
  if (blocker !== undefined) throw new IllegalStateError(`batch ${index} of deployment ${deploymentId} cannot start: ${blocker}`);
  return [{ type: "BatchStarted", data: { deploymentId, index } }];
}

function completeBatch(data: CompleteBatch["data"], state: DeploymentState): DeploymentEventBody[] {
  const deploymentId = existing(state);
  const { index, succeeded, failed } = data;
  if (isCompleted(state, index)) return [];
  if (!state.startedBatches.includes(index))
    throw new IllegalStateError(`batch ${index} of deployment ${deploymentId} has not started`);
  const completed: DeploymentEventBody = { type: "BatchCompleted", data: { deploymentId, index, succeeded, failed } };
  // In-flight tasks finish after a cancel or failure; their batch still completes, the deployment does not.
  if (isTerminal(state)) return [completed];
  const after = evolveDeployment(state, completed);
  if (!after.batches.every((b) => isCompleted(after, b.index))) return [completed];
  const totals = after.completedBatches.reduce((t, b) => ({ succeeded: t.succeeded + b.succeeded, failed: t.failed + b.failed }), {
    succeeded: 0,
    failed: 0,
  });
  return [completed, { type: "DeploymentCompleted", data: { deploymentId, ...totals, skipped: state.skipped.length } }];
}

function cancel(reason: string | undefined, state: DeploymentState): DeploymentEventBody[] {
  const deploymentId = existing(state);
  if (state.status === "cancelled") return [];
  if (isTerminal(state)) throw new IllegalStateError(`deployment ${deploymentId} is ${state.status}; it cannot be cancelled`);
  return [{ type: "DeploymentCancelled", data: { deploymentId, ...(reason !== undefined ? { reason } : {}) } }];
}

function pause(reason: string | undefined, state: DeploymentState): DeploymentEventBody[] {
  const deploymentId = existing(state);
  if (state.status === "paused") return [];
  if (isTerminal(state)) throw new IllegalStateError(`deployment ${deploymentId} is ${state.status}; it cannot be paused`);
  return [{ type: "DeploymentPaused", data: { deploymentId, ...(reason !== undefined ? { reason } : {}) } }];
}

function resume(state: DeploymentState): DeploymentEventBody[] {
  const deploymentId = existing(state);
  if (isTerminal(state)) throw new IllegalStateError(`deployment ${deploymentId} is ${state.status}; it cannot be resumed`);
  if (state.status !== "paused") return [];
  return [{ type: "DeploymentResumed", data: { deploymentId } }];
}

function existing(state: DeploymentState): string {
  if (state.status === "none" || state.deploymentId === null) throw new NotFoundError("deployment does not exist");
  return state.deploymentId;
}

export const deploymentDecider: Decider<DeploymentState, DeploymentCommand, DeploymentEventBody, DeploymentEventBody[]> = {
  decide: decideDeployment,
  evolve: evolveDeployment,
  initialState: initialDeploymentState,
};
