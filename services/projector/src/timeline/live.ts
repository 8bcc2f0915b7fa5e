import { z } from "zod";
import { HostId } from "@molt/contracts";
import type { Db } from "@molt/db";
import type { App } from "@molt/runtime";
import type { ProjectionRunner } from "../projection/runner.js";
import { lastEventId, openSse, type SseStream } from "../projection/sse.js";
import { timelineEvent, TIMELINE_SELECT, type TimelineRow } from "./routes.js";

/**
 * `GET /v1/hosts/:hostId/events`: the host's timeline as server-sent events, one `commit`
 * message per stored commit (`{ streamSeq, events }`, id = the stream sequence). It replays what
 * the client has not seen (after Last-Event-ID, or everything), then follows live: no gap, no
 * duplicate, in stream order.
 */
export function timelineLiveRoutes(app: App, deps: { db: Db; runner: ProjectionRunner; streams: Set<SseStream>; keepAliveMs: number }): void {
  const { db, runner } = deps;
  app.get(
    "/v1/hosts/:hostId/events",
    { schema: { params: z.object({ hostId: HostId }), querystring: z.object({ lastEventId: z.coerce.number().int().min(0).optional() }) } },
    async (req, reply) => {
      const { hostId } = req.params;
      let sent = lastEventId(req, req.query) ?? 0;
      const stream = openSse(req, reply, { keepAliveMs: deps.keepAliveMs });
      deps.streams.add(stream);
      // One reader at a time: a live commit waits for the replay (or the previous commit) to be sent.
      let chain = Promise.resolve();
      const sendAfter = (upTo?: number) => {
        chain = chain
          .then(async () => {
            const rows = await db.query<TimelineRow>(
              `${TIMELINE_SELECT} WHERE host_id = $1 AND stream_seq > $2 ${upTo !== undefined ? "AND stream_seq <= $3" : ""} ORDER BY stream_seq, idx`,
              upTo !== undefined ? [hostId, sent, upTo] : [hostId, sent],
            );
            // One message per stored commit, in stream order.
            const commits: Array<{ streamSeq: number; events: Array<ReturnType<typeof timelineEvent>> }> = [];
            for (const row of rows.rows) {
              const event = timelineEvent(row);
              const last = commits.at(-1);
              if (last?.streamSeq === event.streamSeq) last.events.push(event);
              else commits.push({ streamSeq: event.streamSeq, events: [event] });
            }
            for (const c of commits) {
              stream.send("commit", c, c.streamSeq);
              sent = c.streamSeq;
            }
          })
          .catch((err: unknown) => req.log.warn({ err }, "live timeline update failed"));
      };
      const unsubscribe = runner.onApplied((c) => {
        if (c.hostId === hostId && c.seq > sent) sendAfter(c.seq);
      });
      stream.onClose(() => {
        unsubscribe();
        deps.streams.delete(stream);
      });
      sendAfter();
      return reply;
    },
  );
}
