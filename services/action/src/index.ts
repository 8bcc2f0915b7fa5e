import { readFileSync } from "node:fs";
import { deploymentRepository, slotRepository } from "@molt/aggregates";
import { createEventStore, ensureAuditStream, ensureEventStream } from "@molt/event-store";
import { HostIssuer, commandLog, connectNats, natsSecurityFromEnv, createLogger, httpEnv, installShutdown, loadConfig, loadTokens, natsEnv, startTracing } from "@molt/runtime";
import { z } from "zod";

import { planPreviews } from "./deployments/preview.js";
import { buildApp } from "./deployments/routes.js";
import { loadEnrolKeys } from "./hosts/enrol-keys.js";

const Config = z.object({
  ...natsEnv,
  ...httpEnv,
  MOLT_TASK_TIMEOUT_MS: z.coerce.number().int().positive().default(15 * 60_000),
  /** How long a create waits for the allocator's plan preview before accepting without it. */
  MOLT_PLAN_PREVIEW_TIMEOUT_MS: z.coerce.number().int().positive().default(10_000),
  /** JSON `{ account, signingSeed }` from `pnpm molt-bus init` (host-issuer.json): enables POST /v1/hosts/:id/enrol. */
  MOLT_HOST_ISSUER_FILE: z.string().min(1).optional(),
  /** Scoped enrolment keys (host-id glob, expiry, uses): hosts enrol with one instead of an operator token. */
  MOLT_ENROL_KEYS_FILE: z.string().min(1).optional(),
});

const config = loadConfig(Config);
const logger = createLogger("action");
// OpenTelemetry: on only when OTEL_EXPORTER_OTLP_ENDPOINT is set; spans flushed at shutdown (closed last).
const stopTracing = await startTracing("action");
const nc = await connectNats({ url: config.MOLT_NATS_URL, name: "molt-action", ...natsSecurityFromEnv(config) });
await ensureEventStream(nc, { replicas: config.MOLT_STREAM_REPLICAS });
await ensureAuditStream(nc, { replicas: config.MOLT_STREAM_REPLICAS });
const store = createEventStore(nc, { ackLog: config.MOLT_ACK_LOG });
const enrolKeys = config.MOLT_ENROL_KEYS_FILE
  ? loadEnrolKeys(config.MOLT_ENROL_KEYS_FILE, { onReload: (err) => (err ? logger.error({ err }, "enrolment keys reload failed; the previous keys stay") : logger.info("enrolment keys reloaded")) })
  : null;
const app = buildApp({
  logger,
  tokens: loadTokens(),
  deployments: deploymentRepository(store),
  slots: slotRepository(store),
  previews: planPreviews(nc, logger, config.MOLT_PLAN_PREVIEW_TIMEOUT_MS),
  commands: commandLog(nc, logger),
  defaultTaskTimeoutMs: config.MOLT_TASK_TIMEOUT_MS,
  enrolKeys,
  hostIssuer: config.MOLT_HOST_ISSUER_FILE ? HostIssuer.parse(JSON.parse(readFileSync(config.MOLT_HOST_ISSUER_FILE, "utf8"))) : null,
});
installShutdown(logger, [stopTracing, () => nc.drain(), () => app.close(), () => enrolKeys?.close()]);
const url = await app.listen({ host: config.MOLT_HTTP_HOST, port: config.MOLT_HTTP_PORT });
logger.info({ url }, "listening");
