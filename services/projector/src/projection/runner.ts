import { decodeHostToken, parseEventSubject } from "@molt/contracts";
import { createCheckpointedFollower, migrate, pgSafe, readDeadLetters, refusedByDatabase, type Db, type DeadLetter } from "@molt/db";
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
  /** Told of every commit once it is in the views (live updates); returns the unsubscribe. */
  onApplied(listener: (c: ProjectedCommit) => void): () => void;
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
 * Applies each commit of MOLT_EVENTS to every projection, in the transaction that moves the
 * checkpoint (the shared checkpointed follower): a crash leaves either all of a commit or none
 * of it, and a restart resumes right after the last commit applied.
 */
export function createRunner(deps: RunnerDeps): ProjectionRunner {
  const { db, store, projections } = deps;
  const name = deps.name ?? "projector";
  const decoder = new TextDecoder();
  const listeners = new Set<(c: ProjectedCommit) => void>();
  /** The commits being applied (a run shares one transaction), handed to listeners once it has committed. */
  const pending = new Map<number, ProjectedCommit>();
  let applied = 0;
  // Raw messages, parsed inside apply: a commit no reader can parse, like a row the database
  // refuses, fails that one message (and is dead-lettered), not the whole subscription forever.
  const follower = createCheckpointedFollower<RawMessage>({
    db,
    logger: deps.logger,
    name,
    open: (fromSeq, handler, onError) => store.subscribeRaw({ fromSeq, handler, onError }),
    apply: async (tx, raw) => {
      const c = toProjected(storedCommitOf(raw));
      for (const p of projections) await p.apply(tx, c);
      pending.set(c.seq, c);
    },
    // Projections write disjoint tables, so each may take the whole run at once.
    applyBatch: async (tx, raws) => {
      const cs = raws.map((raw) => toProjected(storedCommitOf(raw)));
      for (const p of projections) {
        if (p.applyRun) await p.applyRun(tx, cs);
        else for (const c of cs) await p.apply(tx, c);
      }
      for (const c of cs) pending.set(c.seq, c);
    },
    onApplied: (raw) => {
      applied = raw.seq;
      const c = pending.get(raw.seq);
      // A run rolled back leaves its entries behind: drop them with this one.
      for (const seq of pending.keys()) if (seq <= raw.seq) pending.delete(seq);
      if (c === undefined) return;
      for (const listener of listeners) {
        try {
          listener(c);
        } catch (err) {
          deps.logger.warn({ err }, "a live-update listener failed");
        }
      }
    },
    deadLetter: {
      after: deps.deadLetterAfter ?? 3,
      describe: (m) => ({ subject: m.subject, payload: decoder.decode(m.data) }),
      isPoison: (err) => err instanceof CorruptCommitError || refusedByDatabase(err),
    },
    ...(deps.retryMs !== undefined ? { retryMs: deps.retryMs } : {}),
    // PGlite's cost is mostly per statement and per transaction: a rollout's commits come in
    // bursts, and 20 ms makes one transaction of a burst (views that much later).
    lingerMs: deps.lingerMs ?? 20,
  });
  return {
    async start() {
      for (const p of projections) await migrate(db, `${name}.${p.name}`, p.migrations);
      await follower.start();
      applied = Math.max(applied, (await follower.status()).checkpoint);
    },
    stop: () => follower.stop(),
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
