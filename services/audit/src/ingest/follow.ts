import type { NatsConnection } from "@nats-io/transport-node";
import { createCheckpointedFollower, type CheckpointedFollower, type Db } from "@molt/db";
import { followStream, type RawMessage } from "@molt/event-store";
import type { Logger } from "@molt/runtime";
import { appendEntries } from "../log/append.js";
import type { EntryFields } from "../log/chain.js";

/**
 * How long a run of messages waits for the ones behind it. Each transaction costs PGlite far more
 * than each row in it: a chain append of 5 entries cost ~0.6-0.8 ms of CPU per entry, of 60 entries
 * ~0.11 ms (docs/benchmarks.md, rollout). A rollout's commits arrive a few ms apart, so a longer
 * wait makes runs of dozens; the log lags the stream by that much more, which an audit log can.
 */
export const DEFAULT_LINGER_MS = 250;

/**
 * Follows one stream, raw (so a message that fails validation is still recorded, as such), and
 * appends each message's entries to the chain in the transaction that moves its checkpoint (a
 * burst of messages shares one transaction and one append, in stream order).
 */
export function createFollower(deps: {
  nc: NatsConnection;
  db: Db;
  logger: Logger;
  stream: string;
  filter: string;
  toEntries: (stream: string, m: RawMessage) => EntryFields[];
  retryMs?: number;
  /** How long a run waits for more messages before its one transaction (see DEFAULT_LINGER_MS). */
  lingerMs?: number;
}): CheckpointedFollower {
  const { nc, stream, filter, toEntries } = deps;
  // The checkpoint is named after the stream it follows.
  return createCheckpointedFollower<RawMessage>({
    db: deps.db,
    logger: deps.logger,
    name: stream,
    open: (fromSeq, handler, onError) => followStream(nc, { stream, filter, fromSeq, handler, onError }),
    apply: (tx, m) => appendEntries(tx, toEntries(stream, m)),
    // A run of messages is one chain append (one head read, one insert) in its one transaction.
    applyBatch: (tx, ms) => appendEntries(tx, ms.flatMap((m) => toEntries(stream, m))),
    lingerMs: deps.lingerMs ?? DEFAULT_LINGER_MS,
    ...(deps.retryMs !== undefined ? { retryMs: deps.retryMs } : {}),
  });
}
