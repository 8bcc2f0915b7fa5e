import { decodeHostToken, parseEventSubject } from "@molt/contracts";
import { createCheckpointedFollower, inSchema, migrate, pgSafe, readCheckpoint, readDeadLetters, refusedByDatabase, type Db, type DeadLetter } from "@molt/db";
import { CorruptCommitError, storedCommitOf, type EventStore, type RawMessage, type StoredCommit } from "@molt/event-store";
import type { Logger } from "@molt/runtime";
import type { ProjectedCommit, Projection } from "./projection.js";

export interface ProjectorStatus {
  /** The last stream sequence applied to the views. */
  checkpoint: number;
  streamLastSeq: number;
  lag: number;
  /** Why projecting is stuck (it retries with backoff), or null. */
  error: string | null;
  /** Commits given up on (kept in the dead-letter table); the projection went on past them. */
  deadLetters: number;
}

export interface ProjectionRunner {
  /** Migrates every projection's tables, then follows the stream from the checkpoint on. */
  start(): Promise<void>;
  stop(): Promise<void>;
  status(): Promise<ProjectorStatus>;
  deadLetters(limit?: number): Promise<DeadLetter[]>;
  /** The last stream sequence applied, as this runner knows it (no query). */
  checkpoint(): number;
  /**
   * Replays the stream into fresh tables and swaps them in atomically; the views keep answering
   * meanwhile. Throws RebuildBusyError while one is under way.
   */
  rebuild(): Promise<RebuildResult>;
  /** Told of every commit once it is in the views (live updates); returns the unsubscribe. */
  onApplied(listener: (c: ProjectedCommit) => void): () => void;
}

export interface RebuildResult {
  /** The checkpoint of the swapped-in views. */
  checkpoint: number;
  tookMs: number;
}

export class RebuildBusyError extends Error {
  constructor() {
    super("a rebuild is already under way");
  }
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
  /** A commit no reader can parse, or whose rows the database refuses, this many times in a row is dead-lettered (default 3). */
  deadLetterAfter?: number;
  /** How long a run of commits waits for more before it is applied in one transaction (default 20 ms; 0: at once). */
  lingerMs?: number;
  /**
   * Commits applied in one transaction at most (default 2048). A live rollout makes small runs
   * anyway (what came in during the linger); while catching up (a restart, a rebuild) a large run
   * spreads each statement's fixed cost (PGlite's is ~0.2–2 ms) over more rows. A run of 2048
   * holds the database for ~0.1–0.5 s.
   */
  batchSize?: number;
  /** How often a rebuild checks how far its copy got (default 50 ms). */
  rebuildPollMs?: number;
}

/**
 * Splits the subject once so projections never parse it themselves; cleans what PostgreSQL would
 * refuse, unless the commit's bytes show it holds none (`escaped` false: see mayHoldRefused).
 */
export function toProjected(c: StoredCommit, escaped = true): ProjectedCommit {
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
  return { seq: c.seq, subject: c.subject, commit: escaped ? pgSafe(c.commit) : c.commit, hostId, component };
}

/** A stream message as it arrived, decoded then: its commit, or why it could not be read. */
interface Received {
  seq: number;
  raw: RawMessage;
  commit: ProjectedCommit | undefined;
  error: unknown;
}

/**
 * Whether a commit's JSON may decode to a NUL or a lone surrogate (what pgSafe replaces): JSON
 * writes either only as a `\u` escape (a raw control character is not JSON; the UTF-8 decoder
 * never yields a lone surrogate), so bytes without `\u` hold neither and need no cleaned copy.
 * pgSafe copied every commit: ~8 % of the projector's thread while catching up.
 */
export function mayHoldRefused(data: Uint8Array): boolean {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).includes("\\u");
}

function receive(raw: RawMessage): Received {
  try {
    return { seq: raw.seq, raw, commit: toProjected(storedCommitOf(raw), mayHoldRefused(raw.data)), error: undefined };
  } catch (error) {
    return { seq: raw.seq, raw, commit: undefined, error };
  }
}

/** The commit, or the error its decoding threw (thrown now, where applying it fails). */
function projected(m: Received): ProjectedCommit {
  if (m.commit === undefined) throw m.error;
  return m.commit;
}

/**
 * Applies each commit of MOLT_EVENTS to every projection, in the transaction that moves the
 * checkpoint (the shared checkpointed follower): a crash leaves either all of a commit or none
 * of it, and a restart resumes right after the last commit applied.
 */
