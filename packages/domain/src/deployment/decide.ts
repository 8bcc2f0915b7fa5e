import type { BatchSummary, EventOf, HostOutcome, PackageRef } from "@molt/contracts";
import { unreachable, type Decider } from "../decider.js";
import { ConflictError, IdempotencyMismatchError, IllegalStateError, NotFoundError, ValidationError } from "../errors.js";
import {
  evolveDeployment,
  initialDeploymentState,
  isTerminal,
  RETRIED,
  skippedCount,
  totals,
  type DeploymentEventBody,
  type DeploymentState,
} from "./state.js";

type PartData = EventOf<"PlanPartRecorded">["data"];

export type RequestDeployment = { type: "RequestDeployment"; data: EventOf<"DeploymentRequested">["data"] };
export type RecordPlanPart = { type: "RecordPlanPart"; data: Omit<PartData, "deploymentId"> };
export type SealPlan = {
  type: "SealPlan";
  data: { planId: string; parts: number; packages: Record<string, PackageRef>; batches: BatchSummary[]; skipped: number };
};
export type FailDeployment = { type: "FailDeployment"; data: { reason: string } };
export type StartBatch = { type: "StartBatch"; data: { index: number } };
/** `from` is the batch's assignment cursor the decision was made at, so a replayed decision is a no-op. */
export type AssignHosts = { type: "AssignHosts"; data: { batch: number; from: number; hosts: string[] } };
export type HostOutcomeData = { hostId: string; attempt: number; outcome: HostOutcome; reason?: string };
/** Outcomes of several hosts in one commit: the deployment is every host's hot spot, so the engine groups them. */
export type RecordHostOutcome = { type: "RecordHostOutcome"; data: { outcomes: HostOutcomeData[] } };
export type CompleteBatch = { type: "CompleteBatch"; data: { index: number; at: string } };
export type BrakeDeployment = { type: "BrakeDeployment"; data: { failed: number; finished: number; threshold: number } };
export type AwaitApproval = { type: "AwaitApproval"; data: { index: number } };
export type CompleteDeployment = { type: "CompleteDeployment"; data: Record<string, never> };
/** Operator commands carry the idempotency key (hashed with the actor) they arrived with. */
type Keyed<T> = T & { commandKey?: string };
export type ApproveCanary = { type: "ApproveCanary"; data: Keyed<object> };
export type CancelDeployment = { type: "CancelDeployment"; data: Keyed<{ reason?: string }> };
export type PauseDeployment = { type: "PauseDeployment"; data: Keyed<{ reason?: string }> };
export type ResumeDeployment = { type: "ResumeDeployment"; data: Keyed<object> };
export type RetryDeployment = { type: "RetryDeployment"; data: Keyed<object> };

/** What the roll engine decides by itself (from nextCommands and from task outcomes). */
export type EngineCommand =
  | RecordPlanPart
  | SealPlan
  | FailDeployment
  | StartBatch
  | AssignHosts
  | RecordHostOutcome
  | CompleteBatch
  | BrakeDeployment
  | AwaitApproval
  | CompleteDeployment;
/** What an operator asks for through `action`. */
export type OperatorCommand = ApproveCanary | CancelDeployment | PauseDeployment | ResumeDeployment | RetryDeployment;
export type DeploymentCommand = RequestDeployment | EngineCommand | OperatorCommand;

