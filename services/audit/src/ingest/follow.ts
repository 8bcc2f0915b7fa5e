import { DeliverPolicy, type JetStreamClient } from "@nats-io/jetstream";
import type { Db } from "@molt/db";
import type { Logger } from "@molt/runtime";
import { appendEntries } from "../log/append.js";
import type { EntryFields } from "../log/chain.js";
import type { RawMessage } from "./entries.js";

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
 * Reads one stream from its checkpoint on with an ordered consumer (catch-up, then live) and
 * appends each message's entries together with the checkpoint. On a failure it stops, waits and
 * starts again from the checkpoint, so nothing is skipped and nothing is written twice.
 */
export function createFollower(deps: {
  js: JetStreamClient;
  db: Db;
  logger: Logger;
  stream: string;
  filter: string;
  toEntries: (stream: string, m: RawMessage) => EntryFields[];
  retryMs?: number;
}): Follower {
  const { js, db, stream, filter, toEntries } = deps;
  const logger = deps.logger.child({ stream });
  const firstRetryMs = deps.retryMs ?? 1_000;
  let retryMs = firstRetryMs;
  let checkpoint = 0;
  let lastError: string | null = null;
  let stopped = false;
  let close: (() => Promise<void>) | undefined;
  let loop: Promise<void> | undefined;
  let retryTimer: NodeJS.Timeout | undefined;

  const readCheckpoint = async () =>
    (await db.query<{ seq: number }>("SELECT seq FROM checkpoints WHERE name = $1", [stream])).rows[0]?.seq ?? 0;

  const handle = async (m: RawMessage) => {
    if (m.seq <= checkpoint) return;
    const written = await appendEntries(db, { name: stream, seq: m.seq }, toEntries(stream, m));
    checkpoint = written ? m.seq : await readCheckpoint();
    if (lastError !== null) logger.info({ seq: m.seq }, "auditing again");
    lastError = null;
    retryMs = firstRetryMs;
  };

  const run = async () => {
    checkpoint = await readCheckpoint();
    const from = checkpoint + 1;
    const consumer = await js.consumers.get(stream, {
      filter_subjects: filter,
      ...(from > 1 ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from } : {}),
    });
    const messages = await consumer.consume();
    close = async () => {
      await messages.close();
    };
    if (stopped) await messages.close();
    logger.info({ checkpoint }, "following");
    for await (const m of messages) {
      await handle({ subject: m.subject, seq: m.seq, data: m.data, time: m.time });
      if (stopped) break;
    }
    if (!stopped) throw new Error(`the consumer on ${stream} ended`);
  };

  const launch = () => {
    loop = run().catch(async (err: unknown) => {
      if (stopped) return;
      lastError = err instanceof Error ? err.message : String(err);
      logger.error({ err, checkpoint, retryInMs: retryMs }, "auditing failed; retrying from the checkpoint");
      await close?.().catch(() => undefined);
      close = undefined;
      const delay = retryMs;
      retryMs = Math.min(retryMs * 2, 30_000);
      retryTimer = setTimeout(() => {
        retryTimer = undefined;
        if (!stopped) launch();
      }, delay);
    });
  };

  return {
    async start() {
      checkpoint = await readCheckpoint();
      launch();
    },
    async stop() {
      stopped = true;
      if (retryTimer) clearTimeout(retryTimer);
      await close?.().catch(() => undefined);
      await loop;
    },
    async status() {
      return { stream, checkpoint: await readCheckpoint(), error: lastError };
    },
  };
}
