import type { Batch, HostState, PackageRef, SkippedHost } from "@molt/contracts";

export interface PlanInput {
  component: string;
  version: string;
  hosts: readonly string[];
  /** What the fleet knows of each host (null: never heard from). */
  hostStates: ReadonlyMap<string, HostState | null>;
  /** The published package per platform, for this component and version. */
  packages: ReadonlyMap<string, PackageRef>;
}

/**
 * The pure planner: which hosts get a task, in which batch, with which package variant, and
 * which are skipped and why. Everything is resolved here once and written into
 * DeploymentPlanned, so a replay never re-resolves. (One batch for now; canary, batch sizes
 * and ordering come with the roll engine.)
 */
export function planDeployment(input: PlanInput): { packages: Record<string, PackageRef>; batches: Batch[]; skipped: SkippedHost[] } {
  const packages: Record<string, PackageRef> = {};
  const planned: Batch["hosts"] = [];
  const skipped: SkippedHost[] = [];
  for (const hostId of input.hosts) {
    const host = input.hostStates.get(hostId) ?? null;
    if (!host) {
      skipped.push({ hostId, reason: "not registered: no heartbeat from this host yet" });
      continue;
    }
    const fromVersion = host.components[input.component] ?? null;
    if (fromVersion === input.version) {
      skipped.push({ hostId, reason: `already at ${input.component} ${input.version}` });
      continue;
    }
    const pkg = input.packages.get(host.platform);
    if (!pkg) {
      skipped.push({ hostId, reason: `no package ${input.component} ${input.version} for platform ${host.platform}` });
      continue;
    }
    packages[host.platform] = pkg;
    planned.push({ hostId, fromVersion, platform: host.platform });
  }
  return { packages, batches: planned.length > 0 ? [{ index: 0, kind: "batch", hosts: planned }] : [], skipped };
}
