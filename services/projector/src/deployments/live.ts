import { z } from "zod";
import { Id, subjects } from "@molt/contracts";
import type { Db } from "@molt/db";
import type { EventStore } from "@molt/event-store";
import { HttpError, type App } from "@molt/runtime";
import type { ProjectedCommit } from "../projection/projection.js";
import type { ProjectionRunner } from "../projection/runner.js";
import { lastEventId, openSse, type SseStream } from "../projection/sse.js";
import { counts, deployment, DEPLOYMENT_SELECT, task, TASK_SELECT, type DeploymentRow, type TaskRow } from "./routes.js";

export interface LiveOptions {
  /** Updates for one subscriber are gathered for this long, then sent as one query's worth. */
  throttleMs: number;
  keepAliveMs: number;
}

/** Task ids a commit names (slot events carry them; deployment events do not). */
function taskIdsOf(c: ProjectedCommit): string[] {
  const ids = new Set<string>();
  for (const e of c.commit.events) if ("taskId" in e.data && typeof e.data.taskId === "string") ids.add(e.data.taskId);
  return [...ids];
}

/**
 * `GET /v1/deployments/:id/events`: a deployment's progress as server-sent events, state
 * snapshots rather than raw events — `progress` (the deployment and its counts) and `task` (one
 * task with its steps) — each with the stream sequence it reflects as its id. A client that
 * reconnects with Last-Event-ID older than the views gets a fresh snapshot of everything (so it
 * misses nothing), one that is up to date gets only what follows. Updates for one subscriber are
 * gathered for `throttleMs`, so a 10,000-host rollout costs each subscriber a few queries a second.
 */
export function deploymentLiveRoutes(app: App, deps: { db: Db; store: EventStore; runner: ProjectionRunner; streams: Set<SseStream>; opts: LiveOptions }): void {
  const { db, runner, opts } = deps;

  const progress = async (id: string) => {
    const row = (await db.query<DeploymentRow>(`${DEPLOYMENT_SELECT} WHERE d.id = $1`, [id])).rows[0];
    return row ? { deployment: deployment(row), counts: counts(row) } : undefined;
  };

  app.get(
    "/v1/deployments/:id/events",
    { schema: { params: z.object({ id: Id }), querystring: z.object({ lastEventId: z.coerce.number().int().min(0).optional() }) } },
    async (req, reply) => {
      const { id } = req.params;
      const first = await progress(id);
      // Not in the views yet may only mean the projection is a moment behind (the dashboard opens
      // the stream as soon as the deployment is accepted): the stream then waits for it. Only an
      // id the event store does not hold either is unknown.
      if (!first && !(await deps.store.readLast(subjects.deployment(id)))) throw new HttpError(404, "not_found", `no deployment ${id}`);
      const since = lastEventId(req, req.query);

      // Subscribe before reading the snapshot: whatever lands meanwhile is sent after it.
      const pendingTasks = new Set<string>();
      let pendingProgress = false;
      let timer: NodeJS.Timeout | undefined;
      let sentUpTo = 0;
      const stream = openSse(req, reply, { keepAliveMs: opts.keepAliveMs });
      deps.streams.add(stream);
      const flush = async () => {
        timer = undefined;
        const ids = [...pendingTasks];
        const wantProgress = pendingProgress;
        pendingTasks.clear();
        pendingProgress = false;
        const seq = runner.checkpoint();
        if (ids.length > 0) {
          const rows = await db.query<TaskRow>(`${TASK_SELECT} WHERE t.deployment_id = $1 AND t.task_id = ANY($2::text[]) ORDER BY t.host_id, t.attempt`, [id, ids]);
          for (const row of rows.rows) stream.send("task", task(row), seq);
          if (rows.rows.length === 0 && !wantProgress) return;
        }
        const now = await progress(id);
        if (now) stream.send("progress", now, seq);
        sentUpTo = seq;
      };
      const schedule = () => {
        timer ??= setTimeout(() => void flush().catch((err: unknown) => req.log.warn({ err }, "live update failed")), opts.throttleMs);
      };
      const unsubscribe = runner.onApplied((c) => {
        if (c.seq <= sentUpTo) return;
        if (c.subject.startsWith("molt.es.deployment.") && c.commit.events.some((e) => "deploymentId" in e.data && e.data.deploymentId === id)) {
          pendingProgress = true;
          schedule();
        } else if (c.component !== null) {
          for (const t of taskIdsOf(c)) pendingTasks.add(t);
          schedule();
        }
      });
      stream.onClose(() => {
        unsubscribe();
        if (timer) clearTimeout(timer);
        deps.streams.delete(stream);
      });

      const checkpoint = runner.checkpoint();
      if (since === undefined || since < checkpoint) {
        const tasks = await db.query<TaskRow>(`${TASK_SELECT} WHERE t.deployment_id = $1 ORDER BY t.host_id, t.attempt`, [id]);
        for (const row of tasks.rows) stream.send("task", task(row), checkpoint);
        // Read after the listener was added: if the deployment is not in the views even now, its
        // first commit comes after `checkpoint` and the listener sends its progress.
        const now = (await progress(id)) ?? first;
        if (now) stream.send("progress", now, checkpoint);
        sentUpTo = Math.max(sentUpTo, checkpoint);
      }
      return reply;
    },
  );
}
