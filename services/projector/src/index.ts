import { join } from "node:path";
import { openDatabase } from "@molt/db";
import { createEventStore, ensureAuditStream, ensureEventStream } from "@molt/event-store";
import { commandLog, connectNats, natsSecurityFromEnv, createLogger, httpEnv, installShutdown, loadConfig, loadTokens, natsEnv, startTracing } from "@molt/runtime";
import { z } from "zod";
import { buildApp } from "./app.js";
import { watchPresence } from "./fleet/presence.js";

const Config = z.object({
  ...natsEnv,
  ...httpEnv,
  /** PGlite lives in <dir>/projector unless DATABASE_URL names a PostgreSQL. */
  MOLT_DATA_DIR: z.string().min(1).default(".molt/data"),
  DATABASE_URL: z.string().min(1).optional(),
  /** First retry after the views' database failed (doubles up to 30 s); tests make it milliseconds. */
  MOLT_PROJECTION_RETRY_MS: z.coerce.number().int().min(1).default(1_000),
});

const config = loadConfig(Config);
const logger = createLogger("projector");
// OpenTelemetry: on only when OTEL_EXPORTER_OTLP_ENDPOINT is set; spans flushed at shutdown (closed last).
const stopTracing = await startTracing("projector");
const tokens = loadTokens();
const db = await openDatabase({
  url: config.DATABASE_URL,
  dataDir: join(config.MOLT_DATA_DIR, "projector"),
  // The runner decodes the next run of commits while PGlite applies this one.
  thread: true,
  onIdleError: (err) => logger.warn({ err }, "idle database connection failed"),
});
const nc = await connectNats({ url: config.MOLT_NATS_URL, name: "molt-projector", ...natsSecurityFromEnv(config) });
await ensureEventStream(nc, { replicas: config.MOLT_STREAM_REPLICAS });
await ensureAuditStream(nc, { replicas: config.MOLT_STREAM_REPLICAS });
const presence = watchPresence(nc, logger);
const app = await buildApp({ db, store: createEventStore(nc), logger, tokens, presence, commands: commandLog(nc, logger), retryMs: config.MOLT_PROJECTION_RETRY_MS });
// Closed in reverse: HTTP and the projection first, then NATS, then the database.
installShutdown(logger, [stopTracing, () => db.close(), () => nc.drain(), () => presence.stop(), () => app.close()]);
const url = await app.listen({ host: config.MOLT_HTTP_HOST, port: config.MOLT_HTTP_PORT });
logger.info({ url, database: db.kind }, "listening");
