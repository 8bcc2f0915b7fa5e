import { join } from "node:path";
import { openDatabase } from "@molt/db";
import { commandLog, connectNats, natsSecurityFromEnv, createLogger, httpEnv, installShutdown, loadConfig, loadTokens, natsEnv, startTracing } from "@molt/runtime";
import { z } from "zod";
import { buildApp } from "./app.js";

const ms = (fallback: number) => z.coerce.number().int().positive().default(fallback);
const Config = z.object({
  ...natsEnv,
  ...httpEnv,
  /** PGlite lives in <dir>/release-events unless DATABASE_URL names a PostgreSQL. */
  MOLT_DATA_DIR: z.string().min(1).default(".molt/data"),
  DATABASE_URL: z.string().min(1).optional(),
  /** Comma-separated CIDRs webhooks may reach although loopback/private (e.g. 127.0.0.0/8); none by default. */
  MOLT_WEBHOOK_ALLOW_NETS: z.string().default(""),
  MOLT_WEBHOOK_TIMEOUT_MS: ms(10_000),
  MOLT_WEBHOOK_RETRY_MIN_MS: ms(5_000),
  MOLT_WEBHOOK_RETRY_MAX_MS: ms(3_600_000),
  /** How long one event is retried before the subscription is marked failing and paused (default 26 h). */
  MOLT_WEBHOOK_GIVE_UP_MS: ms(26 * 3_600_000),
  MOLT_WEBHOOK_POLL_MS: ms(1_000),
  /** How long a run of commits waits for more before its one transaction; unset: DEFAULT_LINGER_MS (100). */
  MOLT_RELEASE_LINGER_MS: z.coerce.number().int().min(0).optional(),
});

const config = loadConfig(Config);
const logger = createLogger("release-events");
// OpenTelemetry: on only when OTEL_EXPORTER_OTLP_ENDPOINT is set; spans flushed at shutdown (closed last).
const stopTracing = await startTracing("release-events");
const tokens = loadTokens(process.env, { onReload: (err, size) => (err ? logger.error({ err }, "token file reload failed; the previous tokens stay") : logger.info({ tokens: size }, "tokens reloaded")) });
const db = await openDatabase({
  url: config.DATABASE_URL,
  dataDir: join(config.MOLT_DATA_DIR, "release-events"),
  onIdleError: (err) => logger.warn({ err }, "idle database connection failed"),
});
const nc = await connectNats({ url: config.MOLT_NATS_URL, name: "molt-release-events", ...natsSecurityFromEnv(config) });
const app = await buildApp({
  db,
  nc,
  logger,
  tokens,
  natsUrl: config.MOLT_NATS_URL,
  allowNets: config.MOLT_WEBHOOK_ALLOW_NETS.split(",").map((s) => s.trim()).filter(Boolean),
  timings: {
    timeoutMs: config.MOLT_WEBHOOK_TIMEOUT_MS,
    retryMinMs: config.MOLT_WEBHOOK_RETRY_MIN_MS,
    retryMaxMs: config.MOLT_WEBHOOK_RETRY_MAX_MS,
    giveUpMs: config.MOLT_WEBHOOK_GIVE_UP_MS,
    pollMs: config.MOLT_WEBHOOK_POLL_MS,
  },
  commands: commandLog(nc, logger),
  ...(config.MOLT_RELEASE_LINGER_MS !== undefined ? { lingerMs: config.MOLT_RELEASE_LINGER_MS } : {}),
});
// Closed in reverse: HTTP, the publisher and the deliveries first, then NATS, then the database.
installShutdown(logger, [stopTracing, () => db.close(), () => nc.drain(), () => app.close(), () => tokens.close()]);
const url = await app.listen({ host: config.MOLT_HTTP_HOST, port: config.MOLT_HTTP_PORT });
logger.info({ url, database: db.kind }, "listening");
