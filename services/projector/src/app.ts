import type { Db } from "@molt/db";
import type { EventStore } from "@molt/event-store";
import { createHttpApp, type Logger, type TokenMap } from "@molt/runtime";
import { deploymentsProjection } from "./deployments/projection.js";
import { deploymentRoutes } from "./deployments/routes.js";
import { fleetProjection } from "./fleet/projection.js";
import type { Presence } from "./fleet/presence.js";
import { fleetRoutes } from "./fleet/routes.js";
import { statusRoutes } from "./projection/routes.js";
import { createRunner } from "./projection/runner.js";
import { timelineProjection } from "./timeline/projection.js";
import { timelineRoutes } from "./timeline/routes.js";

export interface ProjectorDeps {
  db: Db;
  store: EventStore;
  logger: Logger;
  tokens: TokenMap;
  /** First retry delay after a projection failure. */
  retryMs?: number;
  /** Failures in a row after which a commit is dead-lettered. */
  deadLetterAfter?: number;
  /** Who is heartbeating (KV molt_presence); without it every host reads as offline. */
  presence?: Presence;
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
    projections: [deploymentsProjection(), timelineProjection(), fleetProjection()],
    ...(deps.retryMs !== undefined ? { retryMs: deps.retryMs } : {}),
    ...(deps.deadLetterAfter !== undefined ? { deadLetterAfter: deps.deadLetterAfter } : {}),
  });
  const app = createHttpApp({ logger, tokens: deps.tokens });
  deploymentRoutes(app, { db });
  timelineRoutes(app, { db });
  fleetRoutes(app, { db, presence: deps.presence ?? null });
  statusRoutes(app, { runner });
  app.addHook("onClose", () => runner.stop());
  await runner.start();
  return app;
}
