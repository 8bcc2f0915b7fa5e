import { HostId, Timestamp } from "@molt/contracts";
import type { EventStore } from "@molt/event-store";
import { HttpError, type App } from "@molt/runtime";
import { z } from "zod";
import { readTimeline, warnUnreadable } from "./timeline.js";

const TimelineQuery = z.object({
  /** Only events after this stream sequence: a follower passes the last streamSeq it has (oldest first: the last page's `next`). */
  after: z.coerce.number().int().min(0).default(0),
  /** Only events before this stream sequence (newest first: the last page's `next`). */
  before: z.coerce.number().int().min(1).optional(),
  /** The timeline as it stood at this time (events stored at or before it). */
  asOf: Timestamp.optional(),
  limit: z.coerce.number().int().min(1).max(10_000).default(1000),
  order: z.enum(["oldest", "newest"]).default("oldest"),
});

export function timelineRoutes(app: App, deps: { store: EventStore }): void {
  app.get("/v1/hosts/:hostId/timeline", { schema: { params: z.object({ hostId: HostId }), querystring: TimelineQuery } }, async (req) => {
    const { hostId } = req.params;
    const q = req.query;
    const page = await readTimeline(
      deps.store,
      hostId,
      { after: q.after, before: q.before, asOf: q.asOf !== undefined ? new Date(q.asOf) : undefined, limit: q.limit, order: q.order },
      warnUnreadable(req.log, hostId),
    );
    if (!page.known) throw new HttpError(404, "not_found", `no events for host ${hostId}`);
    return { hostId, events: page.commits.flatMap((c) => c.events), next: page.next };
  });
}
