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

/**
 * A component's repository metadata (TUF's targets role, one document per component): every
 * variant a host may install with its sha256 and whether it is yanked. `version` only grows; a host
 * refuses a document older than the newest it has recorded (rollback) and one past `expires`
 * (freeze). Signed by a publisher key like a manifest, so neither the bus nor the repository can
 * forge a yank away or a variant in.
 */
export const RepositoryMetadata = z.object({
  component: ComponentName,
  version: z.number().int().positive(),
  expires: Timestamp,
  packages: z
    .array(z.object({ version: Version, platform: Platform, sha256: Sha256, yanked: z.boolean() }).strict())
    .max(10_000),
});
export type RepositoryMetadata = z.infer<typeof RepositoryMetadata>;
export const SignedRepositoryMetadata = z.object({
  metadata: RepositoryMetadata,
  signature: z.string().max(200),
  keyId: z.string().max(100),
});
export type SignedRepositoryMetadata = z.infer<typeof SignedRepositoryMetadata>;
/** package-repo took a newer signed metadata document for the component (the latest one counts). */
export const PackageMetadataSigned = event("PackageMetadataSigned", z.object({ component: ComponentName, signed: SignedRepositoryMetadata }));

// ---------- deployments ----------
/** An operator's Idempotency-Key (hashed with the actor), kept in the event so a replay is recognised from the history. */
const CommandKey = z.string().min(1).max(100).optional();
export const PackageRef = z.object({
  platform: Platform,
  sha256: Sha256,
  size: z.number().int().positive(),
  url: z.string().url(),
  /**
   * The publisher's signed manifest, as `PackagePublished` carries it. Safe to carry over the bus:
   * the host checks the signature with keys configured on the host, so nobody on the way can
   * change it; the host takes its extraction limits from it. Required by hosts with trusted keys.
   */
  signed: z
    .object({ manifest: PackageManifest, signature: z.string().max(200), keyId: z.string().max(100) })
    .optional(),
  /** The component's latest signed repository metadata when planned; the host checks it (yank, rollback, freeze). */
  metadata: SignedRepositoryMetadata.optional(),
});
export type PackageRef = z.infer<typeof PackageRef>;

/** One planned host; its package is the plan's variant for its platform (stored once per platform). */
export const PlannedHost = z.object({
  hostId: HostId,
  fromVersion: Version.nullable(),
  platform: Platform,
  /** The host's own target when it differs from the deployment's (a rollback: its previous version). */
  version: Version.optional(),
});
export type PlannedHost = z.infer<typeof PlannedHost>;

export const Batch = z.object({
  index: z.number().int().nonnegative(),
  kind: z.enum(["canary", "batch", "retry"]),
  hosts: z.array(PlannedHost),
});
export type Batch = z.infer<typeof Batch>;

export const SkippedHost = z.object({ hostId: HostId, reason: z.string().max(500) });
export type SkippedHost = z.infer<typeof SkippedHost>;

/** Hosts or a percent of the planned hosts (rounded up, at least 1). */
export const HostCount = z.union([
  z.object({ hosts: z.number().int().min(1, "hosts must be at least 1").max(100_000) }).strict(),
  z.object({ percent: z.number().gt(0, "percent must be above 0").max(100, "percent must be at most 100") }).strict(),
]);
export type HostCount = z.infer<typeof HostCount>;

/**
 * How a deployment rolls, fully resolved (defaults applied) when it is requested, so every
 * replica and every replay decides with the same numbers.
 */
export const Strategy = z
  .object({
    /** The first batch; with `approval` the rest waits for an operator's approve. */
    canary: z.object({ size: HostCount, approval: z.boolean().default(false) }).strict().nullable().default(null),
    /** Batch size and the most hosts in flight at once (default 25 %, at most 50 %). */
    maxUnavailable: HostCount.default({ percent: 25 }).refine((c) => !("percent" in c) || c.percent <= 50, {
      message: "maxUnavailable may be at most 50 percent",
    }),
    /** Wait after a batch completes before the next starts; `pauseFromThirdMs` from the third batch on. */
    pauseMs: z.number().int().min(0).max(86_400_000).default(0),
    pauseFromThirdMs: z.number().int().min(0).max(86_400_000).nullable().default(null),
    /** Per-deployment cap on tasks in flight (on top of maxUnavailable). */
    concurrency: z.number().int().min(1).max(100_000).nullable().default(null),
    /** Stop allocating when failed / finished exceeds `threshold`, once `minFinished` tasks finished. */
    brake: z
      .object({ threshold: z.number().min(0).max(1), minFinished: z.number().int().min(1).default(1) })
      .strict()
      .nullable()
      .default(null),
    /** One cluster's batches (label `cluster`) before the next cluster's. */
    orderByCluster: z.boolean().default(false),
  })
  .strict();
