import {
  releaseDataSchema,
  releaseType,
  type MoltEvent,
  type ReleaseData,
  type ReleaseEvent,
  type ReleaseName,
} from "@molt/contracts";
import type { Queryable } from "@molt/db";

/**
 * What the derivation remembers of the internal events (a deployment's component and kind, a
 * task's host and versions), written in the transaction that moves the checkpoint: the public
 * events carry them, the internal ones that end a deployment or a task do not.
 */
export const DERIVE_MIGRATIONS = [
  `CREATE TABLE IF NOT EXISTS release_deployments (
    deployment_id text PRIMARY KEY,
    component text NOT NULL,
    version text NOT NULL,
    kind text NOT NULL,
    origin text,
    started boolean NOT NULL DEFAULT false
  )`,
  `CREATE TABLE IF NOT EXISTS release_tasks (
    task_id text PRIMARY KEY,
    deployment_id text NOT NULL,
    host_id text NOT NULL,
    component text NOT NULL,
    from_version text,
    to_version text NOT NULL
  )`,
];

interface DeploymentRow {
  deployment_id: string;
  component: string;
  version: string;
  kind: "upgrade" | "rollback";
  origin: string | null;
  started: boolean;
}
interface TaskRow {
  task_id: string;
  deployment_id: string;
  host_id: string;
  component: string;
  from_version: string | null;
  to_version: string;
}

/** A release event and the component its subject names. */
export interface Derived {
  component: string;
  event: ReleaseEvent;
}

function make<N extends ReleaseName>(name: N, source: MoltEvent, at: { source: string; subject: string }, data: ReleaseData<N>): ReleaseEvent {
  return {
    specversion: "1.0",
    id: source.id,
    source: at.source,
    type: releaseType(name),
    subject: at.subject,
    time: source.metadata.occurredAt,
    datacontenttype: "application/json",
    dataschema: releaseDataSchema(name),
    data,
  } as ReleaseEvent;
}

const deploymentSource = (id: string) => `/molt/deployments/${id}`;

/**
 * The event types `deriveRelease` reads (the cases of its switch): a commit with none of them
 * gives no release event and changes nothing the derivation remembers, so it is passed over
 * unread. Most of a rollout's commits are step reports.
 */
export const DERIVED_FROM: ReadonlySet<string> = new Set<MoltEvent["type"]>([
  "PackagePublished",
  "PackageYanked",
  "DeploymentRequested",
  "DeploymentPlanned",
  "BatchCompleted",
  "DeploymentBraked",
  "DeploymentPaused",
  "DeploymentCancelled",
  "DeploymentFailed",
  "DeploymentCompleted",
  "TaskAllocated",
  "TaskSucceeded",
  "TaskFailed",
  "TaskRejected",
  "TaskTimedOut",
]);

/**
 * The release events one commit of the event store gives (most give none), in the commit's
 * order, updating what the derivation remembers. Each takes its source event's id, so deriving the
 * same commit again gives the same ids.
 */
