import {
  Strategy,
  type BatchSummary,
  type DeploymentEvent,
  type DeploymentKind,
  type EventOf,
  type HostOutcome,
  type PackageRef,
  type PlannedHost,
  type Selector,
} from "@molt/contracts";
import { unreachable, type EventBody } from "../decider.js";

export type DeploymentEventBody = EventBody<DeploymentEvent>;
export type DeploymentStatus = "none" | "requested" | "planned" | "running" | "paused" | "completed" | "failed" | "cancelled";
export type SkippedHost = EventOf<"PlanPartRecorded">["data"]["skipped"][number];
export type BatchKind = BatchSummary["kind"];

/** One planned host: where it is in the plan and how its latest task ended. */
export interface HostEntry {
  batch: number;
  fromVersion: string | null;
  platform: string;
  /** Its own target when it differs from the deployment's (rollbacks). */
  version?: string;
  /** The attempt of its latest assignment; 0 while never assigned. */
  attempt: number;
  /** How the latest assignment ended; null while it is in flight or not assigned. */
  outcome: HostOutcome | null;
}

/**
 * A batch with its counters: completion and the brake are decided from these counts, never by
 * re-reading slots. Hosts are assigned in `hosts` order; `assigned` is the cursor.
 */
export interface BatchState {
  index: number;
  kind: BatchKind;
  hosts: string[];
  started: boolean;
  assigned: number;
  /** Outcomes recorded while the host belonged to this batch. */
  finished: number;
  succeeded: number;
  failed: number;
  completed: { succeeded: number; failed: number; at: string | null } | null;
}

export interface DeploymentState {
  status: DeploymentStatus;
  /** Null only while status is 'none'. */
  deploymentId: string | null;
  component: string | null;
  version: string | null;
  kind: DeploymentKind;
  origin: string | null;
  hosts: string[];
  selector: Selector | null;
  requestHash: string | null;
  idempotencyKey: string | null;
  taskTimeoutMs: number | null;
  allowEmpty: boolean;
  strategy: Strategy;
  /** Set by DeploymentPlanned, which can land while paused, so status alone does not tell. */
  planned: boolean;
  /** Parts of the plan being recorded (before the seal), by plan id. */
  pendingPlan: { planId: string; parts: number[]; batches: Map<number, PlannedHost[]> } | null;
  packages: Record<string, PackageRef>;
  batches: BatchState[];
  hostIndex: Map<string, HostEntry>;
  skipped: SkippedHost[];
  attempt: number;
  /** Assigned hosts whose outcome is not recorded yet. */
  inFlight: number;
  /** The status a resume returns to; null unless paused. */
  pausedFrom: "requested" | "planned" | "running" | null;
  /** The canary batch waiting for an operator's approval, if any. */
  awaitingApproval: number | null;
  approved: boolean;
  braked: { failed: number; finished: number; threshold: number } | null;
  /** When the last batch completed (from its event), for the pause before the next one. */
  lastCompletedAt: string | null;
  /** The brake's figures when the current attempt began: a retry judges only its own results. */
  brakeBase: { failed: number; finished: number };
  /** Operator commands already applied, by idempotency key → event type. */
  commandKeys: Map<string, string>;
}

export const DEFAULT_STRATEGY: Strategy = Strategy.parse({});

export function initialDeploymentState(): DeploymentState {
  return {
    status: "none",
    deploymentId: null,
    component: null,
    version: null,
    kind: "upgrade",
    origin: null,
    hosts: [],
    selector: null,
    requestHash: null,
    idempotencyKey: null,
    taskTimeoutMs: null,
    allowEmpty: false,
    strategy: DEFAULT_STRATEGY,
    planned: false,
    pendingPlan: null,
    packages: {},
    batches: [],
    hostIndex: new Map(),
    skipped: [],
    attempt: 1,
    inFlight: 0,
    pausedFrom: null,
    awaitingApproval: null,
    approved: false,
    braked: null,
    lastCompletedAt: null,
    commandKeys: new Map(),
    brakeBase: { failed: 0, finished: 0 },
  };
}

const FAILED: ReadonlySet<HostOutcome> = new Set(["failed", "rejected", "timed-out"]);
/**
 * Outcomes a retry runs again: the host did not get the version. `cancelled` is among them: in a
 * deployment that can be retried (not cancelled by an operator) it means the engine withdrew the
 * host before its task was allocated (the deployment braked or failed first).
 */
