import { migrate, type Db } from "@molt/db";
import type { EventStore } from "@molt/event-store";
import { contextFrom, createHttpApp, createMetrics, inSpan, tracingEnabled, type CommandLog, type Logger, type TokenMap } from "@molt/runtime";
import { projectorMetrics } from "./projection/metrics.js";
import { deploymentsProjection } from "./deployments/projection.js";
import { deploymentRoutes } from "./deployments/routes.js";
import { fleetProjection } from "./fleet/projection.js";
import type { Presence } from "./fleet/presence.js";
import { fleetRoutes } from "./fleet/routes.js";
import { statusRoutes } from "./projection/routes.js";
import { createRunner } from "./projection/runner.js";
import { RETIRED_TIMELINE_MIGRATIONS } from "./timeline/timeline.js";
import { timelineRoutes } from "./timeline/routes.js";
import { deploymentLiveRoutes } from "./deployments/live.js";
import { timelineLiveRoutes } from "./timeline/live.js";
import type { SseStream } from "./projection/sse.js";

export interface ProjectorDeps {
  db: Db;
  store: EventStore;
  logger: Logger;
  tokens: TokenMap;
  /** First retry delay after a projection failure. */
  retryMs?: number;
  /** Failures in a row after which a commit is dead-lettered. */
  deadLetterAfter?: number;
  /** Commits applied in one transaction at most (the runner's default when not given). */
  batchSize?: number;
  /** Who is heartbeating (KV molt_presence); without it every host reads as offline. */
  presence?: Presence;
  /** Live updates (SSE): how long one subscriber's updates are gathered, and the keep-alive period. */
  live?: { throttleMs?: number; keepAliveMs?: number };
  /** Where 401/403 refusals are recorded (MOLT_AUDIT). */
  commands?: CommandLog;
}

/**
 * Migrates the views, starts following MOLT_EVENTS from the checkpoint and returns the HTTP app.
 * `app.close()` stops the projection; the database stays open (its owner closes it).
 */
export async function buildApp(deps: ProjectorDeps) {
  const { db, store, logger } = deps;
  const runner = createRunner({
    db,
    store,
    logger,
    projections: [deploymentsProjection(), fleetProjection()],
    ...(deps.retryMs !== undefined ? { retryMs: deps.retryMs } : {}),
    ...(deps.deadLetterAfter !== undefined ? { deadLetterAfter: deps.deadLetterAfter } : {}),
    // PGlite (in its own thread, as index.ts opens it): runs of 4096 commits while catching up,
    // 1.3× the events/s of 2048 there (bench/projection); PostgreSQL showed no gain (the runner's 2048).
    ...(deps.batchSize !== undefined ? { batchSize: deps.batchSize } : db.kind === "pglite" ? { batchSize: 4096 } : {}),
  });
  const metrics = createMetrics("projector");
  projectorMetrics(metrics, { db, runner, presence: deps.presence ?? null });
  // Traced: a span per commit once it is in the views, the child of the trace its events carry.
  if (tracingEnabled)
    runner.onApplied((c) => {
      const first = c.commit.events[0]!;
      void inSpan(`projector applied ${first.type}`, contextFrom(first.metadata.traceparent), () => undefined, { "molt.seq": c.seq });
    });
  const app = createHttpApp({ logger, tokens: deps.tokens, metrics, ...(deps.commands ? { commands: deps.commands } : {}) });
  deploymentRoutes(app, { db });
  timelineRoutes(app, { store });
  fleetRoutes(app, { db, presence: deps.presence ?? null });
  statusRoutes(app, { runner });
  // Open event streams are ended before the server closes (it would wait for them forever).
  const streams = new Set<SseStream>();
  const keepAliveMs = deps.live?.keepAliveMs ?? 15_000;
  deploymentLiveRoutes(app, { db, store, runner, streams, opts: { throttleMs: deps.live?.throttleMs ?? 250, keepAliveMs } });
  timelineLiveRoutes(app, { store, runner, streams, keepAliveMs });
  app.addHook("preClose", (done) => {
    for (const s of streams) s.end();
    done();
  });
  app.addHook("onClose", () => runner.stop());
  // Host timelines are read from the event store: the table they once were goes.
  await migrate(db, "projector.timeline-retired", RETIRED_TIMELINE_MIGRATIONS);
  await runner.start();
  return app;
}
