import type { NatsConnection } from "@nats-io/transport-node";
import { createCheckpointedFollower, type Db } from "@molt/db";
import { followStream, type RawMessage } from "@molt/event-store";
import type { Logger } from "@molt/runtime";
import { appendEntries } from "../log/append.js";
import type { EntryFields } from "../log/chain.js";

export interface FollowerStatus {
  stream: string;
  checkpoint: number;
  error: string | null;
}

export interface Follower {
  start(): Promise<void>;
  stop(): Promise<void>;
  status(): Promise<FollowerStatus>;
}

/**
 * Follows one stream, raw (so a message that fails validation is still recorded, as such), and
 * appends each message's entries to the chain in the transaction that moves its checkpoint.
 */
export function createFollower(deps: {
  nc: NatsConnection;
  db: Db;
  logger: Logger;
  stream: string;
  filter: string;
  toEntries: (stream: string, m: RawMessage) => EntryFields[];
  retryMs?: number;
}): Follower {
  const { nc, stream, filter, toEntries } = deps;
  const follower = createCheckpointedFollower<RawMessage>({
    db: deps.db,
    logger: deps.logger,
    name: stream,
    open: (fromSeq, handler, onError) => followStream(nc, { stream, filter, fromSeq, handler, onError }),
    apply: (tx, m) => appendEntries(tx, toEntries(stream, m)),
    ...(deps.retryMs !== undefined ? { retryMs: deps.retryMs } : {}),
  });
  return {
    start: () => follower.start(),
    stop: () => follower.stop(),
    async status() {
      const s = await follower.status();
      return { stream, checkpoint: s.checkpoint, error: s.error };
    },
  };
}
