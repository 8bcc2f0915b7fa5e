import { randomUUID } from "node:crypto";
import { deploymentRepository, slotRepository } from "@molt/aggregates";
import { KV_DESIRED, KV_PRESENCE, STREAM_EVENTS, subjects } from "@molt/contracts";
import { createEventStore, ensureEventStream } from "@molt/event-store";
import { connectNats, natsSecurityFromEnv, createLogger, ensureBucket, contextFrom, inSpan, installShutdown, loadConfig, metricsEnv, metricsFromEnv, natsEnv, startTracing } from "@molt/runtime";
import { z } from "zod";
import { desiredStates } from "./dispatch/desired.js";
import { fleetLeases, KV_LEASES } from "./dispatch/leases.js";
import { consume, runConsumer } from "./engine/consumer.js";
import { allocationOf, engine, HANDLED } from "./engine/rules.js";
import { allocatorMetrics } from "./metrics.js";
import { fleetIndex } from "./planning/fleet-index.js";
import { fleetReader } from "./planning/resolve.js";
import { planPreviews } from "./preview/respond.js";

const Config = z.object({
  ...natsEnv,
  ...metricsEnv,
  /** Base URL hosts download packages from: package-repo, the gateway, or a mirror in front of them. */
  MOLT_PACKAGE_BASE_URL: z.url(),
  MOLT_REPLICA_ID: z.string().default(() => randomUUID().slice(0, 8)),
  MOLT_ALLOCATOR_CONCURRENCY: z.coerce.number().int().positive().default(32),
  MOLT_RETRY_DELAY_MS: z.coerce.number().int().min(1).default(1000),
  MOLT_ACK_WAIT_MS: z.coerce.number().int().min(100).default(30_000),
  /** Tasks in flight whose deadlines the deadline consumer holds at once (across replicas). */
  MOLT_MAX_TASKS_IN_FLIGHT: z.coerce.number().int().positive().default(100_000),
  /** Quarantine a host's slot after this many failed tasks in a row (0: never). */
  MOLT_QUARANTINE_AFTER: z.coerce.number().int().min(0).default(3),
  /** Tasks in flight at once across all deployments (KV leases); 0: no fleet-wide cap. Every replica must use the same. */
  MOLT_FLEET_CAP: z.coerce.number().int().min(0).default(0),
  /** How soon a deployment waiting for a fleet lease looks again. */
  MOLT_LEASE_RETRY_MS: z.coerce.number().int().min(1).default(250),
});

const config = loadConfig(Config);
const logger = createLogger("allocator", { replica: config.MOLT_REPLICA_ID });
// OpenTelemetry: on only when OTEL_EXPORTER_OTLP_ENDPOINT is set; spans flushed at shutdown (closed last).
const stopTracing = await startTracing("allocator");
const metrics = await metricsFromEnv("allocator", config, logger);
const counted = allocatorMetrics(metrics.registry);
const nc = await connectNats({ url: config.MOLT_NATS_URL, name: `molt-allocator-${config.MOLT_REPLICA_ID}`, ...natsSecurityFromEnv(config) });
await ensureEventStream(nc, { replicas: config.MOLT_STREAM_REPLICAS });
const store = createEventStore(nc, { ackLog: config.MOLT_ACK_LOG });
const kv = await ensureBucket(nc, KV_DESIRED, { history: 5, replicas: config.MOLT_STREAM_REPLICAS });
const slots = slotRepository(store);
const leases =
  config.MOLT_FLEET_CAP > 0
    ? await fleetLeases(
        await ensureBucket(nc, KV_LEASES, { history: 1, replicas: config.MOLT_STREAM_REPLICAS }),
        config.MOLT_FLEET_CAP,
        async (l) => (await slots.load(l.hostId, l.component)).state.active?.taskId === l.taskId,
        logger,
      )
    : undefined;
const fleet = await fleetIndex(nc, store, logger);
const base = config.MOLT_PACKAGE_BASE_URL.replace(/\/$/, "");
const rules = engine({
  store,
  deployments: deploymentRepository(store),
  slots,
  desired: desiredStates(kv, nc),
  logger,
  downloadUrl: (c, v, p) => `${base}/v1/packages/${encodeURIComponent(c)}/${encodeURIComponent(v)}/${encodeURIComponent(p)}/download`,
  replicaId: config.MOLT_REPLICA_ID,
  fleet: fleetReader(nc, KV_PRESENCE, fleet),
  quarantineAfter: config.MOLT_QUARANTINE_AFTER,
  ...(leases ? { leases, leaseRetryMs: config.MOLT_LEASE_RETRY_MS } : {}),
});
const common = { stream: STREAM_EVENTS, retryDelayMs: config.MOLT_RETRY_DELAY_MS, ackWaitMs: config.MOLT_ACK_WAIT_MS };
const consumer = await runConsumer(nc, { ...common, durable: "molt-allocator", concurrency: config.MOLT_ALLOCATOR_CONCURRENCY, handles: HANDLED }, async (c, ctx) => {
    // Traced: a span per commit handled, the child of the trace its events carry.
    const first = c.commit.events[0]!;
    await inSpan(`allocator ${first.type}`, contextFrom(first.metadata.traceparent), () => rules.handle(c, ctx), { "molt.subject": c.subject });
    counted.handled(c);
  },
  logger,
);
const deadlines = await consume(
  nc,
  { ...common, durable: "molt-allocator-deadlines", filter: subjects.slots, concurrency: config.MOLT_ALLOCATOR_CONCURRENCY, maxAckPending: config.MOLT_MAX_TASKS_IN_FLIGHT, headersOnly: true },
  allocationOf,
  rules.deadlines,
  logger,
);
const previews = planPreviews(nc, logger, rules.plans.compute);
let stopping = false;
// If a consume loop ends by itself (the durable was deleted, the stream is gone), this replica
// would go on half-deaf: exit so a supervisor restarts it and it re-binds.
for (const c of [consumer, deadlines, fleet, ...(leases ? [leases] : [])])
  void c.done.then(() => {
    if (stopping) return;
    logger.fatal("event consumer ended unexpectedly; exiting");
    process.exit(1);
  });
// Closed last to first: stop answering, stop both consumers, then drain.
installShutdown(logger, [stopTracing, () => metrics.close(), () => nc.drain(), () => deadlines.stop(), () => consumer.stop(), () => previews.stop(), async () => leases?.stop(), () => fleet.stop(), () => void (stopping = true)]);
logger.info("allocator running");
