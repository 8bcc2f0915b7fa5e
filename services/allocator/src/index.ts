import { randomUUID } from "node:crypto";
import { deploymentRepository, slotRepository } from "@molt/aggregates";
import { KV_DESIRED, STREAM_EVENTS } from "@molt/contracts";
import { createEventStore, ensureEventStream } from "@molt/event-store";
import { connectNats, createLogger, ensureBucket, installShutdown, loadConfig, natsEnv } from "@molt/runtime";
import { z } from "zod";
import { desiredStates } from "./dispatch/desired.js";
import { runConsumer } from "./engine/consumer.js";
import { engine } from "./engine/rules.js";

const Config = z.object({
  ...natsEnv,
  /** Base URL hosts download packages from: package-repo, the gateway, or a mirror in front of them. */
  MOLT_PACKAGE_BASE_URL: z.url(),
  MOLT_REPLICA_ID: z.string().default(() => randomUUID().slice(0, 8)),
  MOLT_TICK_MS: z.coerce.number().int().min(1).default(1000),
  MOLT_ALLOCATOR_CONCURRENCY: z.coerce.number().int().positive().default(32),
  MOLT_RETRY_DELAY_MS: z.coerce.number().int().min(1).default(1000),
  MOLT_ACK_WAIT_MS: z.coerce.number().int().min(100).default(30_000),
});

const config = loadConfig(Config);
const logger = createLogger("allocator", { replica: config.MOLT_REPLICA_ID });
const nc = await connectNats({ url: config.MOLT_NATS_URL, name: `molt-allocator-${config.MOLT_REPLICA_ID}` });
await ensureEventStream(nc, { replicas: config.MOLT_STREAM_REPLICAS });
const store = createEventStore(nc);
const kv = await ensureBucket(nc, KV_DESIRED, { history: 5, replicas: config.MOLT_STREAM_REPLICAS });
const base = config.MOLT_PACKAGE_BASE_URL.replace(/\/$/, "");
const rules = engine({
  store,
  deployments: deploymentRepository(store),
  slots: slotRepository(store),
  desired: desiredStates(kv, nc),
  logger,
  downloadUrl: (c, v, p) => `${base}/v1/packages/${encodeURIComponent(c)}/${encodeURIComponent(v)}/${encodeURIComponent(p)}/download`,
  replicaId: config.MOLT_REPLICA_ID,
});
const consumer = await runConsumer(
  nc,
  {
    stream: STREAM_EVENTS,
    durable: "molt-allocator",
    concurrency: config.MOLT_ALLOCATOR_CONCURRENCY,
    retryDelayMs: config.MOLT_RETRY_DELAY_MS,
    ackWaitMs: config.MOLT_ACK_WAIT_MS,
  },
  (c) => rules.handle(c),
  logger,
);
let ticking = false;
const tick = setInterval(() => {
  if (ticking) return;
  ticking = true;
  rules
    .tick(new Date())
    .then((n) => n > 0 && logger.info({ timedOut: n }, "timed out tasks"))
    .catch((err: unknown) => logger.warn({ err }, "tick failed"))
    .finally(() => (ticking = false));
}, config.MOLT_TICK_MS);
let stopping = false;
// If the consume loop ends by itself (the durable was deleted, the stream is gone), this replica
// would tick on without handling events: exit so a supervisor restarts it and it re-binds.
void consumer.done.then(() => {
  if (stopping) return;
  logger.fatal("event consumer ended unexpectedly; exiting");
  process.exit(1);
});
installShutdown(logger, [() => nc.drain(), () => consumer.stop(), () => clearInterval(tick), () => void (stopping = true)]);
logger.info("allocator running");