export type Strategy = z.infer<typeof Strategy>;
export type StrategyInput = z.input<typeof Strategy>;

/** Targets by what the fleet knows of each host; every given field must match. */
export const Selector = z
  .object({
    labels: z.record(z.string().regex(/^[a-z0-9_./-]{1,63}$/), z.string().max(253)).optional(),
    cluster: z.string().min(1).max(253).optional(),
    platform: Platform.optional(),
    /** The component's installed version (null: not installed). */
    version: Version.nullable().optional(),
  })
  .strict();
export type Selector = z.infer<typeof Selector>;

export const DeploymentKind = z.enum(["upgrade", "rollback"]);
export type DeploymentKind = z.infer<typeof DeploymentKind>;

export const DeploymentRequested = event(
  "DeploymentRequested",
  z.object({
    deploymentId: Id,
    component: ComponentName,
    version: Version,
    /** The explicit targets; empty when a selector names them. */
    hosts: z.array(HostId),
    selector: Selector.optional(),
    /** Idempotency: the key as sent and a hash of the canonical request body. */
    idempotencyKey: z.string().max(200).nullable(),
    requestHash: Sha256,
    taskTimeoutMs: z.number().int().positive(),
    strategy: Strategy.optional(),
    /** A rollback returns each host of `origin` to its own previous version from the copy kept on the host. */
    kind: DeploymentKind.optional(),
    origin: Id.optional(),
    /** Accept a plan in which every host is skipped (it completes at once). */
    allowEmpty: z.boolean().optional(),
  }),
);
/**
 * A plan is stored in parts (each well under one commit's size) and sealed by DeploymentPlanned,
 * so 100,000 hosts with FQDN ids fit. `planId` ties parts to their seal: a replica that re-plans
 * after a kill with another view of the fleet starts a new plan id, whose parts replace the old.
 */
export const PlanPartRecorded = event(
  "PlanPartRecorded",
  z.object({
    deploymentId: Id,
    planId: z.string().min(1).max(80),
    part: z.number().int().nonnegative(),
    batches: z.array(z.object({ index: z.number().int().nonnegative(), hosts: z.array(PlannedHost) })),
    skipped: z.array(SkippedHost),
  }),
);
export const BatchSummary = z.object({
  index: z.number().int().nonnegative(),
  kind: z.enum(["canary", "batch", "retry"]),
  size: z.number().int().nonnegative(),
});
export type BatchSummary = z.infer<typeof BatchSummary>;
export const DeploymentPlanned = event(
  "DeploymentPlanned",
  z.object({
    deploymentId: Id,
    planId: z.string().min(1).max(80),
    /** How many PlanPartRecorded commits the plan has (all must be present). */
    parts: z.number().int().nonnegative(),
    /** The package variant per platform, resolved once: a replay never re-resolves. */
    packages: z.record(Platform, PackageRef),
    batches: z.array(BatchSummary),
    skipped: z.number().int().nonnegative(),
  }),
);
/** Hosts handed a task for this attempt (the allocator then allocates their slots). */
export const HostsAssigned = event(
  "HostsAssigned",
  z.object({ deploymentId: Id, attempt: z.number().int().positive(), batch: z.number().int().nonnegative(), hosts: z.array(HostId).min(1) }),
);
export const HostOutcome = z.enum(["succeeded", "failed", "rejected", "timed-out", "cancelled", "busy", "skipped"]);
export type HostOutcome = z.infer<typeof HostOutcome>;
/**
 * How one host's task of one attempt ended; `busy`: its slot held another deployment's task;
 * `skipped`: a retry found the host at the target already (the reason says why), so no task ran.
 */
