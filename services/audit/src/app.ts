import { STREAM_EVENTS, subjects } from "@molt/contracts";
import { migrate, type Db } from "@molt/db";
import { STREAM_AUDIT } from "@molt/event-store";
import { createHttpApp, type Logger, type TokenMap } from "@molt/runtime";
import type { NatsConnection } from "@nats-io/transport-node";
import { commandEntries, eventEntries } from "./ingest/entries.js";
import { createFollower } from "./ingest/follow.js";
import { logRoutes } from "./log/routes.js";
import { AUDIT_MIGRATIONS } from "./log/schema.js";
import { queryRoutes } from "./query/routes.js";

export interface AuditDeps {
  db: Db;
  nc: NatsConnection;
  logger: Logger;
  tokens: TokenMap;
  /** First retry delay after a failure. */
  retryMs?: number;
}

/**
 * Migrates the log, starts following MOLT_EVENTS and MOLT_AUDIT from their checkpoints and
 * returns the HTTP app. The streams must exist (the composition root ensures them).
 * `app.close()` stops the followers; the database stays open (its owner closes it).
 */
export async function buildApp(deps: AuditDeps) {
  const { db, logger } = deps;
  await migrate(db, "audit", AUDIT_MIGRATIONS);
  const retry = deps.retryMs !== undefined ? { retryMs: deps.retryMs } : {};
  const followers = [
    createFollower({ nc: deps.nc, db, logger, stream: STREAM_EVENTS, filter: subjects.all, toEntries: eventEntries, ...retry }),
    createFollower({ nc: deps.nc, db, logger, stream: STREAM_AUDIT, filter: subjects.commands, toEntries: commandEntries, ...retry }),
  ];
  const app = createHttpApp({ logger, tokens: deps.tokens });
  queryRoutes(app, { db });
  logRoutes(app, { db });
  // Tests, the demo and dashboards poll this to know the log has caught up with the streams.
  app.get("/v1/audit/status", async () => ({
    streams: (await Promise.all(followers.map((f) => f.status()))).map((s) => ({ stream: s.name, checkpoint: s.checkpoint, error: s.error })),
  }));
  app.addHook("onClose", async () => {
    await Promise.all(followers.map((f) => f.stop()));
  });
  for (const f of followers) await f.start();
  return app;
}
