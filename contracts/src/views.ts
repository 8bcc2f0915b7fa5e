import { z } from "zod";
import { Labels } from "./events.js";
import { ComponentName, HostId, Platform, Timestamp, Version } from "./ids.js";

// The read models' shapes as the projector serves them (through the gateway): the dashboard, the
// CLI and tests parse what they read with these, so a view cannot drift from its consumers.

/** One host of the fleet view: what it is, what it runs, whether it is heartbeating. */
export const HostView = z.object({
  hostId: HostId,
  os: z.string(),
  arch: z.string(),
  platform: Platform,
  labels: Labels,
  /** The `cluster` label, if the host has one. */
  cluster: z.string().nullable(),
  /** Installed version per component (null: observed as not installed). */
  components: z.record(ComponentName, Version.nullable()),
  registeredAt: Timestamp,
  /** When the host's last heartbeat reached the bus (server time), if presence knows it. */
  lastSeenAt: Timestamp.nullable(),
  /** A heartbeat within the presence grace period. */
  online: z.boolean(),
});
export type HostView = z.infer<typeof HostView>;

export const HostList = z.object({
  hosts: z.array(HostView),
  /** Pass as `after` for the next page; null on the last page. */
  next: HostId.nullable(),
});
export type HostList = z.infer<typeof HostList>;

/** How many hosts run each version of a component (`null`: not installed where observed). */
export const VersionDistribution = z.object({
  component: ComponentName,
  total: z.number().int().nonnegative(),
  versions: z.array(z.object({ version: Version.nullable(), hosts: z.number().int().nonnegative() })),
});
export type VersionDistribution = z.infer<typeof VersionDistribution>;

export const FleetVersions = z.object({ components: z.array(VersionDistribution) });
export type FleetVersions = z.infer<typeof FleetVersions>;
