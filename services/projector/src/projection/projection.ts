import type { Commit } from "@molt/contracts";
import type { Queryable } from "@molt/db";

/** One stored commit as every projection sees it, with the subject already taken apart. */
export interface ProjectedCommit {
  /** Stream sequence: the checkpoint and the order of everything. */
  seq: number;
  subject: string;
  commit: Commit;
  /** The host the subject belongs to (slot and host-meta subjects), decoded from its token; null otherwise. */
  hostId: string | null;
  /** The component of a slot subject; null otherwise. */
  component: string | null;
}

/**
 * A read model: its tables (append-only migrations, under its own migration set name) and how a
 * commit changes them. `apply` runs inside the runner's transaction, together with the checkpoint,
 * so it must not commit, must not read the clock and must give the same rows on a replay.
 */
export interface Projection {
  readonly name: string;
  readonly migrations: readonly string[];
  apply(tx: Queryable, c: ProjectedCommit): Promise<void>;
  /**
   * The same for a run of commits in stream order, in one transaction (the runner applies a
   * burst at once): for a projection that can write a run in fewer statements. Without it, `apply`
   * runs per commit. Must leave the same rows as `apply` commit by commit.
   */
  applyRun?(tx: Queryable, commits: readonly ProjectedCommit[]): Promise<void>;
}

