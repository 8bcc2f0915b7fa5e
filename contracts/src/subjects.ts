import { encodeHostToken } from "./ids.js";

/** Stream and bucket names, and every subject Molt uses, built in one place. */
export const STREAM_EVENTS = "MOLT_EVENTS";
export const KV_DESIRED = "molt_desired";
export const KV_PRESENCE = "molt_presence";
/** The fleet-wide cap's numbered lease keys (the allocator's). */
export const KV_LEASES = "molt_fleet_leases";
export const OBJ_PACKAGES = "molt_packages";
/** The audit service's signed chain heads (its own; provisioned by the admin with this history). */
export const KV_AUDIT_ANCHOR = "molt_audit_anchor";
export const KV_AUDIT_ANCHOR_HISTORY = 64;

export const subjects = {
  all: "molt.es.>",
  deployment: (deploymentId: string) => `molt.es.deployment.${deploymentId}`,
  deployments: "molt.es.deployment.>",
  slot: (hostId: string, component: string) => `molt.es.host.${encodeHostToken(hostId)}.task.${component}`,
  slots: "molt.es.host.*.task.*",
  hostMeta: (hostId: string) => `molt.es.host.${encodeHostToken(hostId)}.meta`,
  hostTimeline: (hostId: string) => `molt.es.host.${encodeHostToken(hostId)}.>`,
  package: (component: string) => `molt.es.package.${component}`,
  packages: "molt.es.package.>",
  /** Core NATS, published after each desired-state KV write so the agent reads at once. */
  nudge: (hostId: string) => `molt.agent.${encodeHostToken(hostId)}.nudge`,
  /** NATS request/reply: the agent forwards journal entries here. */
  report: (hostId: string) => `molt.feedback.report.${encodeHostToken(hostId)}`,
  reports: "molt.feedback.report.*",
  heartbeat: (hostId: string) => `molt.feedback.heartbeat.${encodeHostToken(hostId)}`,
  heartbeats: "molt.feedback.heartbeat.*",
  /** NATS request/reply: the allocator's plan preview (queue group of all replicas). */
  planPreview: "molt.allocator.plan",
  /** Operator commands for the audit log: JetStream stream MOLT_AUDIT, one record per command (accepted, replayed or refused). */
  command: (kind: string) => `molt.audit.command.${kind}`,
  commands: "molt.audit.command.>",
} as const;

/** KV `molt_desired` key: one per host and component. */
export const desiredKey = (hostId: string, component: string) => `${encodeHostToken(hostId)}.${component}`;
/** KV `molt_presence` key: one per host; the bucket's TTL is the grace period. */
export const presenceKey = (hostId: string) => encodeHostToken(hostId);

/** Parses `molt.es.host.<tok>.task.<component>` etc. back into its parts. */
export function parseEventSubject(
  subject: string,
):
  | { kind: "deployment"; deploymentId: string }
  | { kind: "slot"; hostToken: string; component: string }
  | { kind: "hostMeta"; hostToken: string }
  | { kind: "package"; component: string }
  | undefined {
  const p = subject.split(".");
  if (p[0] !== "molt" || p[1] !== "es") return undefined;
  if (p[2] === "deployment" && p.length === 4 && p[3]) return { kind: "deployment", deploymentId: p[3] };
  if (p[2] === "host" && p.length === 6 && p[4] === "task" && p[3] && p[5])
    return { kind: "slot", hostToken: p[3], component: p[5] };
  if (p[2] === "host" && p.length === 5 && p[4] === "meta" && p[3]) return { kind: "hostMeta", hostToken: p[3] };
  if (p[2] === "package" && p.length === 4 && p[3]) return { kind: "package", component: p[3] };
  return undefined;
}
