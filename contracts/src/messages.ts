import { z } from "zod";
import { Labels, PackageRef, Selector, SignedRepositoryMetadata, SkippedHost, Step, Strategy } from "./events.js";
import { ComponentName, HostId, Id, Platform, Sha256, Timestamp, Version } from "./ids.js";

// ---------- operator HTTP bodies ----------
export const CreateDeploymentBody = z
  .object({
    component: ComponentName,
    version: Version,
    /** Explicit targets; with a selector as well, only the named hosts that match. */
    hosts: z
      .array(HostId)
      .min(1, "hosts must name at least one host")
      .max(10_000)
      .refine((h) => new Set(h).size === h.length, "hosts must not repeat")
      .optional(),
    selector: Selector.optional(),
    strategy: Strategy.optional(),
    /** How long one host may take before its task is timed out. */
    taskTimeoutMs: z.number().int().min(1).max(86_400_000).optional(),
    /** Accept a plan in which every host is skipped (otherwise 422 with the reasons). */
    allowEmpty: z.boolean().optional(),
  })
  .strict()
  .refine((b) => b.hosts !== undefined || b.selector !== undefined, { message: "name the hosts or give a selector", path: ["hosts"] });
export type CreateDeploymentBody = z.infer<typeof CreateDeploymentBody>;

export const DeploymentAccepted = z.object({ deploymentId: Id, status: z.literal("accepted"), location: z.string() });
export type DeploymentAccepted = z.infer<typeof DeploymentAccepted>;

/** Operator commands on a deployment: `POST /v1/deployments/:id/<command>`. */
export const OperatorCommandName = z.enum(["approve", "pause", "resume", "cancel", "retry", "rollback"]);
export type OperatorCommandName = z.infer<typeof OperatorCommandName>;
export const OperatorCommandBody = z.object({ reason: z.string().max(500).optional() }).strict();
export const QuarantineBody = z.object({ component: ComponentName, reason: z.string().min(1).max(500).optional() }).strict();

/** NATS request/reply `molt.allocator.plan`: the plan the allocator would record, computed by the same planner. */
export const PlanPreviewRequest = z.object({
  component: ComponentName,
  version: Version,
  hosts: z.array(HostId),
  selector: Selector.nullable(),
  strategy: Strategy,
  kind: z.enum(["upgrade", "rollback"]).default("upgrade"),
  origin: z.string().nullable().default(null),
});
export type PlanPreviewRequest = z.infer<typeof PlanPreviewRequest>;
/** Host lists are cut to the first ones (the counts are whole), so a 100,000-host preview fits one reply. */
export const PlanPreview = z.object({
  planned: z.number().int(),
  batches: z.array(z.object({ index: z.number().int(), kind: z.string(), size: z.number().int(), hosts: z.array(z.string()) })),
  skipped: z.number().int(),
  skips: z.array(SkippedHost),
});
export type PlanPreview = z.infer<typeof PlanPreview>;
export const PlanAnswer = z.union([z.object({ status: z.literal("ok"), plan: PlanPreview }), z.object({ status: z.literal("error"), reason: z.string() })]);
export type PlanAnswer = z.infer<typeof PlanAnswer>;

/** Error body every service answers with. */
export const ErrorBody = z.object({ error: z.object({ code: z.string(), message: z.string() }) });
export type ErrorBody = z.infer<typeof ErrorBody>;

// ---------- desired state (KV molt_desired, key <host>.<component>) ----------
/**
 * What a task does on the host. `upgrade` and `install` download `package`; `rollback` switches
 * back to `version` from the copy kept on the host (versions/<version>), with no download;
 * `uninstall` stops and removes the component. Only upgrade and install carry a package.
 */
export const TaskKind = z.enum(["upgrade", "install", "rollback", "uninstall"]);
export type TaskKind = z.infer<typeof TaskKind>;

export const DesiredState = z
  .object({
    taskId: Id,
    deploymentId: Id,
    hostId: HostId,
    component: ComponentName,
    kind: TaskKind.default("upgrade"),
    version: Version,
    fromVersion: Version.nullable(),
    attempt: z.number().int().positive(),
    deadline: Timestamp,
    package: PackageRef.optional(),
    /** W3C trace context of the allocation (when tracing): the agent and the upgrade client continue its trace. */
    traceparent: z.string().max(200).optional(),
  })
  .refine((d) => d.package !== undefined || d.kind === "rollback" || d.kind === "uninstall", {
    message: "package is required for upgrade and install tasks",
    path: ["package"],
  });
export type DesiredState = z.infer<typeof DesiredState>;

