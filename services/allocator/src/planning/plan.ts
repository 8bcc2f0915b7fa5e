import type { Batch, HostState, PackageRef, PlannedHost, SkippedHost, Strategy } from "@molt/contracts";
import { countOf } from "@molt/domain";
import { hostPoint, ringAssign } from "./ring.js";

/** What the planner knows of one candidate host. */
export type Candidate =
  | { hostId: string; state: HostState; online: boolean; quarantined: string | null; target?: string; fromVersion?: string | null }
  | { hostId: string; skip: string };

export interface PlanInput {
  component: string;
  version: string;
  /** Rollbacks carry no package: each host goes back to its own kept copy. */
  kind: "upgrade" | "rollback";
  candidates: readonly Candidate[];
  /** The published package per platform, for this component and version. */
  packages: ReadonlyMap<string, PackageRef>;
  /** Platforms whose variant of this version is yanked, with the yank's reason. */
  yanked?: ReadonlyMap<string, string>;
  strategy: Strategy;
}

export interface Plan {
  packages: Record<string, PackageRef>;
  batches: Batch[];
  skipped: SkippedHost[];
}

/**
 * The pure planner: which hosts get a task, in which batch, with which package variant, and
 * which are skipped and why (at target, offline, no variant, quarantined, unreadable). The
 * canary takes the hosts with the lowest ring positions; the rest go to batches of
 * maxUnavailable by consistent hashing, per cluster when ordered by cluster. Everything is
 * resolved once and recorded, so a replay never re-resolves.
 */
export function planDeployment(input: PlanInput): Plan {
  const packages: Record<string, PackageRef> = {};
  const eligible: Array<PlannedHost & { cluster: string }> = [];
  const skipped: SkippedHost[] = [];
  for (const c of input.candidates) {
    if ("skip" in c) {
      skipped.push({ hostId: c.hostId, reason: c.skip });
      continue;
    }
    const fromVersion = c.fromVersion !== undefined ? c.fromVersion : (c.state.components[input.component] ?? null);
    const target = c.target ?? input.version;
    if (fromVersion === target) {
      skipped.push({ hostId: c.hostId, reason: `already at ${input.component} ${target}` });
      continue;
    }
    if (c.quarantined !== null) {
      skipped.push({ hostId: c.hostId, reason: `quarantined: ${c.quarantined}` });
      continue;
    }
    if (!c.online) {
      skipped.push({ hostId: c.hostId, reason: "offline: no heartbeat within the presence grace period" });
      continue;
    }
    if (input.kind === "upgrade") {
      const pkg = input.packages.get(c.state.platform);
      const yanked = input.yanked?.get(c.state.platform);
      if (!pkg && yanked !== undefined) {
        skipped.push({ hostId: c.hostId, reason: `yanked: ${input.component} ${input.version} for platform ${c.state.platform} (${yanked})` });
        continue;
      }
      if (!pkg) {
        skipped.push({ hostId: c.hostId, reason: `no package ${input.component} ${input.version} for platform ${c.state.platform}` });
        continue;
      }
      packages[c.state.platform] = pkg;
    }
    eligible.push({
      hostId: c.hostId,
      fromVersion,
      platform: c.state.platform,
      ...(c.target !== undefined ? { version: c.target } : {}),
      cluster: c.state.labels["cluster"] ?? "",
    });
  }
  return { packages, batches: toBatches(eligible, input.strategy), skipped };
}

function toBatches(hosts: Array<PlannedHost & { cluster: string }>, strategy: Strategy): Batch[] {
  const strip = ({ cluster: _cluster, ...h }: PlannedHost & { cluster: string }): PlannedHost => h;
  const batches: Batch[] = [];
  let rest = hosts;
  if (strategy.canary !== null && hosts.length > 0) {
    const size = Math.min(hosts.length, countOf(strategy.canary.size, hosts.length));
    const byPoint = [...hosts].sort((a, b) => (hostPoint(a.hostId) < hostPoint(b.hostId) ? -1 : 1));
    const canary = new Set(byPoint.slice(0, size).map((h) => h.hostId));
    batches.push({ index: 0, kind: "canary", hosts: byPoint.slice(0, size).map(strip) });
    rest = hosts.filter((h) => !canary.has(h.hostId));
  }
  const batchSize = countOf(strategy.maxUnavailable, hosts.length);
  const groups = strategy.orderByCluster ? groupByCluster(rest) : [rest];
  for (const group of groups) {
    const count = Math.ceil(group.length / batchSize);
    const of = ringAssign(group.map((h) => h.hostId), count);
    const members: PlannedHost[][] = Array.from({ length: count }, () => []);
    group.forEach((h, i) => members[of[i]!]!.push(strip(h)));
    for (const m of members) if (m.length > 0) batches.push({ index: batches.length, kind: "batch", hosts: m });
  }
  return batches;
}

function groupByCluster<T extends { cluster: string }>(hosts: T[]): T[][] {
  const by = new Map<string, T[]>();
  for (const h of hosts) {
    const group = by.get(h.cluster);
    if (group) group.push(h);
    else by.set(h.cluster, [h]);
  }
  return [...by.keys()].sort().map((k) => by.get(k)!);
}
