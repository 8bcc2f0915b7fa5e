import { migrate, type Db } from "@molt/db";
import { RELEASE_NAMES, releaseAsyncApi, releaseDataJsonSchema, STREAM_RELEASE } from "@molt/contracts";
import { createHttpApp, HttpError, type CommandLog, type Logger, type RateLimits, type TokenMap } from "@molt/runtime";
import type { NatsConnection } from "@nats-io/transport-node";
import { DERIVE_MIGRATIONS } from "./derive/derive.js";
import { createReleasePublisher } from "./derive/publish.js";
import { createDelivery, DEFAULT_TIMINGS, type DeliveryTimings } from "./webhooks/deliver.js";
import { webhookRoutes } from "./webhooks/routes.js";
import { addressGuard } from "./webhooks/ssrf.js";
import { WEBHOOK_MIGRATIONS, webhookStore } from "./webhooks/store.js";

export interface ReleaseEventsDeps {
  db: Db;
  nc: NatsConnection;
  logger: Logger;
  tokens: TokenMap;
  /** The stream release events go to (default MOLT_RELEASE; tests name their own). */
  stream?: string;
  /** CIDRs webhooks may reach although private or loopback (`MOLT_WEBHOOK_ALLOW_NETS`). */
  allowNets?: readonly string[];
  timings?: Partial<DeliveryTimings>;
  /** Named in the AsyncAPI document's server. */
  natsUrl?: string;
  commands?: CommandLog;
  rateLimits?: RateLimits | false;
  retryMs?: number;
  /** How long a run of commits waits for more before its transaction (`MOLT_RELEASE_LINGER_MS`). */
  lingerMs?: number;
}

/**
 * Migrates, starts deriving release events from MOLT_EVENTS (from its checkpoint) and delivering
 * them to the webhooks, and returns the HTTP app. The streams must exist (provision creates them).
 */
export async function buildApp(deps: ReleaseEventsDeps) {
  const { db, logger, nc } = deps;
  const stream = deps.stream ?? STREAM_RELEASE;
  await migrate(db, "release-events", [...DERIVE_MIGRATIONS, ...WEBHOOK_MIGRATIONS]);
  const store = webhookStore(db);
  const guard = addressGuard(deps.allowNets);
  const delivery = createDelivery({ nc, store, guard, logger, stream, timings: { ...DEFAULT_TIMINGS, ...deps.timings } });
  const publisher = createReleasePublisher({ nc, db, logger, stream, onPublished: () => delivery.wake(), ...(deps.retryMs !== undefined ? { retryMs: deps.retryMs } : {}), ...(deps.lingerMs !== undefined ? { lingerMs: deps.lingerMs } : {}) });

  const app = createHttpApp({
    logger,
    tokens: deps.tokens,
    ...(deps.commands ? { commands: deps.commands } : {}),
    ...(deps.rateLimits !== undefined ? { rateLimits: deps.rateLimits } : {}),
  });
  const asyncapi = releaseAsyncApi(deps.natsUrl ? { natsUrl: deps.natsUrl } : {});
  // Public like any API description: it names no secret.
  app.get("/asyncapi.json", { config: { auth: false } }, () => Promise.resolve(asyncapi));
  app.get("/v1/release-events/asyncapi.json", { config: { auth: false } }, () => Promise.resolve(asyncapi));
  // Each type's data schema, where its `dataschema` URI's last segment names it (public too).
  const schemas = new Map(RELEASE_NAMES.map((n) => [`${n}.v1.json`, releaseDataJsonSchema(n)]));
  app.get("/v1/release-events/schemas/:file", { config: { auth: false } }, (req) => {
    const schema = schemas.get((req.params as { file: string }).file);
    if (!schema) throw new HttpError(404, "not_found", "no such release event schema");
    return Promise.resolve(schema);
  });
  app.get("/v1/release-events/status", async () => {
    const s = await publisher.status();
    return { checkpoint: s.checkpoint, error: s.error, stream };
  });
  webhookRoutes(app, { nc, store, delivery, guard, stream });
  app.addHook("onClose", async () => {
    await publisher.stop();
    await delivery.close();
  });
  await publisher.start();
  await delivery.startAll();
  return app;
}
