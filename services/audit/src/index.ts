import { join } from "node:path";
import { openDatabase } from "@molt/db";
import { ensureAuditStream, ensureEventStream } from "@molt/event-store";
import { commandLog, connectNats, natsSecurityFromEnv, createLogger, httpEnv, installShutdown, loadConfig, loadTokens, natsEnv, startTracing } from "@molt/runtime";
import { z } from "zod";
import { buildApp } from "./app.js";
import { loadOrCreateAnchorKey } from "./log/anchor.js";
import { migrateAsOwner } from "./log/roles.js";

const Config = z.object({
  ...natsEnv,
  ...httpEnv,
  /** PGlite lives in <dir>/audit unless DATABASE_URL names a PostgreSQL. */
  MOLT_DATA_DIR: z.string().min(1).default(".molt/data"),
  DATABASE_URL: z.string().min(1).optional(),
  /** PostgreSQL as the table's owner: migrations run over it, and DATABASE_URL's role is only a writer. */
  MOLT_DATABASE_MIGRATE_URL: z.string().min(1).optional(),
  /** ed25519 private key (PEM) that signs the chain's head; created at <data dir>/audit-anchor.key when unset. */
  MOLT_AUDIT_KEY_FILE: z.string().min(1).optional(),
  MOLT_AUDIT_ANCHOR_MS: z.coerce.number().int().positive().default(10_000),
  /** How long a run of messages waits for more before its one transaction; unset: DEFAULT_LINGER_MS. */
  MOLT_AUDIT_LINGER_MS: z.coerce.number().int().min(0).optional(),
});

const config = loadConfig(Config.refine((c) => !c.MOLT_DATABASE_MIGRATE_URL || c.DATABASE_URL, "MOLT_DATABASE_MIGRATE_URL needs DATABASE_URL (the writer role)"));
const logger = createLogger("audit");
// OpenTelemetry: on only when OTEL_EXPORTER_OTLP_ENDPOINT is set; spans flushed at shutdown (closed last).
const stopTracing = await startTracing("audit");
const tokens = loadTokens(process.env, { onReload: (err, size) => (err ? logger.error({ err }, "token file reload failed; the previous tokens stay") : logger.info({ tokens: size }, "tokens reloaded")) });
const anchorKey = loadOrCreateAnchorKey(config.MOLT_AUDIT_KEY_FILE ?? join(config.MOLT_DATA_DIR, "audit-anchor.key"));
// The owner migrates and grants; the service itself then holds only the writer's rights.
if (config.MOLT_DATABASE_MIGRATE_URL && config.DATABASE_URL) await migrateAsOwner(config.MOLT_DATABASE_MIGRATE_URL, config.DATABASE_URL);
const db = await openDatabase({
  url: config.DATABASE_URL,
  dataDir: join(config.MOLT_DATA_DIR, "audit"),
  onIdleError: (err) => logger.warn({ err }, "idle database connection failed"),
});
const nc = await connectNats({ url: config.MOLT_NATS_URL, name: "molt-audit", ...natsSecurityFromEnv(config) });
await ensureEventStream(nc, { replicas: config.MOLT_STREAM_REPLICAS });
await ensureAuditStream(nc, { replicas: config.MOLT_STREAM_REPLICAS });
const app = await buildApp({
  db,
  nc,
  logger,
  tokens,
  anchorKey,
  anchorEveryMs: config.MOLT_AUDIT_ANCHOR_MS,
  commands: commandLog(nc, logger),
  replicas: config.MOLT_STREAM_REPLICAS,
  ...(config.MOLT_AUDIT_LINGER_MS !== undefined ? { lingerMs: config.MOLT_AUDIT_LINGER_MS } : {}),
});
// Closed in reverse: HTTP and the followers first, then NATS, then the database.
installShutdown(logger, [stopTracing, () => db.close(), () => nc.drain(), () => app.close(), () => tokens.close()]);
const url = await app.listen({ host: config.MOLT_HTTP_HOST, port: config.MOLT_HTTP_PORT });
logger.info({ url, database: db.kind, anchorKeyId: anchorKey.keyId }, "listening");
