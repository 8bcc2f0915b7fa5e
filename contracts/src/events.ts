import { z } from "zod";
import { ComponentName, HostId, Id, Platform, Sha256, Timestamp, Version } from "./ids.js";

/** Envelope metadata: time and ids come from whoever decided the event, never from a clock inside a decider. */
export const EventMetadata = z.object({
  occurredAt: Timestamp,
  actor: z.string().min(1).max(200),
  correlationId: z.string().min(1).max(200),
  causationId: z.string().max(200).optional(),
  traceparent: z.string().max(200).optional(),
});
export type EventMetadata = z.infer<typeof EventMetadata>;

function event<T extends string, D extends z.ZodType>(type: T, data: D) {
  return z.object({ id: z.string().min(1).max(200), type: z.literal(type), data, metadata: EventMetadata });
}

// ---------- packages ----------
/** What the publisher signs: it binds bytes (sha256, size) to a component, version and platform. */
export const PackageManifest = z.object({
  component: ComponentName,
  version: Version,
  platform: Platform,
  sha256: Sha256,
  size: z.number().int().positive(),
  /** Number of regular files and total entries in the archive; extraction refuses more. */
  files: z.number().int().nonnegative(),
  entries: z.number().int().positive(),
  /** Total bytes of the regular files once extracted; extraction refuses more. */
  unpackedSize: z.number().int().nonnegative(),
});
export type PackageManifest = z.infer<typeof PackageManifest>;

export const PackagePublished = event(
  "PackagePublished",
  z.object({
    component: ComponentName,
    version: Version,
    platform: Platform,
    sha256: Sha256,
    size: z.number().int().positive(),
    manifest: PackageManifest,
    /** ed25519 signature of the canonical manifest JSON, base64; absent for unsigned uploads. */
    signature: z.string().max(200).optional(),
    keyId: z.string().max(100).optional(),
  }),
);
export const PackageYanked = event(
  "PackageYanked",
  z.object({ component: ComponentName, version: Version, platform: Platform.optional(), reason: z.string().max(500) }),
);

// ---------- deployments ----------
export const PackageRef = z.object({
  platform: Platform,
  sha256: Sha256,
  size: z.number().int().positive(),
  url: z.string().url(),
});
export type PackageRef = z.infer<typeof PackageRef>;

/** One planned host; its package is the plan's variant for its platform (stored once per platform). */
export const PlannedHost = z.object({
  hostId: HostId,
  fromVersion: Version.nullable(),
  platform: Platform,
});
export type PlannedHost = z.infer<typeof PlannedHost>;

export const Batch = z.object({
  index: z.number().int().nonnegative(),
  kind: z.enum(["canary", "batch"]),
  hosts: z.array(PlannedHost),
});
export type Batch = z.infer<typeof Batch>;

export const SkippedHost = z.object({ hostId: HostId, reason: z.string().max(500) });
export type SkippedHost = z.infer<typeof SkippedHost>;

