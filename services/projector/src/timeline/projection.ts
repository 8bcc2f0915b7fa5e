import type { MoltEvent } from "@molt/contracts";
import { unreachable } from "@molt/domain";
import type { Queryable } from "@molt/db";
import type { ProjectedCommit, Projection } from "../projection/projection.js";

/** Append-only: add statements, never edit one that has shipped. */
const MIGRATIONS = [
  `CREATE TABLE host_timeline (
    host_id text NOT NULL,
    stream_seq bigint NOT NULL,
    -- the event's position inside its commit
    idx integer NOT NULL,
    event_id text NOT NULL,
    type text NOT NULL,
    -- when it happened: the host's own time for what the host reported, else when it was decided
    occurred_at timestamptz NOT NULL,
    task_id text,
    component text,
    step text,
    data jsonb NOT NULL,
    PRIMARY KEY (stream_seq, idx)
  );
  CREATE INDEX host_timeline_by_host ON host_timeline (host_id, stream_seq, idx)`,
  // One index per row instead of two (bench/projection: the timeline insert was ~40 % of a run).
  // Every query reads by host (the API, live updates); a commit sits on one subject, so one host,
  // and (host_id, stream_seq, idx) is unique exactly where (stream_seq, idx) was.
  `ALTER TABLE host_timeline DROP CONSTRAINT host_timeline_pkey;
  DROP INDEX host_timeline_by_host;
  ALTER TABLE host_timeline ADD PRIMARY KEY (host_id, stream_seq, idx)`,
];

interface TimelineFields {
  taskId: string | null;
  step: string | null;
  /** The host's own clock, for what the host reported. */
  at: string | null;
}

/** Every event on a host's subjects (its slots and its meta), in stream order: one host's whole story. */
export function timelineProjection(): Projection {
  return {
    name: "timeline",
    migrations: MIGRATIONS,
    apply: (tx, c) => insertRows(tx, [c]),
    // A run of commits is one statement: the timeline only inserts, keyed by stream position.
    applyRun: insertRows,
  };
}

async function insertRows(tx: Queryable, commits: readonly ProjectedCommit[]): Promise<void> {
  const rows = commits.flatMap((c) => {
    if (c.hostId === null) return [];
    return c.commit.events.map((event, idx) => {
      const f = fieldsOf(event);
      return {
        host_id: c.hostId,
        stream_seq: c.seq,
        idx,
        event_id: event.id,
        type: event.type,
        occurred_at: f.at ?? event.metadata.occurredAt,
        task_id: f.taskId,
        component: c.component ?? componentOf(event),
        step: f.step,
        data: event.data,
      };
    });
  });
  if (rows.length === 0) return;
  // One statement for the whole run, however many commits and events it holds. json, not jsonb:
  // the rows are read once, so a jsonb of the whole run would be built only to be taken apart.
  await tx.query(
    `INSERT INTO host_timeline (host_id, stream_seq, idx, event_id, type, occurred_at, task_id, component, step, data)
     SELECT host_id, stream_seq, idx, event_id, type, occurred_at, task_id, component, step, data
     FROM json_to_recordset($1::json) AS r(host_id text, stream_seq bigint, idx integer, event_id text, type text,
       occurred_at timestamptz, task_id text, component text, step text, data jsonb)
     ON CONFLICT DO NOTHING`,
    [JSON.stringify(rows)],
  );
}

function componentOf(event: MoltEvent): string | null {
  return "component" in event.data ? event.data.component : null;
}

function fieldsOf(event: MoltEvent): TimelineFields {
  switch (event.type) {
    case "TaskAllocated":
    case "TaskDispatched":
    case "TaskTimedOut":
    case "TaskCancelled":
      return { taskId: event.data.taskId, step: null, at: null };
    case "TaskAccepted":
    case "TaskRolledBack":
    case "TaskSucceeded":
    case "TaskRejected":
      return { taskId: event.data.taskId, step: null, at: event.data.at };
    case "TaskFailed":
      return { taskId: event.data.taskId, step: event.data.step ?? null, at: event.data.at };
    case "TaskStepStarted":
    case "TaskStepSucceeded":
    case "TaskStepFailed":
      return { taskId: event.data.taskId, step: event.data.step, at: event.data.at };
    case "HostRegistered":
    case "HostLabelsChanged":
    case "ComponentVersionObserved":
    case "HostQuarantined":
    case "HostQuarantineCleared":
      return { taskId: null, step: null, at: null };
    // Deployment and package events never sit on a host subject.
    case "DeploymentRequested":
    case "PlanPartRecorded":
    case "DeploymentPlanned":
    case "HostsAssigned":
    case "HostOutcomeRecorded":
    case "DeploymentRetried":
    case "BatchStarted":
    case "BatchCompleted":
    case "DeploymentPaused":
    case "DeploymentResumed":
    case "DeploymentBraked":
    case "CanaryAwaitingApproval":
    case "CanaryApproved":
    case "DeploymentCancelled":
    case "DeploymentCompleted":
    case "DeploymentFailed":
    case "PackagePublished":
    case "PackageYanked":
    case "PackageMetadataSigned":
      return { taskId: null, step: null, at: null };
    default:
      return unreachable(event);
  }
}
