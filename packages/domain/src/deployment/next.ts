import type { HostCount, Strategy } from "@molt/contracts";
import type { EngineCommand } from "./decide.js";
import { startBlocker } from "./decide.js";
import { brakeFigures, type DeploymentState } from "./state.js";

/** The most hosts one AssignHosts commit names, so the commit stays far below 1 MiB with FQDN ids. */
export const ASSIGN_CHUNK = 1000;

export interface NextStep {
  /** The one command due now (the engine appends it, then asks again), or null. */
  command: EngineCommand | null;
  /** When to ask again if nothing is due before then (a pause between batches), ISO 8601. */
  wakeAt: string | null;
}

/** `percent` of `total` rounded up, at least 1. */
export function countOf(c: HostCount, total: number): number {
  if ("hosts" in c) return c.hosts;
  return Math.max(1, Math.ceil((total * c.percent) / 100));
}

/**
 * The roll engine's rules as one pure function: given the deployment (its counters), its
 * strategy and the time of the event being handled, what is due next. Completion, the brake,
 * assignments within maxUnavailable and the cap, approval and pauses are all decided here;
 * the engine only loads, calls, appends and repeats.
 */
export function nextCommands(state: DeploymentState, strategy: Strategy, now: string): NextStep {
  const none: NextStep = { command: null, wakeAt: null };
  if (state.status !== "running" && state.status !== "planned") return none;

  const b = strategy.brake;
  if (b !== null && state.braked === null) {
    const { failed, finished } = brakeFigures(state);
    if (finished >= b.minFinished && failed / finished > b.threshold)
      return { command: { type: "BrakeDeployment", data: { failed, finished, threshold: b.threshold } }, wakeAt: null };
  }

  const done = state.batches.find((x) => x.started && x.completed === null && x.assigned >= x.hosts.length && x.finished >= x.hosts.length);
  if (done !== undefined) return { command: { type: "CompleteBatch", data: { index: done.index, at: now } }, wakeAt: null };
  if (state.braked !== null) return none;

  const current = state.batches.find((x) => x.started && x.completed === null);
  if (current !== undefined) {
    const limit = Math.min(countOf(strategy.maxUnavailable, state.hostIndex.size), strategy.concurrency ?? Infinity);
    const room = Math.min(limit - state.inFlight, current.hosts.length - current.assigned, ASSIGN_CHUNK);
    if (room <= 0) return none;
    const hosts = current.hosts.slice(current.assigned, current.assigned + room);
    return { command: { type: "AssignHosts", data: { batch: current.index, from: current.assigned, hosts } }, wakeAt: null };
  }

  const position = state.batches.findIndex((x) => !x.started);
  if (position < 0) return state.batches.every((x) => x.completed !== null) ? { command: { type: "CompleteDeployment", data: {} }, wakeAt: null } : none;
  const next = state.batches[position]!;
  const canary = state.batches.slice(0, position).find((x) => x.kind === "canary");
  if (canary !== undefined && strategy.canary?.approval === true && !state.approved)
    return state.awaitingApproval === null ? { command: { type: "AwaitApproval", data: { index: canary.index } }, wakeAt: null } : none;
  if (startBlocker(state, position) !== undefined) return none;
  const pause = position >= 2 && strategy.pauseFromThirdMs !== null ? strategy.pauseFromThirdMs : strategy.pauseMs;
  if (position > 0 && next.kind !== "retry" && pause > 0 && state.lastCompletedAt !== null) {
    const due = Date.parse(state.lastCompletedAt) + pause;
    if (Date.parse(now) < due) return { command: null, wakeAt: new Date(due).toISOString() };
  }
  return { command: { type: "StartBatch", data: { index: next.index } }, wakeAt: null };
}
