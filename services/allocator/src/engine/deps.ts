import { createHash } from "node:crypto";
import type { MoltEvent } from "@molt/contracts";
import type { CommandMeta } from "@molt/domain";
import type { DeploymentRepository, SlotRepository } from "@molt/aggregates";
import type { EventStore } from "@molt/event-store";
import type { Logger } from "@molt/runtime";
import type { DesiredStates } from "../dispatch/desired.js";
import type { FleetLeases } from "../dispatch/leases.js";
import type { FleetReader } from "../planning/resolve.js";

export interface EngineDeps {
  store: EventStore;
  deployments: DeploymentRepository;
  slots: SlotRepository;
  desired: DesiredStates;
  logger: Logger;
  /** Where hosts download a package variant from (package-repo or the gateway in front of it). */
  downloadUrl: (component: string, version: string, platform: string) => string;
  replicaId: string;
  /** Presence and the fleet index for selectors; without it every named host counts as online. */
  fleet?: FleetReader;
  /** Quarantine a slot after this many failed tasks in a row (0: never). */
  quarantineAfter?: number;
  /** The fleet-wide cap on tasks in flight across all deployments, as KV leases; none: no cap. */
  leases?: FleetLeases;
  /** How soon a deployment waiting for a fleet lease looks again (default 250 ms). */
  leaseRetryMs?: number;
}

/** Deterministic, so every replica (and every redelivery) allocates the same task. */
export function taskIdFor(deploymentId: string, hostId: string, attempt: number): string {
  return `t-${createHash("sha256").update(`${deploymentId}\n${hostId}\n${attempt}`).digest("hex").slice(0, 24)}`;
}

/** The read is behind the message that triggered it: retry the message later. */
export class RetryLater extends Error {}

/**
 * A decision is stamped with the time of the event it reacts to, so every replica (and every
 * redelivery) decides the same thing and computes the same deadlines.
 */
export const metaOf = (e: MoltEvent, now = e.metadata.occurredAt): CommandMeta => ({
  now,
  actor: "allocator",
  correlationId: e.metadata.correlationId,
  causationId: e.id,
});

/**
 * A read must include the commit that triggered it; a replica's direct get may lag behind
 * (R3 clusters). Deciding on such a view could ack a message whose work was never done.
 */
export function fresh<T extends { seq: number }>(loaded: T, atLeast: number, what: string): T {
  if (loaded.seq < atLeast) throw new RetryLater(`stale read of ${what}: at ${loaded.seq}, the trigger is ${atLeast}`);
  return loaded;
}

/** Runs `work` over `items`, `width` at a time. */
export async function pool<T>(items: readonly T[], width: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await work(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
}
