import { z } from "zod";
import { PackageManifest } from "./events.js";
import { ComponentName, HostId, Id, Timestamp } from "./ids.js";
import { PackageInfo } from "./messages.js";

// Answers of the gateway's command and listing routes outside the read models (views.ts): the
// services' handlers are typed with these and the CLI parses what it reads with them, so a route
// and its consumers cannot drift apart.

/** `POST /v1/deployments/:id/<command>`: the deployment's state after the command (rollback: the new deployment, 202). */
export const OperatorCommandAnswer = z.object({ deploymentId: Id, status: z.string(), location: z.string().optional() });
export type OperatorCommandAnswer = z.infer<typeof OperatorCommandAnswer>;

/** `POST /v1/hosts/:hostId/quarantine | clear`: whether the host's slot for the component is quarantined now. */
export const QuarantineAnswer = z.object({ hostId: HostId, component: ComponentName, quarantined: z.boolean() });
export type QuarantineAnswer = z.infer<typeof QuarantineAnswer>;

/** One published variant as `GET /v1/packages/:component` lists it. */
export const PackageDetail = PackageInfo.extend({
  manifest: PackageManifest,
  signature: z.string().optional(),
  keyId: z.string().optional(),
  publishedAt: Timestamp,
  yanked: z.object({ reason: z.string(), at: Timestamp }).optional(),
});
export type PackageDetail = z.infer<typeof PackageDetail>;

/** `GET /v1/packages/:component`: its variants, newest first. */
export const PackageList = z.object({ component: ComponentName, packages: z.array(PackageDetail) });
export type PackageList = z.infer<typeof PackageList>;

/** One entry of the audit log's hash chain (`GET /v1/audit`). */
export const AuditEntry = z.object({
  id: z.number().int().positive(),
  source: z.enum(["event", "command"]),
  sourceStream: z.string(),
  sourceSeq: z.number().int(),
  sourceIdx: z.number().int(),
  at: Timestamp,
  actor: z.string(),
  kind: z.string(),
  target: z.string().nullable(),
  outcome: z.string().nullable(),
  data: z.unknown(),
  prevHash: z.string(),
  hash: z.string(),
});
export type AuditEntry = z.infer<typeof AuditEntry>;

export const AuditPage = z.object({ entries: z.array(AuditEntry) });
export type AuditPage = z.infer<typeof AuditPage>;

/** `GET /v1/audit/verify` (admin): whether the chain from `fromId` to `headId` holds. */
export const AuditVerification = z.object({
  ok: z.boolean(),
  /** Entries examined (hash and link recomputed), the bad one included. */
  checked: z.number().int().nonnegative(),
  /** Where this pass started: 0 for a full pass, else the last verified entry. */
  fromId: z.number().int().nonnegative(),
  /** The last entry of the table when the pass ran (0: empty). */
  headId: z.number().int().nonnegative(),
  /** Signed anchors compared with the table. */
  anchors: z.number().int().nonnegative(),
  /** The first entry found wrong (for a deleted tail, the first one missing). */
  firstBadId: z.number().int().optional(),
  reason: z.string().optional(),
  message: z.string().optional(),
});
export type AuditVerification = z.infer<typeof AuditVerification>;