export const RETRIED: ReadonlySet<HostOutcome> = new Set(["failed", "rejected", "timed-out", "busy", "cancelled"]);
export const isFailure = (o: HostOutcome): boolean => FAILED.has(o);

/**
 * Accepts full envelopes as well as bodies: only `type` and `data` matter to the state.
 * `hostIndex` is updated in place (copying a 10,000-entry map per outcome would make a rollout
 * O(N²)): a state value owns its map, so fold events into the newest state only, never into an
 * older snapshot.
 */
export function evolveDeployment(state: DeploymentState, event: DeploymentEventBody): DeploymentState {
  if ("commandKey" in event.data && event.data.commandKey !== undefined) state.commandKeys.set(event.data.commandKey, event.type);
  switch (event.type) {
    case "DeploymentRequested": {
      const d = event.data;
      return {
        ...state,
        status: "requested",
        deploymentId: d.deploymentId,
        component: d.component,
        version: d.version,
        kind: d.kind ?? "upgrade",
        origin: d.origin ?? null,
        hosts: d.hosts,
        selector: d.selector ?? null,
        requestHash: d.requestHash,
        idempotencyKey: d.idempotencyKey,
        taskTimeoutMs: d.taskTimeoutMs,
        allowEmpty: d.allowEmpty ?? false,
        strategy: d.strategy ?? DEFAULT_STRATEGY,
      };
    }
    case "PlanPartRecorded": {
      const d = event.data;
      if (state.planned) return state;
      // A part of another plan id means a replica re-planned: its parts replace the older ones.
      const pending =
        state.pendingPlan?.planId === d.planId ? state.pendingPlan : { planId: d.planId, parts: [], batches: new Map<number, PlannedHost[]>() };
      if (pending.parts.includes(d.part)) return state;
      const batches = new Map(pending.batches);
      for (const b of d.batches) batches.set(b.index, [...(batches.get(b.index) ?? []), ...b.hosts]);
      const skipped = state.pendingPlan?.planId === d.planId ? [...state.skipped, ...d.skipped] : [...d.skipped];
      return { ...state, pendingPlan: { planId: d.planId, parts: [...pending.parts, d.part], batches }, skipped };
    }
    case "DeploymentPlanned": {
      const d = event.data;
      const planned = state.pendingPlan?.planId === d.planId ? state.pendingPlan.batches : new Map<number, PlannedHost[]>();
      const hostIndex = new Map<string, HostEntry>();
      const batches: BatchState[] = d.batches.map((summary) => {
        const hosts = planned.get(summary.index) ?? [];
        for (const h of hosts)
          hostIndex.set(h.hostId, {
            batch: summary.index,
            fromVersion: h.fromVersion,
            platform: h.platform,
            ...(h.version !== undefined ? { version: h.version } : {}),
            attempt: 0,
            outcome: null,
          });
        return newBatch(summary.index, summary.kind, hosts.map((h) => h.hostId));
      });
      const skipped = state.pendingPlan?.planId === d.planId ? state.skipped : [];
      const base = { ...state, planned: true, pendingPlan: null, packages: d.packages, batches, hostIndex, skipped };
      if (state.status === "requested") return { ...base, status: "planned" };
      if (state.status === "paused") return { ...base, pausedFrom: "planned" };
      return base;
    }
    case "BatchStarted": {
      const { index } = event.data;
      const batches = updateBatch(state.batches, index, (b) => (b.started ? b : { ...b, started: true }));
      const started = { ...state, batches };
      if (started.status === "planned") return { ...started, status: "running" };
      if (started.status === "paused") return { ...started, pausedFrom: "running" };
      return started;
    }
    case "HostsAssigned": {
      const { attempt, batch, hosts } = event.data;
      let added = 0;
      for (const h of hosts) {
        const entry = state.hostIndex.get(h);
        if (entry === undefined || entry.attempt >= attempt) continue;
        state.hostIndex.set(h, { ...entry, attempt, outcome: null });
        added++;
      }
      const batches = updateBatch(state.batches, batch, (b) => ({ ...b, assigned: b.assigned + added }));
      return { ...state, batches, inFlight: state.inFlight + added };
    }
    case "HostOutcomeRecorded": {
      const { hostId, attempt, outcome } = event.data;
      const entry = state.hostIndex.get(hostId);
      if (entry === undefined || entry.attempt !== attempt || entry.outcome !== null) return state;
      state.hostIndex.set(hostId, { ...entry, outcome });
      const batches = updateBatch(state.batches, entry.batch, (b) => ({
        ...b,
        finished: b.finished + 1,
        succeeded: b.succeeded + (outcome === "succeeded" ? 1 : 0),
        failed: b.failed + (isFailure(outcome) ? 1 : 0),
      }));
      return { ...state, batches, inFlight: state.inFlight - 1 };
    }
    case "BatchCompleted": {
      const { index, succeeded, failed, at } = event.data;
      const batches = updateBatch(state.batches, index, (b) => (b.completed ? b : { ...b, completed: { succeeded, failed, at: at ?? null } }));
      return { ...state, batches, lastCompletedAt: at ?? state.lastCompletedAt };
    }
    case "DeploymentRetried": {
      const { attempt, index } = event.data;
      const hosts: string[] = [];
      for (const [h, entry] of state.hostIndex) {
        if (entry.outcome === null || !RETRIED.has(entry.outcome)) continue;
        hosts.push(h);
        // Unassigned again (attempt 0), so a late report of the old attempt is not counted twice.
        state.hostIndex.set(h, { ...entry, batch: index, attempt: 0, outcome: null });
      }
      const reopened = state.status === "completed" || state.status === "failed" ? "running" : state.status;
      return {
        ...state,
        status: reopened,
        attempt,
        braked: null,
        brakeBase: countedFigures(state),
        batches: [...state.batches, newBatch(index, "retry", hosts)],
      };
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
      return { ...state, awaitingApproval: null, approved: true };
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

function newBatch(index: number, kind: BatchKind, hosts: string[]): BatchState {
  return { index, kind, hosts, started: false, assigned: 0, finished: 0, succeeded: 0, failed: 0, completed: null };
}

function updateBatch(batches: BatchState[], index: number, f: (b: BatchState) => BatchState): BatchState[] {
  const at = batches.findIndex((b) => b.index === index);
  if (at < 0) return batches;
  const next = [...batches];
  next[at] = f(batches[at]!);
  return next;
}

export function isTerminal(state: DeploymentState): boolean {
  return state.status === "completed" || state.status === "failed" || state.status === "cancelled";
}

export function isCompleted(state: DeploymentState, index: number): boolean {
  return state.batches.some((b) => b.index === index && b.completed !== null);
}

/** The hosts assigned and not finished, with the attempt their task belongs to (for cancel). */
export function inFlightHosts(state: DeploymentState): Array<{ hostId: string; attempt: number }> {
  const out: Array<{ hostId: string; attempt: number }> = [];
  for (const [hostId, e] of state.hostIndex) if (e.attempt > 0 && e.outcome === null) out.push({ hostId, attempt: e.attempt });
  return out;
}

/** Totals over every planned host's latest outcome (a host a retry skipped is neither). */
export function totals(state: DeploymentState): { succeeded: number; failed: number } {
  let succeeded = 0;
  let failed = 0;
  for (const e of state.hostIndex.values()) {
    if (e.outcome === "succeeded") succeeded++;
    else if (e.outcome !== null && e.outcome !== "skipped") failed++;
  }
  return { succeeded, failed };
}

/** Hosts skipped: by the plan, and by a retry that found them at the target already. */
export function skippedCount(state: DeploymentState): number {
  let n = state.skipped.length;
  for (const e of state.hostIndex.values()) if (e.outcome === "skipped") n++;
  return n;
}

/**
 * Hosts the brake looks at: finished with a verdict on the package (not busy, not cancelled),
 * since the current attempt began (the failures a retry runs again do not brake it at once).
 */
export function brakeFigures(state: DeploymentState): { failed: number; finished: number } {
  const all = countedFigures(state);
  return { failed: all.failed - state.brakeBase.failed, finished: all.finished - state.brakeBase.finished };
}

function countedFigures(state: DeploymentState): { failed: number; finished: number } {
  let failed = 0;
  let finished = 0;
  for (const b of state.batches) {
    failed += b.failed;
    finished += b.succeeded + b.failed;
  }
  return { failed, finished };
}
