import { decodeHostToken, parseEventSubject } from "@molt/contracts";
import { migrate, pgSafe, type Db, type Queryable } from "@molt/db";
import type { EventStore, StoredCommit, Subscription } from "@molt/event-store";
import type { Logger } from "@molt/runtime";
import type { ProjectedCommit, Projection } from "./projection.js";

const CHECKPOINT_MIGRATIONS = [
  `CREATE TABLE checkpoints (
    name text PRIMARY KEY,
    seq bigint NOT NULL
  )`,
];

export interface ProjectorStatus {
  /** The last stream sequence applied to the views. */
  checkpoint: number;
  streamLastSeq: number;
  lag: number;
  /** Why projecting is stuck (it retries with backoff), or null. */
  error: string | null;
}

export interface ProjectionRunner {
  /** Migrates every projection's tables, then follows the stream from the checkpoint on. */
  start(): Promise<void>;
  stop(): Promise<void>;
  status(): Promise<ProjectorStatus>;
}

export interface RunnerDeps {
  db: Db;
  store: EventStore;
  logger: Logger;
  projections: readonly Projection[];
  /** Checkpoint row name; one per set of projections applied together. */
  name?: string;
  /** First retry delay after a failure (doubles up to 30 s). */
  retryMs?: number;
}

export async function readCheckpoint(q: Queryable, name: string): Promise<number> {
  const r = await q.query<{ seq: number }>("SELECT seq FROM checkpoints WHERE name = $1", [name]);
  return r.rows[0]?.seq ?? 0;
}

/** Splits the subject once so projections never parse it themselves; cleans what PostgreSQL would refuse. */
export function toProjected(c: StoredCommit): ProjectedCommit {
  const parsed = parseEventSubject(c.subject);
  let hostId: string | null = null;
  let component: string | null = null;
  if (parsed?.kind === "slot" || parsed?.kind === "hostMeta") {
    try {
      hostId = decodeHostToken(parsed.hostToken);
    } catch {
      // Only the event store writes these subjects; a bad token is left out of host views, not fatal.
      hostId = null;
    }
  }
  if (parsed?.kind === "slot") component = parsed.component;
  return { seq: c.seq, subject: c.subject, commit: pgSafe(c.commit), hostId, component };
}

/**
 * Applies each commit of MOLT_EVENTS to every projection and moves the checkpoint in the same
 * transaction: a crash leaves either all of a commit or none of it, and a restart resumes right
 * after the last commit applied.
 */
export function createRunner(deps: RunnerDeps): ProjectionRunner {
  const { db, store, logger, projections } = deps;
  const name = deps.name ?? "projector";
  const firstRetryMs = deps.retryMs ?? 1_000;
  let checkpoint = 0;
  let subscription: Subscription | undefined;
  let retryTimer: NodeJS.Timeout | undefined;
  let retryMs = firstRetryMs;
  let lastError: string | null = null;
  let stopped = false;

  const apply = async (stored: StoredCommit): Promise<void> => {
    // A resubscription can hand back commits we already hold: skip them cheaply.
    if (stored.seq <= checkpoint) return;
    const c = toProjected(stored);
    const applied = await db.transaction(async (tx) => {
      // The checkpoint moves first: its row lock orders concurrent workers on one PostgreSQL,
      // and a worker that finds it already past this commit applies nothing.
      const moved = await tx.query(
        `INSERT INTO checkpoints (name, seq) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET seq = EXCLUDED.seq WHERE checkpoints.seq < EXCLUDED.seq
         RETURNING seq`,
        [name, c.seq],
      );
      if (moved.rows.length === 0) return false;
      for (const p of projections) await p.apply(tx, c);
      return true;
    });
    checkpoint = applied ? c.seq : await readCheckpoint(db, name);
    if (lastError !== null) {
      logger.info({ seq: c.seq }, "projecting again");
      lastError = null;
    }
    retryMs = firstRetryMs;
  };

  const subscribe = async (): Promise<void> => {
    checkpoint = await readCheckpoint(db, name);
    logger.info({ checkpoint }, "following the event stream");
    subscription = store.subscribe({ fromSeq: checkpoint + 1, handler: apply, onError: onFailure });
  };

  function onFailure(err: unknown): void {
    lastError = err instanceof Error ? err.message : String(err);
    logger.error({ err, checkpoint, retryInMs: retryMs }, "projection failed; retrying from the checkpoint");
    const failed = subscription;
    subscription = undefined;
    const delay = retryMs;
    retryMs = Math.min(retryMs * 2, 30_000);
    // stop() closes the consumer the failed loop left open.
    void (failed?.stop() ?? Promise.resolve()).finally(() => {
      if (stopped) return;
      retryTimer = setTimeout(() => {
        retryTimer = undefined;
        if (stopped) return;
        subscribe().catch(onFailure);
      }, delay);
    });
  }

  return {
    async start() {
      await migrate(db, `${name}.checkpoints`, CHECKPOINT_MIGRATIONS);
      for (const p of projections) await migrate(db, `${name}.${p.name}`, p.migrations);
      await subscribe();
    },
    async stop() {
      stopped = true;
      if (retryTimer) clearTimeout(retryTimer);
      await subscription?.stop();
      subscription = undefined;
    },
    async status() {
      const [cp, last] = await Promise.all([readCheckpoint(db, name), store.lastSequence()]);
      return { checkpoint: cp, streamLastSeq: last, lag: Math.max(0, last - cp), error: lastError };
    },
  };
}