export const DeploymentRequested = event(
  "DeploymentRequested",
  z.object({
    deploymentId: Id,
    component: ComponentName,
    version: Version,
    hosts: z.array(HostId).min(1),
    /** Idempotency: the key as sent and a hash of the canonical request body. */
    idempotencyKey: z.string().max(200).nullable(),
    requestHash: Sha256,
    taskTimeoutMs: z.number().int().positive(),
  }),
);
export const DeploymentPlanned = event(
  "DeploymentPlanned",
  z.object({
    deploymentId: Id,
    /** The package variant per platform, resolved once: a replay never re-resolves. */
    packages: z.record(Platform, PackageRef),
    batches: z.array(Batch),
    skipped: z.array(SkippedHost),
  }),
);
export const BatchStarted = event("BatchStarted", z.object({ deploymentId: Id, index: z.number().int().nonnegative() }));
export const BatchCompleted = event(
  "BatchCompleted",
  z.object({ deploymentId: Id, index: z.number().int().nonnegative(), succeeded: z.number().int(), failed: z.number().int() }),
);
export const DeploymentPaused = event("DeploymentPaused", z.object({ deploymentId: Id, reason: z.string().max(500).optional() }));
export const DeploymentResumed = event("DeploymentResumed", z.object({ deploymentId: Id }));
export const DeploymentBraked = event(
  "DeploymentBraked",
  z.object({ deploymentId: Id, failed: z.number().int(), finished: z.number().int(), threshold: z.number() }),
);
export const CanaryAwaitingApproval = event("CanaryAwaitingApproval", z.object({ deploymentId: Id, index: z.number().int() }));
export const CanaryApproved = event("CanaryApproved", z.object({ deploymentId: Id }));
export const DeploymentCancelled = event("DeploymentCancelled", z.object({ deploymentId: Id, reason: z.string().max(500).optional() }));
export const DeploymentCompleted = event(
  "DeploymentCompleted",
  z.object({ deploymentId: Id, succeeded: z.number().int(), failed: z.number().int(), skipped: z.number().int() }),
);
export const DeploymentFailed = event(
  "DeploymentFailed",
  z.object({ deploymentId: Id, reason: z.string().max(1000), succeeded: z.number().int(), failed: z.number().int() }),
);

// ---------- task slots (molt.es.host.<host>.task.<component>) ----------
export const STEPS = [
  "begin",
  "backup",
  "download",
  "override",
  "pre-stop",
  "stop",
  "start",
  "verify",
  "post-verify",
  "rollback",
  "end-action",
] as const;
export const Step = z.enum(STEPS);
export type Step = z.infer<typeof Step>;

const Seq = z.number().int().positive();
const At = Timestamp;
const ErrorText = z.string().max(4000);

export const TaskAllocated = event(
  "TaskAllocated",
  z.object({
    taskId: Id,
    deploymentId: Id,
    hostId: HostId,
    component: ComponentName,
    version: Version,
    fromVersion: Version.nullable(),
    attempt: z.number().int().positive(),
    deadline: At,
    package: PackageRef,
  }),
);
export const TaskDispatched = event("TaskDispatched", z.object({ taskId: Id, revision: z.number().int().positive() }));
export const TaskAccepted = event("TaskAccepted", z.object({ taskId: Id, seq: Seq, at: At }));
export const TaskStepStarted = event("TaskStepStarted", z.object({ taskId: Id, seq: Seq, step: Step, at: At }));
export const TaskStepSucceeded = event(
  "TaskStepSucceeded",
  z.object({ taskId: Id, seq: Seq, step: Step, at: At, durationMs: z.number().nonnegative(), detail: z.string().max(1000).optional() }),
);
export const TaskStepFailed = event(
  "TaskStepFailed",
  z.object({ taskId: Id, seq: Seq, step: Step, at: At, durationMs: z.number().nonnegative(), error: ErrorText }),
);
export const TaskRolledBack = event("TaskRolledBack", z.object({ taskId: Id, seq: Seq, at: At, reason: ErrorText }));
export const TaskSucceeded = event("TaskSucceeded", z.object({ taskId: Id, seq: Seq, at: At, version: Version }));
export const TaskFailed = event(
  "TaskFailed",
  z.object({ taskId: Id, seq: Seq, at: At, reason: ErrorText, step: Step.optional() }),
);
export const TaskRejected = event("TaskRejected", z.object({ taskId: Id, seq: Seq, at: At, reason: ErrorText }));
export const TaskTimedOut = event("TaskTimedOut", z.object({ taskId: Id, deadline: At }));
export const TaskCancelled = event("TaskCancelled", z.object({ taskId: Id, reason: z.string().max(500) }));

