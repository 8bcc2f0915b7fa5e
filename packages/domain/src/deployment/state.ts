import type { Batch, DeploymentEvent, EventOf, PackageRef } from "@molt/contracts";
import { unreachable, type EventBody } from "../decider.js";

export type DeploymentEventBody = EventBody<DeploymentEvent>;
export type DeploymentStatus = "none" | "requested" | "planned" | "running" | "paused" | "completed" | "failed" | "cancelled";
export type SkippedHost = EventOf<"DeploymentPlanned">["data"]["skipped"][number];
export type CompletedBatch = { index: number; succeeded: number; failed: number };

export interface DeploymentState {
  status: DeploymentStatus;
  /** Null only while status is 'none'. */
  deploymentId: string | null;
  component: string | null;
  version: string | null;
  hosts: string[];
  requestHash: string | null;
  idempotencyKey: string | null;
  taskTimeoutMs: number | null;
  /** Set by DeploymentPlanned, which can land while paused, so status alone does not tell. */
  planned: boolean;
  packages: Record<string, PackageRef>;
  batches: Batch[];
  skipped: SkippedHost[];
  startedBatches: number[];
  completedBatches: CompletedBatch[];
  /** The status a resume returns to; null unless paused. */
  pausedFrom: "requested" | "planned" | "running" | null;
  /** The canary batch waiting for an operator's approval, if any. */
  awaitingApproval: number | null;
  braked: { failed: number; finished: number; threshold: number } | null;
}

export function initialDeploymentState(): DeploymentState {
  return {
    status: "none",
    deploymentId: null,
    component: null,
    version: null,
    hosts: [],
    requestHash: null,
    idempotencyKey: null,
    taskTimeoutMs: null,
    planned: false,
    packages: {},
    batches: [],
    skipped: [],
    startedBatches: [],
    completedBatches: [],
    pausedFrom: null,
    awaitingApproval: null,
    braked: null,
  };
}

/** Accepts full envelopes as well as bodies: only `type` and `data` matter to the state. */
export function evolveDeployment(state: DeploymentState, event: DeploymentEventBody): DeploymentState {
  switch (event.type) {
    case "DeploymentRequested": {
      const d = event.data;
      return {
        ...state,
        status: "requested",
        deploymentId: d.deploymentId,
        component: d.component,
        version: d.version,
        hosts: d.hosts,
        requestHash: d.requestHash,
        idempotencyKey: d.idempotencyKey,
        taskTimeoutMs: d.taskTimeoutMs,
      };
    }
    case "DeploymentPlanned": {
      const planned = { ...state, planned: true, packages: event.data.packages, batches: event.data.batches, skipped: event.data.skipped };
      if (state.status === "requested") return { ...planned, status: "planned" };
      if (state.status === "paused") return { ...planned, pausedFrom: "planned" };
      return planned;
    }
    case "BatchStarted": {
      const { index } = event.data;
      const started = state.startedBatches.includes(index) ? state : { ...state, startedBatches: [...state.startedBatches, index] };
      if (started.status === "planned") return { ...started, status: "running" };
      if (started.status === "paused") return { ...started, pausedFrom: "running" };
      return started;
    }
    case "BatchCompleted": {
      const { index, succeeded, failed } = event.data;
      if (state.completedBatches.some((b) => b.index === index)) return state;
      return { ...state, completedBatches: [...state.completedBatches, { index, succeeded, failed }] };
    }
    case "DeploymentPaused":
      if (state.status !== "requested" && state.status !== "planned" && state.status !== "running") return state;
      return { ...state, status: "paused", pausedFrom: state.status };
    case "DeploymentResumed":
      if (state.status !== "paused") return state;
      return { ...state, status: state.pausedFrom ?? (state.planned ? "planned" : "requested"), pausedFrom: null };
    case "DeploymentBraked": {
      const { failed, finished, threshold } = event.data;
      return { ...state, braked: { failed, finished, threshold } };
    }
    case "CanaryAwaitingApproval":
      return { ...state, awaitingApproval: event.data.index };
    case "CanaryApproved":
      return { ...state, awaitingApproval: null };
    case "DeploymentCancelled":
      return { ...state, status: "cancelled", pausedFrom: null };
    case "DeploymentCompleted":
      return { ...state, status: "completed", pausedFrom: null };
    case "DeploymentFailed":
      return { ...state, status: "failed", pausedFrom: null };
    default:
      return unreachable(event);
  }
}

export function isTerminal(state: DeploymentState): boolean {
  return state.status === "completed" || state.status === "failed" || state.status === "cancelled";
}

/**
 * The batch the roll engine may start now, or undefined: not while paused, braked, awaiting a
 * canary approval or before the previous batch has completed.
 */
export function nextBatchToStart(state: DeploymentState): number | undefined {
  if (state.status !== "planned" && state.status !== "running") return undefined;
  if (state.braked !== null) return undefined;
  const position = state.batches.findIndex((b) => !state.startedBatches.includes(b.index));
  const next = state.batches[position];
  if (next === undefined) return undefined;
  return startBlocker(state, position) === undefined ? next.index : undefined;
}

/**
 * Why the batch at `position` (in plan order) may not start yet, ignoring status; shared by the
 * query and the decider so they never disagree.
 */
export function startBlocker(state: DeploymentState, position: number): string | undefined {
  if (state.braked !== null) return "the deployment is braked";
  const batch = state.batches[position];
  if (batch === undefined) return `there is no batch at position ${position}`;
  if (state.awaitingApproval !== null && batch.index > state.awaitingApproval)
    return `canary batch ${state.awaitingApproval} awaits approval`;
  const pending = state.batches.slice(0, position).find((b) => !isCompleted(state, b.index));
  return pending === undefined ? undefined : `batch ${pending.index} has not completed`;
}

export function isCompleted(state: DeploymentState, index: number): boolean {
  return state.completedBatches.some((b) => b.index === index);
}
