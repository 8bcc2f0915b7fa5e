import { z } from "zod";
import { HostId, type TimelineEvent } from "@molt/contracts";
import type { EventStore } from "@molt/event-store";
import type { App } from "@molt/runtime";
import type { ProjectionRunner } from "../projection/runner.js";
import { lastEventId, openSse, type SseStream } from "../projection/sse.js";
import { readTimeline, timelineEntries, warnUnreadable } from "./timeline.js";

/** Events per replayed page: a long history is sent a page at a time. */
const REPLAY_PAGE = 1000;

/**
 * `GET /v1/hosts/:hostId/events`: the host's timeline as server-sent events, one `commit`
 * message per stored commit (`{ streamSeq, events }`, id = the stream sequence). It replays what
 * the client has not seen (after Last-Event-ID, or everything) from the event store, then follows
 * the commits the projector applies: no gap, no duplicate, in stream order. The listener is added
 * before the replay reads the stream's end, so a commit is either in the replay or told after it.
 */
export function timelineLiveRoutes(app: App, deps: { store: EventStore; runner: ProjectionRunner; streams: Set<SseStream>; keepAliveMs: number }): void {
  const { runner } = deps;
  app.get(
    "/v1/hosts/:hostId/events",
    { schema: { params: z.object({ hostId: HostId }), querystring: z.object({ lastEventId: z.coerce.number().int().min(0).optional() }) } },
    async (req, reply) => {
      const { hostId } = req.params;
      let sent = lastEventId(req, req.query) ?? 0;
      const stream = openSse(req, reply, { keepAliveMs: deps.keepAliveMs });
      deps.streams.add(stream);
      const send = (seq: number, events: TimelineEvent[]) => {
        if (seq <= sent) return;
        stream.send("commit", { streamSeq: seq, events }, seq);
        sent = seq;
      };
      // One sender at a time: a live commit waits for the replay (or the commit before it).
      let chain = Promise.resolve();
      const unsubscribe = runner.onApplied((c) => {
        if (c.hostId !== hostId) return;
        chain = chain.then(() => send(c.seq, timelineEntries(c)));
      });
      stream.onClose(() => {
        unsubscribe();
        deps.streams.delete(stream);
      });
      chain = chain
        .then(async () => {
          for (;;) {
            const page = await readTimeline(deps.store, hostId, { after: sent, limit: REPLAY_PAGE, order: "oldest" }, warnUnreadable(req.log, hostId));
            if (stream.closed) return;
            for (const c of page.commits) send(c.streamSeq, c.events);
            if (page.next === null) return;
          }
        })
        .catch((err: unknown) => req.log.warn({ err }, "replaying a host's timeline failed"));
      return reply;
    },
  );
}