// ---------- host meta (molt.es.host.<host>.meta) ----------
export const Labels = z.record(z.string().regex(/^[a-z0-9_./-]{1,63}$/), z.string().max(253));
export const HostRegistered = event(
  "HostRegistered",
  z.object({ hostId: HostId, os: z.string().max(32), arch: z.string().max(32), platform: Platform, labels: Labels }),
);
export const HostLabelsChanged = event("HostLabelsChanged", z.object({ hostId: HostId, labels: Labels }));
export const ComponentVersionObserved = event(
  "ComponentVersionObserved",
  z.object({ hostId: HostId, component: ComponentName, version: Version.nullable(), previous: Version.nullable() }),
);

export const DeploymentEvent = z.discriminatedUnion("type", [
  DeploymentRequested,
  DeploymentPlanned,
  BatchStarted,
  BatchCompleted,
  DeploymentPaused,
  DeploymentResumed,
  DeploymentBraked,
  CanaryAwaitingApproval,
  CanaryApproved,
  DeploymentCancelled,
  DeploymentCompleted,
  DeploymentFailed,
]);
export const SlotEvent = z.discriminatedUnion("type", [
  TaskAllocated,
  TaskDispatched,
  TaskAccepted,
  TaskStepStarted,
  TaskStepSucceeded,
  TaskStepFailed,
  TaskRolledBack,
  TaskSucceeded,
  TaskFailed,
  TaskRejected,
  TaskTimedOut,
  TaskCancelled,
]);
export const HostEvent = z.discriminatedUnion("type", [HostRegistered, HostLabelsChanged, ComponentVersionObserved]);
export const PackageEvent = z.discriminatedUnion("type", [PackagePublished, PackageYanked]);
export const MoltEvent = z.discriminatedUnion("type", [
  ...DeploymentEvent.options,
  ...SlotEvent.options,
  ...HostEvent.options,
  ...PackageEvent.options,
]);

export type DeploymentEvent = z.infer<typeof DeploymentEvent>;
export type SlotEvent = z.infer<typeof SlotEvent>;
export type HostEvent = z.infer<typeof HostEvent>;
export type PackageEvent = z.infer<typeof PackageEvent>;
export type MoltEvent = z.infer<typeof MoltEvent>;
export type MoltEventType = MoltEvent["type"];
/** An event of one type, by its name: `EventOf<"TaskAllocated">`. */
export type EventOf<T extends MoltEventType> = Extract<MoltEvent, { type: T }>;

// ---------- slot state, carried in every slot commit ----------
export const TaskOutcome = z.enum(["succeeded", "failed", "rejected", "timed-out", "cancelled"]);
export type TaskOutcome = z.infer<typeof TaskOutcome>;
export const SlotState = z.object({
  active: z
    .object({
      taskId: Id,
      deploymentId: Id,
      version: Version,
      attempt: z.number().int().positive(),
      status: z.enum(["allocated", "dispatched", "running"]),
      lastSeq: z.number().int().nonnegative(),
      openStep: Step.nullable(),
      deadline: At,
    })
    .nullable(),
  /** The last finished tasks, newest first (bounded), so late duplicates are recognised. */
  recent: z.array(z.object({ taskId: Id, deploymentId: Id, outcome: TaskOutcome, lastSeq: z.number().int().nonnegative() })),
  /** The version the last successful task installed. */
  version: Version.nullable(),
});
export type SlotState = z.infer<typeof SlotState>;

/** One JetStream message of MOLT_EVENTS = one commit: events decided together, plus (for slots) the state after them. */
export const Commit = z.object({
  commitId: z.string().min(1).max(200),
  events: z.array(MoltEvent).min(1),
  state: z.unknown().optional(),
});
export type Commit = z.infer<typeof Commit>;

/** Host meta state, carried in every `molt.es.host.<host>.meta` commit: what the fleet knows of a host. */
export const HostState = z.object({
  hostId: HostId,
  os: z.string().max(32),
  arch: z.string().max(32),
  platform: Platform,
  labels: Labels,
  components: z.record(ComponentName, Version.nullable()),
  registeredAt: Timestamp,
});
export type HostState = z.infer<typeof HostState>;
