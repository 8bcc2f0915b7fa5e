import { KV_PRESENCE, subjects } from "@molt/contracts";
import { createEventStore, ensureEventStream } from "@molt/event-store";
import { connectNats, natsSecurityFromEnv, createLogger, ensureBucket, installShutdown, loadConfig, metricsEnv, metricsFromEnv, natsEnv, startTracing } from "@molt/runtime";
import { z } from "zod";
import { feedbackMetrics } from "./metrics.js";
import { startFeedback } from "./service.js";

const Config = z.object({
  ...natsEnv,
  ...metricsEnv,
  /** How long a host stays online without a heartbeat (the presence bucket's TTL). */
  MOLT_PRESENCE_TTL_MS: z.coerce.number().int().min(1000).default(30_000),
  MOLT_FEEDBACK_CONCURRENCY: z.coerce.number().int().positive().default(64),
  /** Heartbeats waiting beyond this many are shed unanswered (the agent retries next period). */
  MOLT_HEARTBEAT_MAX_PENDING: z.coerce.number().int().positive().default(1_000),
});

const config = loadConfig(Config);
const logger = createLogger("feedback");
// OpenTelemetry: on only when OTEL_EXPORTER_OTLP_ENDPOINT is set; spans flushed at shutdown (closed last).
const stopTracing = await startTracing("feedback");
const metrics = await metricsFromEnv("feedback", config, logger);
const nc = await connectNats({ url: config.MOLT_NATS_URL, name: "molt-feedback", ...natsSecurityFromEnv(config) });
await ensureEventStream(nc, { replicas: config.MOLT_STREAM_REPLICAS });
const presence = await ensureBucket(nc, KV_PRESENCE, { ttl: config.MOLT_PRESENCE_TTL_MS, history: 1, replicas: config.MOLT_STREAM_REPLICAS });
const feedback = startFeedback({ nc, store: createEventStore(nc, { ackLog: config.MOLT_ACK_LOG }), presence, logger, concurrency: config.MOLT_FEEDBACK_CONCURRENCY, metrics: feedbackMetrics(metrics.registry), heartbeatMaxPending: config.MOLT_HEARTBEAT_MAX_PENDING });
installShutdown(logger, [stopTracing, () => metrics.close(), () => nc.drain(), () => feedback.stop()]);
logger.info({ subjects: [subjects.reports, subjects.heartbeats] }, "feedback ready");