export async function deriveRelease(tx: Queryable, events: readonly MoltEvent[]): Promise<Derived[]> {
  const out: Derived[] = [];
  const deployment = async (id: string) => (await tx.query<DeploymentRow>("SELECT * FROM release_deployments WHERE deployment_id = $1", [id])).rows[0];
  const task = async (id: string) => (await tx.query<TaskRow>("SELECT * FROM release_tasks WHERE task_id = $1", [id])).rows[0];
  const onDeployment = async <N extends ReleaseName>(e: MoltEvent, id: string, name: (d: DeploymentRow) => N, data: (d: DeploymentRow) => Omit<ReleaseData<N>, "deploymentId" | "component" | "version" | "kind">) => {
    const d = await deployment(id);
    if (!d) return;
    const n = name(d);
    const base = { deploymentId: d.deployment_id, component: d.component, version: d.version, kind: d.kind };
    out.push({ component: d.component, event: make(n, e, { source: deploymentSource(id), subject: id }, { ...base, ...data(d) } as ReleaseData<N>) });
  };
  const onTask = async (e: MoltEvent, taskId: string, failed: { step: string | null; reason: string } | null) => {
    const t = await task(taskId);
    if (!t) return;
    const host = { hostId: t.host_id, component: t.component, deploymentId: t.deployment_id, fromVersion: t.from_version, toVersion: t.to_version };
    const at = { source: deploymentSource(t.deployment_id), subject: t.host_id };
    out.push({ component: t.component, event: failed ? make("host.upgrade-failed", e, at, { ...host, ...failed }) : make("host.upgraded", e, at, host) });
  };

  for (const e of events) {
    switch (e.type) {
      case "PackagePublished": {
        const d = e.data;
        const data = { component: d.component, version: d.version, platform: d.platform, sha256: d.sha256, size: d.size, signed: d.signature !== undefined };
        out.push({ component: d.component, event: make("package.published", e, { source: `/molt/packages/${d.component}`, subject: d.version }, data) });
        break;
      }
      case "PackageYanked": {
        const d = e.data;
        const data = { component: d.component, version: d.version, platform: d.platform ?? null, reason: d.reason };
        out.push({ component: d.component, event: make("package.yanked", e, { source: `/molt/packages/${d.component}`, subject: d.version }, data) });
        break;
      }
      case "DeploymentRequested":
        await tx.query(
          `INSERT INTO release_deployments (deployment_id, component, version, kind, origin) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (deployment_id) DO NOTHING`,
          [e.data.deploymentId, e.data.component, e.data.version, e.data.kind ?? "upgrade", e.data.origin ?? null],
        );
        break;
      case "DeploymentPlanned": {
        // A replica that re-plans seals a second plan: the deployment started once.
        const first = await tx.query("UPDATE release_deployments SET started = true WHERE deployment_id = $1 AND NOT started RETURNING 1", [e.data.deploymentId]);
        if (first.rows.length === 0) break;
        const hosts = e.data.batches.reduce((n, b) => n + b.size, 0);
        await onDeployment(e, e.data.deploymentId, () => "deployment.started", () => ({ batches: e.data.batches.length, hosts, skipped: e.data.skipped }));
        break;
      }
      case "BatchCompleted":
        await onDeployment(e, e.data.deploymentId, () => "deployment.batch-completed", () => ({ index: e.data.index, succeeded: e.data.succeeded, failed: e.data.failed }));
        break;
      case "DeploymentBraked":
        await onDeployment(e, e.data.deploymentId, () => "deployment.braked", () => ({ failed: e.data.failed, finished: e.data.finished, threshold: e.data.threshold }));
        break;
      case "DeploymentPaused":
        await onDeployment(e, e.data.deploymentId, () => "deployment.paused", () => ({ reason: e.data.reason ?? null }));
        break;
      case "DeploymentCancelled":
        await onDeployment(e, e.data.deploymentId, () => "deployment.cancelled", () => ({ reason: e.data.reason ?? null }));
        break;
      case "DeploymentFailed":
        await onDeployment(e, e.data.deploymentId, () => "deployment.failed", () => ({ succeeded: e.data.succeeded, failed: e.data.failed, reason: e.data.reason }));
        break;
      case "DeploymentCompleted": {
        const counts = { succeeded: e.data.succeeded, failed: e.data.failed, skipped: e.data.skipped };
        // A rollback's end is told as rolled-back (one public event per source event: the id is the source's).
        await onDeployment(e, e.data.deploymentId, (d) => (d.kind === "rollback" ? "deployment.rolled-back" : "deployment.completed"), (d) => (d.kind === "rollback" ? { ...counts, origin: d.origin } : counts));
        break;
      }
      case "TaskAllocated":
        await tx.query(
          `INSERT INTO release_tasks (task_id, deployment_id, host_id, component, from_version, to_version) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (task_id) DO NOTHING`,
          [e.data.taskId, e.data.deploymentId, e.data.hostId, e.data.component, e.data.fromVersion, e.data.version],
        );
        break;
      case "TaskSucceeded":
        await onTask(e, e.data.taskId, null);
        break;
      case "TaskFailed":
        await onTask(e, e.data.taskId, { step: e.data.step ?? null, reason: e.data.reason });
        break;
      case "TaskRejected":
        await onTask(e, e.data.taskId, { step: null, reason: e.data.reason });
        break;
      case "TaskTimedOut":
        await onTask(e, e.data.taskId, { step: null, reason: `timed out at ${e.data.deadline}` });
        break;
      default:
        break;
    }
  }
  return out;
}
