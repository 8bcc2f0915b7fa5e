import type { Db, Queryable } from "./db.js";
import { migrate } from "./migrate.js";
import { pgSafe } from "./text.js";

const CHECKPOINT_MIGRATIONS = [
  `CREATE TABLE IF NOT EXISTS checkpoints (
    name text PRIMARY KEY,
    seq bigint NOT NULL
  )`,
  // Messages a follower gave up on (poison): kept whole with the error, so nothing is lost and an
  // operator can see, fix and replay them.
  `CREATE TABLE IF NOT EXISTS dead_letters (
    name text NOT NULL,
    seq bigint NOT NULL,
    subject text NOT NULL,
    error text NOT NULL,
    payload text NOT NULL,
    attempts int NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, seq)
  )`,
];

/**
 * A value the database refuses (SQLSTATE class 22, data exception: a date out of range, bytes
 * that are not text; class 23, an integrity violation): retrying the same message cannot help.
 */
export function refusedByDatabase(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" && /^2[23][0-9A-Z]{3}$/.test(code);
}

/** Creates the checkpoint and dead-letter tables (a follower's start does it too). */
export async function migrateCheckpoints(db: Db): Promise<void> {
  await migrate(db, "checkpoints", CHECKPOINT_MIGRATIONS);
}

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

/**
 * Locks the checkpoint row `name` for the transaction (creating it at 0) and returns its
 * sequence: a worker applying a run of messages learns which of them are still to apply, and
 * holds off other workers on the same checkpoint until it commits.
 */
async function lockCheckpoint(tx: Queryable, name: string): Promise<number> {
  const r = await tx.query<{ seq: string | number }>(
    `INSERT INTO checkpoints (name, seq) VALUES ($1, 0)
     ON CONFLICT (name) DO UPDATE SET seq = checkpoints.seq
     RETURNING seq`,
    [name],
  );
  return Number(r.rows[0]?.seq ?? 0);
}