export function decideDeployment(command: DeploymentCommand, state: DeploymentState): DeploymentEventBody[] {
  switch (command.type) {
    case "RequestDeployment":
      return request(command.data, state);
    case "RecordPlanPart":
      return recordPlanPart(command.data, state);
    case "SealPlan":
      return seal(command.data, state);
    case "FailDeployment":
      return fail(command.data.reason, state);
    case "StartBatch":
      return startBatch(command.data.index, state);
    case "AssignHosts":
      return assign(command.data, state);
    case "RecordHostOutcome":
      return recordOutcome(command.data, state);
    case "CompleteBatch":
      return completeBatch(command.data, state);
    case "BrakeDeployment":
      return brake(command.data, state);
    case "AwaitApproval":
      return awaitApproval(command.data.index, state);
    case "CompleteDeployment":
      return complete(state);
    case "ApproveCanary":
    case "CancelDeployment":
    case "PauseDeployment":
    case "ResumeDeployment":
    case "RetryDeployment":
      return operator(command, state);
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

function recordPlanPart(data: RecordPlanPart["data"], state: DeploymentState): DeploymentEventBody[] {
  const deploymentId = existing(state);
  if (state.planned) return [];
  if (isTerminal(state)) throw new IllegalStateError(`deployment ${deploymentId} is ${state.status}; it cannot be planned`);
  if (state.pendingPlan?.planId === data.planId && state.pendingPlan.parts.includes(data.part)) return [];
  return [{ type: "PlanPartRecorded", data: { deploymentId, ...data } }];
}

function seal(data: SealPlan["data"], state: DeploymentState): DeploymentEventBody[] {
  const deploymentId = existing(state);
  if (state.planned) return [];
  if (isTerminal(state)) throw new IllegalStateError(`deployment ${deploymentId} is ${state.status}; it cannot be planned`);
  const recorded = data.parts === 0 ? 0 : state.pendingPlan?.planId === data.planId ? state.pendingPlan.parts.length : 0;
  // Another replica re-planned in between (another plan id): its parts are the ones on record now.
  if (recorded !== data.parts)
    throw new ConflictError(`plan ${data.planId} of deployment ${deploymentId} has ${recorded} of its ${data.parts} parts recorded`);
  const planned: DeploymentEventBody = { type: "DeploymentPlanned", data: { deploymentId, ...data } };
  if (data.batches.some((b) => b.size > 0)) return [planned];
  if (state.allowEmpty) return [planned, { type: "DeploymentCompleted", data: { deploymentId, succeeded: 0, failed: 0, skipped: data.skipped } }];
  // Accepted by mistake (the plan preview refuses it): end with the reasons instead of "completed".
  const reasons = state.skipped.slice(0, 5).map((s) => `${s.hostId}: ${s.reason}`);
  return [
    planned,
    {
      type: "DeploymentFailed",
      data: { deploymentId, reason: `every host was skipped (${data.skipped}): ${reasons.join("; ")}`.slice(0, 1000), succeeded: 0, failed: 0 },
    },
  ];
}

/** The deployment cannot go on (e.g. its plan cannot be stored); in-flight tasks still finish. */
function fail(reason: string, state: DeploymentState): DeploymentEventBody[] {
  const deploymentId = existing(state);
  if (isTerminal(state)) return [];
  return [{ type: "DeploymentFailed", data: { deploymentId, reason, ...totals(state) } }];
}

function startBatch(index: number, state: DeploymentState): DeploymentEventBody[] {
  const deploymentId = existing(state);
  const position = state.batches.findIndex((b) => b.index === index);
  if (position < 0) throw new ValidationError(`deployment ${deploymentId} has no batch ${index}`);
  if (state.batches[position]!.started) return [];
  if (state.status !== "planned" && state.status !== "running")
    throw new IllegalStateError(`deployment ${deploymentId} is ${state.status}; batch ${index} cannot start`);
  const blocker = startBlocker(state, position);
  if (blocker !== undefined) throw new IllegalStateError(`batch ${index} of deployment ${deploymentId} cannot start: ${blocker}`);
  return [{ type: "BatchStarted", data: { deploymentId, index } }];
}

/** Why the batch at `position` (in plan order) may not start yet, ignoring status and time. */
export function startBlocker(state: DeploymentState, position: number): string | undefined {
  if (state.braked !== null) return "the deployment is braked";
  if (state.awaitingApproval !== null) return `canary batch ${state.awaitingApproval} awaits approval`;
  const pending = state.batches.slice(0, position).find((b) => b.completed === null);
  if (pending !== undefined) return `batch ${pending.index} has not completed`;
  const canary = state.batches.slice(0, position).find((b) => b.kind === "canary");
  if (canary !== undefined && state.strategy.canary?.approval === true && !state.approved) return `canary batch ${canary.index} awaits approval`;
  return undefined;
}

function assign(data: AssignHosts["data"], state: DeploymentState): DeploymentEventBody[] {
  const deploymentId = existing(state);
  const batch = state.batches.find((b) => b.index === data.batch);
  if (batch === undefined) throw new ValidationError(`deployment ${deploymentId} has no batch ${data.batch}`);
  // The same decision made again (a redelivery, another replica) finds the cursor moved on.
  if (batch.assigned > data.from) return [];
  if (batch.assigned < data.from) throw new ConflictError(`batch ${data.batch} is at host ${batch.assigned}, not ${data.from}`);
  if (state.status !== "running" || state.braked !== null || !batch.started || batch.completed !== null)
    throw new IllegalStateError(`deployment ${deploymentId} is ${describe(state)}; no hosts can be assigned in batch ${data.batch}`);
  const expected = batch.hosts.slice(data.from, data.from + data.hosts.length);
  if (data.hosts.length === 0 || expected.length !== data.hosts.length || expected.some((h, i) => h !== data.hosts[i]))
    throw new ValidationError(`hosts ${data.from}.. of batch ${data.batch} are not the ones named`);
  return [{ type: "HostsAssigned", data: { deploymentId, attempt: state.attempt, batch: data.batch, hosts: data.hosts } }];
}

function recordOutcome(data: RecordHostOutcome["data"], state: DeploymentState): DeploymentEventBody[] {
  const deploymentId = existing(state);
  const seen = new Set<string>();
  const out: DeploymentEventBody[] = [];
  for (const o of data.outcomes) {
    const entry = state.hostIndex.get(o.hostId);
    // Late or repeated news of a task (another attempt, an outcome already counted) changes nothing.
    if (entry === undefined || entry.attempt !== o.attempt || entry.outcome !== null || seen.has(o.hostId)) continue;
    seen.add(o.hostId);
    out.push({ type: "HostOutcomeRecorded", data: { deploymentId, ...o } });
  }
  return out;
}

function completeBatch(data: CompleteBatch["data"], state: DeploymentState): DeploymentEventBody[] {
  const deploymentId = existing(state);
  const batch = state.batches.find((b) => b.index === data.index);
  if (batch === undefined) throw new ValidationError(`deployment ${deploymentId} has no batch ${data.index}`);
  if (batch.completed !== null) return [];
  if (!batch.started) throw new IllegalStateError(`batch ${data.index} of deployment ${deploymentId} has not started`);
  if (batch.assigned < batch.hosts.length || batch.finished < batch.hosts.length)
    throw new IllegalStateError(`batch ${data.index} of deployment ${deploymentId} has ${batch.hosts.length - batch.finished} host(s) not finished`);
  return [{ type: "BatchCompleted", data: { deploymentId, index: data.index, succeeded: batch.succeeded, failed: batch.failed, at: data.at } }];
}

function brake(data: BrakeDeployment["data"], state: DeploymentState): DeploymentEventBody[] {
  const deploymentId = existing(state);
  if (state.braked !== null || isTerminal(state)) return [];
  return [{ type: "DeploymentBraked", data: { deploymentId, ...data } }];
}

function awaitApproval(index: number, state: DeploymentState): DeploymentEventBody[] {
  const deploymentId = existing(state);
  if (state.awaitingApproval !== null || state.approved || isTerminal(state)) return [];
  return [{ type: "CanaryAwaitingApproval", data: { deploymentId, index } }];
}

function complete(state: DeploymentState): DeploymentEventBody[] {
  const deploymentId = existing(state);
  if (isTerminal(state)) return [];
  const open = state.batches.find((b) => b.completed === null);
  if (open !== undefined) throw new IllegalStateError(`batch ${open.index} of deployment ${deploymentId} has not completed`);
  return [{ type: "DeploymentCompleted", data: { deploymentId, ...totals(state), skipped: skippedCount(state) } }];
}

function operator(command: OperatorCommand, state: DeploymentState): DeploymentEventBody[] {
  const deploymentId = existing(state);
  const key = command.data.commandKey;
  const eventType = OPERATOR_EVENTS[command.type];
  if (key !== undefined && state.commandKeys.has(key)) {
    if (state.commandKeys.get(key) === eventType) return [];
    throw new IdempotencyMismatchError(deploymentId, `this idempotency key was already used for ${state.commandKeys.get(key)} on deployment ${deploymentId}`);
  }
  const withKey = key !== undefined ? { commandKey: key } : {};
  const reason = "reason" in command.data && command.data.reason !== undefined ? { reason: command.data.reason } : {};
  switch (command.type) {
    case "ApproveCanary":
      if (isTerminal(state) || state.strategy.canary?.approval !== true || state.approved)
        throw new IllegalStateError(`deployment ${deploymentId} is ${describe(state)}; nothing awaits approval`);
      return [{ type: "CanaryApproved", data: { deploymentId, ...withKey } }];
    case "CancelDeployment":
      if (state.status === "cancelled") return [];
      if (isTerminal(state)) throw new IllegalStateError(`deployment ${deploymentId} is ${state.status}; it cannot be cancelled`);
      return [{ type: "DeploymentCancelled", data: { deploymentId, ...reason, ...withKey } }];
    case "PauseDeployment":
      if (state.status === "paused") return [];
      if (isTerminal(state)) throw new IllegalStateError(`deployment ${deploymentId} is ${state.status}; it cannot be paused`);
      return [{ type: "DeploymentPaused", data: { deploymentId, ...reason, ...withKey } }];
    case "ResumeDeployment":
      if (isTerminal(state)) throw new IllegalStateError(`deployment ${deploymentId} is ${state.status}; it cannot be resumed`);
      if (state.status !== "paused") return [];
      return [{ type: "DeploymentResumed", data: { deploymentId, ...withKey } }];
    case "RetryDeployment": {
      if (state.status === "cancelled" || !state.planned)
        throw new IllegalStateError(`deployment ${deploymentId} is ${state.status}; it cannot be retried`);
      let hosts = 0;
      for (const e of state.hostIndex.values()) if (e.outcome !== null && RETRIED.has(e.outcome)) hosts++;
      if (hosts === 0) throw new IllegalStateError(`deployment ${deploymentId} is ${describe(state)}; no host failed, nothing to retry`);
      const index = Math.max(...state.batches.map((b) => b.index)) + 1;
      return [{ type: "DeploymentRetried", data: { deploymentId, attempt: state.attempt + 1, index, hosts, ...withKey } }];
    }
    default:
      return unreachable(command);
  }
}

const OPERATOR_EVENTS: Record<OperatorCommand["type"], DeploymentEventBody["type"]> = {
  ApproveCanary: "CanaryApproved",
  CancelDeployment: "DeploymentCancelled",
  PauseDeployment: "DeploymentPaused",
  ResumeDeployment: "DeploymentResumed",
  RetryDeployment: "DeploymentRetried",
};

/** The status as an operator reads it in a 409. */
export function describe(state: DeploymentState): string {
  if (state.braked !== null && !isTerminal(state)) return `${state.status} (braked: ${state.braked.failed} of ${state.braked.finished} failed)`;
  if (state.awaitingApproval !== null) return `${state.status} (canary awaits approval)`;
  return state.status;
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
