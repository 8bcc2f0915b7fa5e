import { DiscardPolicy, jetstreamManager, RetentionPolicy, StorageType, type StreamConfig } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { STREAM_EVENTS } from "@molt/contracts";

export interface EventStreamOptions {
  stream?: string;
  subjects?: string[];
  /** 1 on a single server; 3 on a cluster. */
  replicas?: number;
  /** The msgID dedupe window (ms); defaults to the server's 2 minutes. */
  duplicateWindowMs?: number;
}

/**
 * Creates (or updates) the immutable event stream: file storage, deny delete and purge,
 * direct get for last-by-subject reads. Only features nats-server 2.9.10 has.
 */
export async function ensureEventStream(nc: NatsConnection, opts: EventStreamOptions = {}): Promise<void> {
  const jsm = await jetstreamManager(nc);
  const name = opts.stream ?? STREAM_EVENTS;
  const config: Partial<StreamConfig> & { name: string } = {
    name,
    subjects: opts.subjects ?? ["molt.es.>"],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    num_replicas: opts.replicas ?? 1,
    deny_delete: true,
    deny_purge: true,
    allow_direct: true,
    max_msgs_per_subject: -1,
    ...(opts.duplicateWindowMs ? { duplicate_window: opts.duplicateWindowMs * 1_000_000 } : {}),
  };
  try {
    // An existing stream is left as it is: its replicas and limits are the operator's to change,
    // and a service started with other defaults must not silently rewrite them.
    await jsm.streams.info(name);
  } catch (err) {
    if ((err as Error).name !== "StreamNotFoundError") throw err;
    try {
      await jsm.streams.add(config);
    } catch (addErr) {
      // Another service created it between our info and add: that is fine.
      if (!/already in use|exists/i.test((addErr as Error).message)) throw addErr;
    }
  }
}

export const STREAM_AUDIT = "MOLT_AUDIT";

/**
 * The operator-command stream the audit service reads (action appends one record per command,
 * accepted or refused). Limits retention, file storage, deny delete/purge like the event store.
 */
export async function ensureAuditStream(nc: NatsConnection, opts: { replicas?: number } = {}): Promise<void> {
  await ensureEventStream(nc, { stream: STREAM_AUDIT, subjects: ["molt.audit.>"], ...(opts.replicas ? { replicas: opts.replicas } : {}) });
}
