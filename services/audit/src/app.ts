import { STREAM_EVENTS, subjects } from "@molt/contracts";
import { migrate, type Db } from "@molt/db";
import { STREAM_AUDIT, type RawMessage } from "@molt/event-store";
import { createHttpApp, ensureBucket, type CommandLog, type Logger, type RateLimits, type TokenMap } from "@molt/runtime";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { commandEntries, eventEntries } from "./ingest/entries.js";
import { createFollower } from "./ingest/follow.js";
import { ANCHOR_BUCKET, ANCHOR_HISTORY, readAnchors, startAnchoring, type AnchorKey } from "./log/anchor.js";
import type { EntryFields } from "./log/chain.js";
import { logRoutes } from "./log/routes.js";
import { AUDIT_MIGRATIONS, type AuditRow } from "./log/schema.js";
import { fieldsOf, sameFields } from "./log/verify.js";
import { queryRoutes } from "./query/routes.js";

export interface AuditDeps {
  db: Db;
  nc: NatsConnection;
  logger: Logger;
  tokens: TokenMap;
  /** The audit service's ed25519 key: signs the chain's head, published to KV molt_audit_anchor. */
  anchorKey: AnchorKey;
  /** The KV bucket anchors go to (default molt_audit_anchor; tests name their own). */
  anchorBucket?: string;
  /** How often the head is anchored when it has moved. */
  anchorEveryMs?: number;
  /** Where this service's own refusals (401/403) are recorded. */
  commands?: CommandLog;
  rateLimits?: RateLimits | false;
  replicas?: number;
  /** First retry delay after a failure. */
  retryMs?: number;
  /** How long a run of messages waits for more before it is appended (default DEFAULT_LINGER_MS). */
  lingerMs?: number;
}

const TO_ENTRIES: Record<string, (stream: string, m: RawMessage) => EntryFields[]> = { [STREAM_EVENTS]: eventEntries, [STREAM_AUDIT]: commandEntries };

/**
 * Migrates the log, starts following MOLT_EVENTS and MOLT_AUDIT from their checkpoints, anchors
 * the chain's head and returns the HTTP app. The streams must exist (the composition root ensures
 * them). `app.close()` stops the followers and the anchoring; the database stays open.
 */
export async function buildApp(deps: AuditDeps) {
  const { db, logger } = deps;
  await migrate(db, "audit", AUDIT_MIGRATIONS);
  const retry = { ...(deps.retryMs !== undefined ? { retryMs: deps.retryMs } : {}), ...(deps.lingerMs !== undefined ? { lingerMs: deps.lingerMs } : {}) };
  const followers = [
    createFollower({ nc: deps.nc, db, logger, stream: STREAM_EVENTS, filter: subjects.all, toEntries: eventEntries, ...retry }),
    createFollower({ nc: deps.nc, db, logger, stream: STREAM_AUDIT, filter: subjects.commands, toEntries: commandEntries, ...retry }),
  ];
  const kv = await ensureBucket(deps.nc, deps.anchorBucket ?? ANCHOR_BUCKET, { history: ANCHOR_HISTORY, ...(deps.replicas ? { replicas: deps.replicas } : {}) });
  const anchoring = startAnchoring({ db, kv, key: deps.anchorKey, logger, everyMs: deps.anchorEveryMs ?? 10_000 });
  const jsm = await jetstreamManager(deps.nc);
  /** An entry recomputed from the message it came from (the streams are immutable). */
  const rederive = async (row: AuditRow): Promise<boolean | undefined> => {
    const toEntries = TO_ENTRIES[row.source_stream];
    if (!toEntries) return undefined;
    const m = await jsm.streams.getMessage(row.source_stream, { seq: Number(row.source_seq) }).catch(() => null);
    if (!m) return undefined;
    const entry = toEntries(row.source_stream, { subject: m.subject, seq: m.seq, data: m.data, time: m.time })[row.source_idx];
    return entry !== undefined && sameFields(entry, fieldsOf(row));
  };

  const app = createHttpApp({
    logger,
    tokens: deps.tokens,
    ...(deps.commands ? { commands: deps.commands } : {}),
    ...(deps.rateLimits !== undefined ? { rateLimits: deps.rateLimits } : {}),
  });
  queryRoutes(app, { db });
  logRoutes(app, { db, verifyOptions: async () => ({ anchors: await readAnchors(kv, deps.anchorKey), rederive }) });
  // Tests, the demo and dashboards poll this to know the log has caught up with the streams.
  app.get("/v1/audit/status", async () => ({
    streams: (await Promise.all(followers.map((f) => f.status()))).map((s) => ({ stream: s.name, checkpoint: s.checkpoint, error: s.error })),
  }));
  // The public key external verifiers need to check the anchors themselves.
  app.get("/v1/audit/anchor", async () => {
    const anchors = await readAnchors(kv, deps.anchorKey);
    return { keyId: deps.anchorKey.keyId, publicKey: deps.anchorKey.publicKeyPem, latest: anchors.at(-1)?.anchor ?? null };
  });
  app.addHook("onClose", async () => {
    anchoring.stop();
    await Promise.all(followers.map((f) => f.stop()));
  });
  for (const f of followers) await f.start();
  return Object.assign(app, { anchorNow: () => anchoring.anchorNow() });
}