/** The two log calls the follower makes (a pino logger fits). */
export interface FollowerLogger {
  info(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface FollowerStatus {
  name: string;
  /** The last source sequence applied (or dead-lettered). */
  checkpoint: number;
  /** Why following is stuck (it retries with backoff), or null. */
  error: string | null;
  /** How many messages were given up on and kept in `dead_letters`. */
  deadLetters: number;
}

export interface DeadLetter {
  seq: number;
  subject: string;
  error: string;
  payload: string;
  attempts: number;
  at: string;
}

export async function readDeadLetters(q: Queryable, name: string, limit = 100): Promise<DeadLetter[]> {
  const r = await q.query<{ seq: string | number; subject: string; error: string; payload: string; attempts: number; at: Date | string }>(
    "SELECT seq, subject, error, payload, attempts, at FROM dead_letters WHERE name = $1 ORDER BY seq LIMIT $2",
    [name, limit],
  );
  return r.rows.map((row) => ({ ...row, seq: Number(row.seq), at: new Date(row.at).toISOString() }));
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
 *
 * With `deadLetter`, a message that fails `deadLetter.after` times in a row with an error that
 * belongs to the message (`isPoison`: by default a value the database refuses, SQLSTATE classes 22
 * and 23) is stored in `dead_letters` with its error, in the transaction that moves the checkpoint
 * past it, and following goes on. Any other failure (the database away, a table missing) is the
 * environment's: the follower waits it out however long it takes, as before.
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
  /** Writes a run of messages' rows at once (default: `apply` for each, in order), in the transaction that moves the checkpoint past them. */
  applyBatch?: (tx: Queryable, ms: readonly M[]) => Promise<void>;
  /** Messages applied per transaction at most (default 256); 1 applies each in its own. */
  batchSize?: number;
  /** How long a run waits for more messages before it is applied (default 0: at once). */
  lingerMs?: number;
  retryMs?: number;
  /** Told of each message once its transaction has committed (live views: SSE, metrics). */
  onApplied?: (m: M) => void;
  /** Give up on a message after this many failures in a row, keeping it as a dead letter. */
  deadLetter?: {
    after: number;
    describe: (m: M) => { subject: string; payload: string };
    /** Whether the error is the message's own; `refusedByDatabase` when not given. */
    isPoison?: (err: unknown) => boolean;
  };
}): CheckpointedFollower {
  const { db, name } = deps;
  const { logger } = deps;
  const firstRetryMs = deps.retryMs ?? 1_000;
  const batchSize = Math.max(1, deps.batchSize ?? 256);
  const lingerMs = deps.lingerMs ?? 0;
  let retryMs = firstRetryMs;
  let checkpoint = 0;
  let lastError: string | null = null;
  let stopped = false;
  let source: { stop(): Promise<void> } | undefined;
  let retryTimer: NodeJS.Timeout | undefined;
  /** Consecutive failures of the message at `failing.seq`. */
  let failing = { seq: 0, attempts: 0 };

  /** Stores `m` as a dead letter and moves the checkpoint past it. */
  const bury = async (dead: NonNullable<typeof deps.deadLetter>, m: M, err: unknown, attempts: number): Promise<void> => {
    const { subject, payload } = dead.describe(m);
    const error = err instanceof Error ? err.message : String(err);
    await db.transaction(async (tx) => {
      if (!(await advanceCheckpoint(tx, name, m.seq))) return;
      await tx.query(
        `INSERT INTO dead_letters (name, seq, subject, error, payload, attempts) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (name, seq) DO NOTHING`,
        [name, m.seq, pgSafe(subject), pgSafe(error), pgSafe(payload), attempts],
      );
    });
    logger.error({ follower: name, seq: m.seq, subject, err, attempts }, "gave up on a message: kept as a dead letter");
  };

  /** Applies one message in its own transaction: the dead-letter path, and a failed batch retried message by message. */
  const applyOne = async (m: M): Promise<void> => {
    let applied: boolean;
    let buried = false;
    try {
      applied = await db.transaction(async (tx) => {
        if (!(await advanceCheckpoint(tx, name, m.seq))) return false;
        await deps.apply(tx, m);
        return true;
      });
    } catch (err) {
      const dead = deps.deadLetter;
      if (!dead || !(dead.isPoison ?? refusedByDatabase)(err)) throw err;
      const attempts = failing.seq === m.seq ? failing.attempts + 1 : 1;
      failing = { seq: m.seq, attempts };
      if (attempts < dead.after) throw err;
      await bury(dead, m, err, attempts);
      applied = buried = true;
    }
    checkpoint = applied ? m.seq : await readCheckpoint(db, name);
    if (applied && !buried) deps.onApplied?.(m);
  };

  /**
   * Applies a run of messages in one transaction that moves the checkpoint to the last: the
   * checkpoint row is locked first and messages at or below it are left out, so a message is
   * applied once even if another worker or an earlier source got there first.
   */
  const applyBatch = async (batch: readonly M[]): Promise<void> => {
    const fresh = await db.transaction(async (tx) => {
      const from = await lockCheckpoint(tx, name);
      const todo = batch.filter((m) => m.seq > from);
      if (todo.length === 0) return todo;
      if (deps.applyBatch) await deps.applyBatch(tx, todo);
      else for (const m of todo) await deps.apply(tx, m);
      await tx.query("UPDATE checkpoints SET seq = $2 WHERE name = $1", [name, todo[todo.length - 1]!.seq]);
      return todo;
    });
    checkpoint = fresh.length > 0 ? fresh[fresh.length - 1]!.seq : await readCheckpoint(db, name);
    for (const m of fresh) deps.onApplied?.(m);
  };

  /** Messages taken from the source, not yet applied; `generation` drops them when the source is reopened. */
  let queue: M[] = [];
  let generation = 0;
  let flushing: Promise<void> | undefined;
  /** Settles when the run being applied is done (or applying stops): the source's back-pressure waits on it. */
  let runDone: Promise<void> = Promise.resolve();
  let settleRun = () => {};
  const nextRun = () => {
    settleRun();
    runDone = new Promise((r) => (settleRun = r));
  };

  /**
   * Applies what the source has handed over, in runs of up to `batchSize`, while it keeps
   * coming: a burst shares transactions (the next run fills while one commits), a lone message
   * is applied at once. A run that fails is tried again message by message, so a poison
   * message is found (and dead-lettered) and the rest still land; any other failure reopens the
   * source from the checkpoint, as before.
   */
  const flush = async (gen: number): Promise<void> => {
    while (queue.length > 0 && gen === generation && !stopped) {
      // A burst's next messages are usually a few ms behind its first: waiting for them a
      // moment makes one transaction of what would be many (the views lag that much more).
      if (lingerMs > 0 && queue.length < batchSize) {
        await new Promise((r) => setTimeout(r, lingerMs));
        if (gen !== generation || stopped) return;
      }
      const batch = queue.slice(0, batchSize);
      try {
        if (batch.length === 1) await applyOne(batch[0]!);
        else {
          try {
            await applyBatch(batch);
          } catch {
            for (const m of batch) if (m.seq > checkpoint) await applyOne(m);
          }
        }
      } catch (err) {
        if (gen === generation) onFailure(err);
        return;
      }
      if (gen !== generation) return;
      queue.splice(0, batch.length);
      nextRun();
      if (lastError !== null) logger.info({ follower: name, seq: batch[batch.length - 1]!.seq }, "following again");
      lastError = null;
      retryMs = firstRetryMs;
    }
  };

  const handle = async (m: M, gen: number): Promise<void> => {
    // A source that failed may still hand over messages past the one that failed: never applied.
    if (gen !== generation) return;
    // A reopened source can hand back messages already applied: skip them cheaply.
    if (m.seq <= checkpoint || m.seq <= (queue.at(-1)?.seq ?? 0)) return;
    queue.push(m);
    void drain();
    // Back-pressure: the source waits while a full run is queued behind the one being applied,
    // until that one is done. Not until the queue is empty: the next run fills while this one
    // commits, so a database that works beside this thread (PostgreSQL, PGlite in a worker) is
    // handed a full run as soon as it is free, instead of waiting for the source to start again.
    while (queue.length >= 2 * batchSize && gen === generation && !stopped) await runDone;
  };

  /** Starts applying the queue unless that is under way; started again if messages came in as it ended. */
  const drain = (): Promise<void> => {
    if (!flushing) nextRun();
    flushing ??= flush(generation).finally(() => {
      flushing = undefined;
      settleRun();
      if (queue.length > 0 && !stopped) void drain();
    });
    return flushing;
  };

  const open = async (): Promise<void> => {
    generation++;
    queue = [];
    checkpoint = await readCheckpoint(db, name);
    logger.info({ follower: name, checkpoint }, "following");
    const gen = generation;
    source = deps.open(checkpoint + 1, (m) => handle(m, gen), onFailure);
  };

  function onFailure(err: unknown): void {
    lastError = err instanceof Error ? err.message : String(err);
    logger.error({ follower: name, err, checkpoint, retryInMs: retryMs }, "applying failed; retrying from the checkpoint");
    const failed = source;
    source = undefined;
    // What was queued comes again from the reopened source; a run being applied ends first.
    generation++;
    queue = [];
    const running = flushing;
    const delay = retryMs;
    retryMs = Math.min(retryMs * 2, 30_000);
    // stop() closes the consumer the failed loop left open.
    void Promise.all([failed?.stop(), running]).finally(() => {
      if (stopped) return;
      retryTimer = setTimeout(() => {
        retryTimer = undefined;
        if (!stopped) open().catch(onFailure);
      }, delay);
    });
  }

  return {
    async start() {
      await migrateCheckpoints(db);
      await open();
    },
    async stop() {
      stopped = true;
      if (retryTimer) clearTimeout(retryTimer);
      await source?.stop();
      source = undefined;
      await flushing;
    },
    async status() {
      const dead = await db.query<{ n: string | number }>("SELECT count(*) AS n FROM dead_letters WHERE name = $1", [name]);
      return { name, checkpoint: await readCheckpoint(db, name), error: lastError, deadLetters: Number(dead.rows[0]?.n ?? 0) };
    },
  };
}
