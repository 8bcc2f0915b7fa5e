import type { Db, Queryable } from "./db.js";
import { migrate } from "./migrate.js";

const CHECKPOINT_MIGRATIONS = [
  `CREATE TABLE IF NOT EXISTS checkpoints (
    name text PRIMARY KEY,
    seq bigint NOT NULL
  )`,
];

export async function readCheckpoint(q: Queryable, name: string): Promise<number> {
  const r = await q.query<{ seq: number }>("SELECT seq FROM checkpoints WHERE name = $1", [name]);
  return r.rows[0]?.seq ?? 0;
}

/**
 * Moves the checkpoint `name` to `seq` inside a transaction, unless it is already there or past
 * it (then false: the caller writes nothing). Its row lock orders concurrent workers on one
 * PostgreSQL, so a message is applied once however many workers follow the same stream.
 */
export async function advanceCheckpoint(tx: Queryable, name: string, seq: number): Promise<boolean> {
  const moved = await tx.query(
    `INSERT INTO checkpoints (name, seq) VALUES ($1, $2)
     ON CONFLICT (name) DO UPDATE SET seq = EXCLUDED.seq WHERE checkpoints.seq < EXCLUDED.seq
     RETURNING seq`,
    [name, seq],
  );
  return moved.rows.length > 0;
}

/** The two log calls the follower makes (a pino logger fits). */
export interface FollowerLogger {
  info(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface FollowerStatus {
  name: string;
  /** The last source sequence applied. */
  checkpoint: number;
  /** Why following is stuck (it retries with backoff), or null. */
  error: string | null;
}

export interface CheckpointedFollower {
  start(): Promise<void>;
  stop(): Promise<void>;
  status(): Promise<FollowerStatus>;
}

/**
 * Applies each message of a source (a stream read from a sequence on) to the database and moves
 * the checkpoint in the same transaction: a crash leaves all of a message or none of it, and a
 * restart resumes right after the last one applied. A failure rolls the message back whole, then
 * the source is reopened from the checkpoint after a backoff (doubling up to 30 s): nothing is
 * skipped, nothing is applied twice.
 */
export function createCheckpointedFollower<M extends { seq: number }>(deps: {
  db: Db;
  logger: FollowerLogger;
  /** Checkpoint row name: one per source followed. */
  name: string;
  /** Opens the source at `fromSeq`; it calls `handler` in order and `onError` when it fails. */
  open: (fromSeq: number, handler: (m: M) => Promise<void>, onError: (err: unknown) => void) => { stop(): Promise<void> };
  /** Writes one message's rows; runs after the checkpoint moved, in the same transaction. */
  apply: (tx: Queryable, m: M) => Promise<void>;
  retryMs?: number;
}): CheckpointedFollower {
  const { db, name } = deps;
  const { logger } = deps;
  const firstRetryMs = deps.retryMs ?? 1_000;
  let retryMs = firstRetryMs;
  let checkpoint = 0;
  let lastError: string | null = null;
  let stopped = false;
  let source: { stop(): Promise<void> } | undefined;
  let retryTimer: NodeJS.Timeout | undefined;

  const handle = async (m: M): Promise<void> => {
    // A reopened source can hand back messages already applied: skip them cheaply.
    if (m.seq <= checkpoint) return;
    const applied = await db.transaction(async (tx) => {
      if (!(await advanceCheckpoint(tx, name, m.seq))) return false;
      await deps.apply(tx, m);
      return true;
    });
    checkpoint = applied ? m.seq : await readCheckpoint(db, name);
    if (lastError !== null) logger.info({ follower: name, seq: m.seq }, "following again");
    lastError = null;
    retryMs = firstRetryMs;
  };

  const open = async (): Promise<void> => {
    checkpoint = await readCheckpoint(db, name);
    logger.info({ follower: name, checkpoint }, "following");
    source = deps.open(checkpoint + 1, handle, onFailure);
  };

  function onFailure(err: unknown): void {
    lastError = err instanceof Error ? err.message : String(err);
    logger.error({ follower: name, err, checkpoint, retryInMs: retryMs }, "applying failed; retrying from the checkpoint");
    const failed = source;
    source = undefined;
    const delay = retryMs;
    retryMs = Math.min(retryMs * 2, 30_000);
    // stop() closes the consumer the failed loop left open.
    void (failed?.stop() ?? Promise.resolve()).finally(() => {
      if (stopped) return;
      retryTimer = setTimeout(() => {
        retryTimer = undefined;
        if (!stopped) open().catch(onFailure);
      }, delay);
    });
  }

  return {
    async start() {
      await migrate(db, "checkpoints", CHECKPOINT_MIGRATIONS);
      await open();
    },
    async stop() {
      stopped = true;
      if (retryTimer) clearTimeout(retryTimer);
      await source?.stop();
      source = undefined;
    },
    async status() {
      return { name, checkpoint: await readCheckpoint(db, name), error: lastError };
    },
  };
}