export function createRunner(deps: RunnerDeps): ProjectionRunner {
  const { db, store, projections } = deps;
  const name = deps.name ?? "projector";
  const decoder = new TextDecoder();
  const listeners = new Set<(c: ProjectedCommit) => void>();
  let applied = 0;
  // Each message is decoded as it arrives, so the next run's decoding goes on while the database
  // applies this one (PostgreSQL, or PGlite in a thread of its own). A commit no reader can parse
  // keeps its error, thrown where its rows would be applied: like a row the database refuses, it
  // fails that one message (and is dead-lettered), not the whole subscription forever.
  const followerOn = (target: Db, live: boolean) =>
    createCheckpointedFollower<Received>({
      db: target,
      logger: deps.logger,
      name,
      open: (fromSeq, handler, onError) => store.subscribeRaw({ fromSeq, handler: (raw) => handler(receive(raw)), onError }),
      apply: async (tx, m) => {
        const c = projected(m);
        for (const p of projections) await p.apply(tx, c);
      },
      // Projections write disjoint tables, so each may take the whole run at once.
      applyBatch: async (tx, ms) => {
        const cs = ms.map(projected);
        for (const p of projections) {
          if (p.applyRun) await p.applyRun(tx, cs);
          else for (const c of cs) await p.apply(tx, c);
        }
      },
      ...(live ? { onApplied: told } : {}),
      deadLetter: {
        after: deps.deadLetterAfter ?? 3,
        describe: (m) => ({ subject: m.raw.subject, payload: decoder.decode(m.raw.data) }),
        isPoison: (err) => err instanceof CorruptCommitError || refusedByDatabase(err),
      },
      ...(deps.retryMs !== undefined ? { retryMs: deps.retryMs } : {}),
      // PGlite's cost is mostly per statement and per transaction: a rollout's commits come in
      // bursts, and 20 ms makes one transaction of a burst (views that much later).
      lingerMs: deps.lingerMs ?? 20,
      batchSize: deps.batchSize ?? 2048,
    });
  /** Told once a commit's transaction has committed: the commit was decoded on arrival, so it rides on the message. */
  const told = (m: Received) => {
    applied = m.seq;
    const c = m.commit;
    if (c === undefined) return;
    for (const listener of listeners) {
      try {
        listener(c);
      } catch (err) {
        deps.logger.warn({ err }, "a live-update listener failed");
      }
    }
  };
  const migrateAll = async (target: Db) => {
    for (const p of projections) await migrate(target, `${name}.${p.name}`, p.migrations);
  };
  let follower = followerOn(db, true);
  let rebuilding: Promise<RebuildResult> | undefined;

  /**
   * Replays the stream from sequence 1 into fresh tables in a schema of their own while the live
   * views keep answering and following; once the copy has caught up with the stream's end as it
   * was when the rebuild began, the live follower stops, the copy catches up to the last commit
   * and one transaction swaps the schemas (renames), then following resumes on the new tables
   * from their own checkpoint. The old tables are dropped.
   */
  const rebuild = async (): Promise<RebuildResult> => {
    const started = Date.now();
    const live = (await db.query<{ schema: string }>("SELECT current_schema() AS schema")).rows[0]!.schema;
    const shadow = `${name.replace(/[^a-z0-9_]/gi, "_")}_rebuild_${started}`;
    await db.exec(`CREATE SCHEMA ${shadow}`);
    const copyDb = inSchema(db, shadow);
    const copy = followerOn(copyDb, false);
    let liveStopped = false;
    try {
      await migrateAll(copyDb);
      await copy.start();
      const reached = async (seq: number) => {
        const retry = deps.rebuildPollMs ?? 50;
        for (;;) {
          const s = await copy.status();
          if (s.checkpoint >= seq) return;
          await new Promise((r) => setTimeout(r, retry));
        }
      };
      await reached(await store.lastSequence());
      // The last stretch with the live follower stopped, so nothing lands in the old tables after the copy's last commit.
      liveStopped = true;
      await follower.stop();
      await reached(await readCheckpoint(db, name));
      await copy.stop();
      const retired = `${shadow}_old`;
      await db.transaction(async (tx) => {
        await tx.exec(`ALTER SCHEMA ${live} RENAME TO ${retired}; ALTER SCHEMA ${shadow} RENAME TO ${live}`);
      });
      await db.exec(`DROP SCHEMA ${retired} CASCADE`);
    } catch (err) {
      await copy.stop();
      await db.exec(`DROP SCHEMA IF EXISTS ${shadow} CASCADE`).catch(() => undefined);
      throw err;
    } finally {
      // Following again, on the swapped-in tables (or the old ones, if the rebuild failed).
      if (liveStopped) {
        follower = followerOn(db, true);
        if (!stopped) await follower.start();
      }
    }
    const checkpoint = await readCheckpoint(db, name);
    applied = checkpoint;
    return { checkpoint, tookMs: Date.now() - started };
  };
  let stopped = false;

  return {
    async start() {
      await migrateAll(db);
      await follower.start();
      applied = Math.max(applied, (await follower.status()).checkpoint);
    },
    async stop() {
      stopped = true;
      await rebuilding?.catch(() => undefined);
      await follower.stop();
    },
    rebuild() {
      if (rebuilding) throw new RebuildBusyError();
      rebuilding = rebuild().finally(() => {
        rebuilding = undefined;
      });
      return rebuilding;
    },
    async status() {
      const [s, last] = await Promise.all([follower.status(), store.lastSequence()]);
      return { checkpoint: s.checkpoint, streamLastSeq: last, lag: Math.max(0, last - s.checkpoint), error: s.error, deadLetters: s.deadLetters };
    },
    deadLetters: (limit) => readDeadLetters(db, name, limit),
    checkpoint: () => applied,
    onApplied(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}
