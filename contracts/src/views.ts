import { z } from "zod";
import { HostOutcome, Labels } from "./events.js";
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

export const TASK_STATES = ["allocated", "dispatched", "running", "succeeded", "failed", "rejected", "timed-out", "cancelled"] as const;
export const TaskStateView = z.enum(TASK_STATES);
export type TaskStateView = z.infer<typeof TaskStateView>;

export const StepView = z.object({
  seq: z.number().int(),
  step: z.string(),
  state: z.enum(["running", "succeeded", "failed"]),
  startedAt: Timestamp.nullable(),
  endedAt: Timestamp.nullable(),
  durationMs: z.number().nullable(),
  error: z.string().nullable(),
  detail: z.string().nullable(),
  /** The end of the step's output its client sent with a failure (at most 4 KiB). */
  logTail: z.string().nullable(),
});
export type StepView = z.infer<typeof StepView>;

/** One task: one host in one attempt of one deployment, with every step it reported. */
export const TaskView = z.object({
  taskId: z.string(),
  deploymentId: z.string(),
  hostId: HostId,
  component: ComponentName,
  version: Version,
  fromVersion: Version.nullable(),
  attempt: z.number().int(),
  state: TaskStateView,
  currentStep: z.string().nullable(),
  error: z.string().nullable(),
  /** The log tail of the step the task failed at (or of its latest failed step), as its client sent it. */
  logTail: z.string().nullable(),
  /** The batch its host was assigned in for this attempt (null: no assignment projected, e.g. before a rebuild). */
  batch: z.number().int().nullable().default(null),
  allocatedAt: Timestamp,
  updatedAt: Timestamp,
  finishedAt: Timestamp.nullable(),
  steps: z.array(StepView),
});
export type TaskView = z.infer<typeof TaskView>;

/** A batch's state: not started yet, hosts being upgraded, completed. */
export const BatchStateView = z.enum(["pending", "running", "done"]);
export type BatchStateView = z.infer<typeof BatchStateView>;

/** One batch of a deployment (the plan's, or a retry's): its hosts' outcomes as the roll engine recorded them. */
export const BatchProgress = z.object({
  index: z.number().int().nonnegative(),
  kind: z.enum(["canary", "batch", "retry"]),
  /** Hosts in the batch. */
  size: z.number().int().nonnegative(),
  state: BatchStateView,
  /** Hosts handed a task so far. */
  assigned: z.number().int().nonnegative(),
  /** Hosts with an outcome (the sum of `outcomes`). */
  finished: z.number().int().nonnegative(),
  outcomes: z.record(HostOutcome, z.number().int().nonnegative()),
  startedAt: Timestamp.nullable(),
  finishedAt: Timestamp.nullable(),
});
export type BatchProgress = z.infer<typeof BatchProgress>;

export const DeploymentSummary = z.object({
  id: z.string(),
  component: ComponentName,
  version: Version,
  state: z.string(),
  requestedBy: z.string(),
  createdAt: Timestamp,
  updatedAt: Timestamp,
  completedAt: Timestamp.nullable(),
  hostsTotal: z.number().int(),
  skipped: z.array(z.object({ hostId: HostId, reason: z.string() })),
  batches: z.object({
    total: z.number().int(),
    started: z.number().int(),
    completed: z.number().int(),
    /** Per-batch progress, by index. */
    items: z.array(BatchProgress).default([]),
  }),
  awaitingApproval: z.number().int().nullable(),
  braked: z.object({ failed: z.number(), finished: z.number(), threshold: z.number() }).nullable(),
  reason: z.string().nullable(),
});
export type DeploymentSummary = z.infer<typeof DeploymentSummary>;

/** Tasks per state, following each host's latest attempt (a host retried after a failure counts once). */
export const TaskCounts = z.record(TaskStateView, z.number().int());

export const DeploymentView = z.object({ deployment: DeploymentSummary, counts: TaskCounts, tasks: z.array(TaskView) });
export type DeploymentView = z.infer<typeof DeploymentView>;

export const DeploymentList = z.object({
  deployments: z.array(z.object({ deployment: DeploymentSummary, counts: TaskCounts })),
  /** Pass as `cursor` for the next (older) page; null on the last page. */
  next: z.string().nullable(),
});
export type DeploymentList = z.infer<typeof DeploymentList>;

export const TaskList = z.object({ tasks: z.array(TaskView), next: z.string().nullable() });
export type TaskList = z.infer<typeof TaskList>;

/** One stored event of a host's timeline, in stream order (`streamSeq` is the commit's sequence). */
export const TimelineEvent = z.object({
  streamSeq: z.number().int(),
  eventId: z.string(),
  type: z.string(),
  occurredAt: Timestamp,
  taskId: z.string().nullable(),
  component: z.string().nullable(),
  step: z.string().nullable(),
  data: z.unknown(),
});
export type TimelineEvent = z.infer<typeof TimelineEvent>;

/** One page of a host's timeline, read from the event store; a page holds whole commits. */
export const HostTimeline = z.object({
  hostId: HostId,
  events: z.array(TimelineEvent),
  /** Pass as `after` (oldest first, the default) or `before` (`order=newest`) for the next page; null on the last. */
  next: z.number().int().nullable(),
});
export type HostTimeline = z.infer<typeof HostTimeline>;

/** Who a bearer token belongs to (`GET /v1/me` at the gateway): the dashboard shows write actions by role. */
export const Me = z.object({ actor: z.string(), role: z.enum(["viewer", "operator", "admin"]) });
export type Me = z.infer<typeof Me>;