// ---------- host → feedback ----------
const At = Timestamp;
export const JournalEntry = z.discriminatedUnion("kind", [
  z.object({ kind: z.literal("accepted"), seq: z.number().int().positive(), at: At }),
  z.object({ kind: z.literal("step-started"), seq: z.number().int().positive(), at: At, step: Step }),
  z.object({
    kind: z.literal("step-succeeded"),
    seq: z.number().int().positive(),
    at: At,
    step: Step,
    durationMs: z.number().nonnegative(),
    detail: z.string().max(1000).optional(),
  }),
  z.object({
    kind: z.literal("step-failed"),
    seq: z.number().int().positive(),
    at: At,
    step: Step,
    durationMs: z.number().nonnegative(),
    error: z.string().max(4000),
    /** The end of what the step's command printed (stdout and stderr), at most 4 KiB of text. */
    logTail: z.string().max(4096).optional(),
  }),
  z.object({ kind: z.literal("rolled-back"), seq: z.number().int().positive(), at: At, reason: z.string().max(4000) }),
  z.object({ kind: z.literal("succeeded"), seq: z.number().int().positive(), at: At, version: Version }),
  z.object({
    kind: z.literal("failed"),
    seq: z.number().int().positive(),
    at: At,
    reason: z.string().max(4000),
    step: Step.optional(),
  }),
  z.object({ kind: z.literal("rejected"), seq: z.number().int().positive(), at: At, reason: z.string().max(4000) }),
]);
export type JournalEntry = z.infer<typeof JournalEntry>;

/**
 * A step report: one or more journal entries of one task, contiguous in `seq`, forwarded in order.
 * Entries sent together (a step's start and end) land as one commit.
 */
export const StepReport = z
  .object({
    hostId: HostId,
    taskId: Id,
    component: ComponentName,
    entries: z.array(JournalEntry).min(1).max(64),
  })
  .refine((r) => r.entries.every((e, i) => i === 0 || e.seq === r.entries[i - 1]!.seq + 1), "entries must have contiguous seq");
export type StepReport = z.infer<typeof StepReport>;

export const ReportAnswer = z.object({
  status: z.enum(["accepted", "duplicate", "refused"]),
  reason: z.string().optional(),
});
export type ReportAnswer = z.infer<typeof ReportAnswer>;

export const Heartbeat = z.object({
  hostId: HostId,
  at: At,
  os: z.string().max(32),
  arch: z.string().max(32),
  labels: Labels.default({}),
  /** Installed version per component (null: not installed). */
  components: z.record(ComponentName, Version.nullable()),
  agentVersion: z.string().max(64),
});
export type Heartbeat = z.infer<typeof Heartbeat>;

export const HeartbeatAnswer = z.object({ status: z.enum(["ok", "refused"]), reason: z.string().optional() });

// ---------- audit ----------
/** An operator command as the audit log records it (stream MOLT_AUDIT, subject molt.audit.command.<kind>). */
export const CommandRecord = z.object({
  id: z.string(),
  kind: z.string().regex(/^[a-z0-9_-]+$/),
  actor: z.string(),
  role: z.string(),
  at: At,
  target: z.string().nullable(),
  outcome: z.enum(["accepted", "replayed", "refused"]),
  status: z.number().int(),
  body: z.unknown(),
});
export type CommandRecord = z.infer<typeof CommandRecord>;

// ---------- packages ----------
export const PackageUploadQuery = z.object({ component: ComponentName, version: Version, platform: Platform });
/**
 * `POST /v1/packages/:component/:version/yank`: no platform yanks every platform of the version;
 * `metadata` is the publisher's signed metadata marking it yanked (required where the repository
 * takes publisher-signed packages only; a repository-side signer makes it otherwise).
 */
export const PackageYankBody = z
  .object({ reason: z.string().min(1).max(500), platform: Platform.max(32).optional(), metadata: SignedRepositoryMetadata.optional() })
  .strict();
export type PackageYankBody = z.infer<typeof PackageYankBody>;
export const PackageInfo = z.object({
  component: ComponentName,
  version: Version,
  platform: Platform,
  sha256: Sha256,
  size: z.number().int(),
  url: z.string(),
});
export type PackageInfo = z.infer<typeof PackageInfo>;

/** Platform naming shared by agents and package-repo: `<os>-<arch>` with Go-style arch names. */
export function platformOf(os: string, arch: string): string {
  const a = arch === "x64" ? "amd64" : arch === "ia32" ? "386" : arch;
  return `${os}-${a}`;
}