export const HostOutcomeRecorded = event(
  "HostOutcomeRecorded",
  z.object({
    deploymentId: Id,
    hostId: HostId,
    attempt: z.number().int().positive(),
    outcome: HostOutcome,
    reason: z.string().max(500).optional(),
  }),
);
/**
 * A new attempt for every host whose latest task failed, timed out, was rejected or found its
 * slot busy, as one more batch at the end; the brake is released. The hosts follow from the
 * events before it, so the commit stays small whatever the fleet.
 */
export const DeploymentRetried = event(
  "DeploymentRetried",
  z.object({
    deploymentId: Id,
    attempt: z.number().int().positive(),
    index: z.number().int().nonnegative(),
    hosts: z.number().int().nonnegative(),
    commandKey: CommandKey,
  }),
);
export const BatchStarted = event("BatchStarted", z.object({ deploymentId: Id, index: z.number().int().nonnegative() }));
export const BatchCompleted = event(
  "BatchCompleted",
  z.object({
    deploymentId: Id,
    index: z.number().int().nonnegative(),
    succeeded: z.number().int(),
    failed: z.number().int(),
    /** When it completed (the deciding event's time): the pause before the next batch counts from it. */
    at: Timestamp.optional(),
  }),
);
export const DeploymentPaused = event(
  "DeploymentPaused",
  z.object({ deploymentId: Id, reason: z.string().max(500).optional(), commandKey: CommandKey }),
);
export const DeploymentResumed = event("DeploymentResumed", z.object({ deploymentId: Id, commandKey: CommandKey }));
export const DeploymentBraked = event(
  "DeploymentBraked",
  z.object({ deploymentId: Id, failed: z.number().int(), finished: z.number().int(), threshold: z.number() }),
);
export const CanaryAwaitingApproval = event("CanaryAwaitingApproval", z.object({ deploymentId: Id, index: z.number().int() }));
export const CanaryApproved = event("CanaryApproved", z.object({ deploymentId: Id, commandKey: CommandKey }));
/** A slot skipped by later plans until an operator clears it: after its last N tasks failed, or drained by hand. */
export const HostQuarantined = event(
  "HostQuarantined",
  z.object({ hostId: HostId, component: ComponentName, reason: z.string().max(500), by: z.enum(["failures", "operator"]) }),
);
export const HostQuarantineCleared = event("HostQuarantineCleared", z.object({ hostId: HostId, component: ComponentName }));
export const DeploymentCancelled = event(
  "DeploymentCancelled",
  z.object({ deploymentId: Id, reason: z.string().max(500).optional(), commandKey: CommandKey }),
);
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
    /** Absent means upgrade; a rollback task carries no package (the host keeps the copy). */
    kind: z.enum(["upgrade", "rollback"]).optional(),
    package: PackageRef.optional(),
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
  z.object({
    taskId: Id,
    seq: Seq,
    step: Step,
    at: At,
    durationMs: z.number().nonnegative(),
    error: ErrorText,
    /** The end of the step's command output as the client sent it (at most 4 KiB of text). */
    logTail: z.string().max(4096).optional(),
  }),
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
  PlanPartRecorded,
  DeploymentPlanned,
  HostsAssigned,
  HostOutcomeRecorded,
  DeploymentRetried,
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
  HostQuarantined,
  HostQuarantineCleared,
]);
export const HostEvent = z.discriminatedUnion("type", [HostRegistered, HostLabelsChanged, ComponentVersionObserved]);
export const PackageEvent = z.discriminatedUnion("type", [PackagePublished, PackageYanked, PackageMetadataSigned]);
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
  recent: z.array(
    z.object({
      taskId: Id,
      deploymentId: Id,
      outcome: TaskOutcome,
      lastSeq: z.number().int().nonnegative(),
      attempt: z.number().int().positive().optional(),
    }),
  ),
  /** The version the last successful task installed. */
  version: Version.nullable(),
  /** Set while the slot is quarantined: later plans skip the host. */
  quarantined: z.object({ reason: z.string(), by: z.enum(["failures", "operator"]) }).nullable().optional(),
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
