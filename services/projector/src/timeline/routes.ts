import { HostId } from "@molt/contracts";
import type { Db } from "@molt/db";
import { HttpError, type App } from "@molt/runtime";
import { z } from "zod";

export interface TimelineRow {
  stream_seq: number;
  event_id: string;
  type: string;
  occurred_at: Date;
  task_id: string | null;
  component: string | null;
  step: string | null;
  data: unknown;
}

export const TIMELINE_SELECT = "SELECT stream_seq, event_id, type, occurred_at, task_id, component, step, data FROM host_timeline";

export function timelineEvent(e: TimelineRow) {
  return {
    streamSeq: Number(e.stream_seq),
    eventId: e.event_id,
    type: e.type,
    occurredAt: e.occurred_at.toISOString(),
    taskId: e.task_id,
    component: e.component,
    step: e.step,
    data: e.data,
  };
}

export function timelineRoutes(app: App, deps: { db: Db }): void {
  const { db } = deps;
  app.get(
    "/v1/hosts/:hostId/timeline",
    {
      schema: {
        params: z.object({ hostId: HostId }),
        querystring: z.object({
          /** Only events after this stream sequence: a follower passes the last streamSeq it has. */
          after: z.coerce.number().int().min(0).default(0),
          limit: z.coerce.number().int().min(1).max(10_000).default(1000),
        }),
      },
    },
    async (req, reply) => {
      const { hostId } = req.params;
      const { after, limit } = req.query;
      // The database writes the events' JSON (the shape timelineEvent gives) and the route sends it
      // as it is: no row objects, no parse of each event's data and no serialization of 10,000
      // events in the process (bench/projection: the API against a raw read of the host's subject).
      const r = await db.query<{ n: number; events: string }>(
        `SELECT count(*)::int AS n, coalesce(json_agg(json_build_object(
             'streamSeq', stream_seq, 'eventId', event_id, 'type', type,
             'occurredAt', to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
             'taskId', task_id, 'component', component, 'step', step, 'data', data) ORDER BY stream_seq, idx), '[]')::text AS events
         FROM (SELECT * FROM host_timeline WHERE host_id = $1 AND stream_seq > $2 ORDER BY stream_seq, idx LIMIT $3) t`,
        [hostId, after, limit],
      );
      const page = r.rows[0]!;
      if (page.n === 0) {
        const known = await db.query("SELECT 1 FROM host_timeline WHERE host_id = $1 LIMIT 1", [hostId]);
        if (known.rows.length === 0) throw new HttpError(404, "not_found", `no events for host ${hostId}`);
      }
      return reply.type("application/json; charset=utf-8").send(`{"hostId":${JSON.stringify(hostId)},"events":${page.events}}`);
    },
  );
}
