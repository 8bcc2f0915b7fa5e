import { subjects, type PackageEvent, type PackageManifest, type SignedRepositoryMetadata } from "@molt/contracts";
import { ConflictError, type EventBodyOf } from "@molt/domain";
import type { EventStore, StoredCommit } from "@molt/event-store";

/** One published variant of a component, as the aggregate's events describe it. */
export interface PublishedPackage {
  component: string;
  version: string;
  platform: string;
  sha256: string;
  size: number;
  manifest: PackageManifest;
  signature?: string;
  keyId?: string;
  publishedAt: string;
  /** Stream sequence of the commit that published it: orders the listing. */
  seq: number;
  yanked?: { reason: string; at: string };
}

/** The package aggregate of one component (`molt.es.package.<component>`). */
export interface PackageState {
  readonly packages: ReadonlyMap<string, PublishedPackage>;
  /** The latest signed repository metadata the component's publisher handed over (null: none yet). */
  readonly metadata: SignedRepositoryMetadata | null;
}

export const variantKey = (version: string, platform: string) => `${version} ${platform}`;

export function initialPackageState(): PackageState {
  return { packages: new Map(), metadata: null };
}

/** Folds one commit's events into a new state (the old one is left as it was, for readers holding it). */
export function evolvePackage(state: PackageState, event: PackageEvent, seq: number): PackageState {
  const packages = new Map(state.packages);
  let metadata = state.metadata;
  switch (event.type) {
    case "PackagePublished": {
      const d = event.data;
      packages.set(variantKey(d.version, d.platform), {
        component: d.component,
        version: d.version,
        platform: d.platform,
        sha256: d.sha256,
        size: d.size,
        manifest: d.manifest,
        ...(d.signature !== undefined ? { signature: d.signature } : {}),
        ...(d.keyId !== undefined ? { keyId: d.keyId } : {}),
        publishedAt: event.metadata.occurredAt,
        seq,
      });
      break;
    }
    case "PackageYanked": {
      const d = event.data;
      for (const [key, p] of packages)
        if (p.version === d.version && (d.platform === undefined || p.platform === d.platform))
          packages.set(key, { ...p, yanked: { reason: d.reason, at: event.metadata.occurredAt } });
      break;
    }
    case "PackageMetadataSigned":
      metadata = event.data.signed;
      break;
    default: {
      const never: never = event;
      throw new Error(`unknown package event ${JSON.stringify(never)}`);
    }
  }
  return { packages, metadata };
}

export interface PublishCommand {
  manifest: PackageManifest;
  signature?: string;
  keyId?: string;
}

export type PublishDecision =
  | { kind: "publish"; events: [EventBodyOf<"PackagePublished">] }
  | { kind: "replay"; existing: PublishedPackage };

/**
 * Versions are immutable: the same bytes again are a replay (nothing new), other bytes under
 * a published component+version+platform are a conflict.
 */
export function decidePublish(command: PublishCommand, state: PackageState): PublishDecision {
  const m = command.manifest;
  const existing = state.packages.get(variantKey(m.version, m.platform));
  if (existing) {
    if (existing.sha256 === m.sha256) return { kind: "replay", existing };
    throw new ConflictError(
      `${m.component} ${m.version} ${m.platform} is already published with sha256 ${existing.sha256}; versions are immutable`,
    );
  }
  return {
    kind: "publish",
    events: [
      {
        type: "PackagePublished",
        data: {
          component: m.component,
          version: m.version,
          platform: m.platform,
          sha256: m.sha256,
          size: m.size,
          manifest: m,
          ...(command.signature !== undefined ? { signature: command.signature } : {}),
          ...(command.keyId !== undefined ? { keyId: command.keyId } : {}),
        },
      },
    ],
  };
}

export interface Snapshot {
  /** The last commit folded in (0: no commit yet); the next append expects it. */
  seq: number;
  state: PackageState;
}

export interface PackageCatalog {
  /** The aggregate caught up with the stream: one direct get, plus a replay of only what is new. */
  current(component: string): Promise<Snapshot>;
  /** A cache hit needs no round trip (a variant's bytes never change; its yank may be seen late); a miss catches up first. */
  find(component: string, version: string, platform: string): Promise<PublishedPackage | undefined>;
}

/**
 * In-process cache of package aggregates keyed by subject with the last sequence folded in.
 * It may be stale; appends carry the expected sequence, so a stale cache costs a retry, never
 * a wrong write.
 */
export function createPackageCatalog(store: EventStore): PackageCatalog {
  const cache = new Map<string, Snapshot>();
  const inFlight = new Map<string, Promise<Snapshot>>();

  const fold = (snap: Snapshot, commits: StoredCommit[]): Snapshot => {
    let { seq, state } = snap;
    for (const c of commits) {
      if (c.seq <= seq) continue;
      for (const e of c.commit.events)
        // Only package events belong on a package subject; anything else is not ours to fold.
        if (e.type === "PackagePublished" || e.type === "PackageYanked" || e.type === "PackageMetadataSigned") state = evolvePackage(state, e, c.seq);
      seq = c.seq;
    }
    return { seq, state };
  };

  const catchUp = async (subject: string): Promise<Snapshot> => {
    const known = cache.get(subject) ?? { seq: 0, state: initialPackageState() };
    const last = await store.readLast(subject);
    if (!last || last.seq === known.seq) return known;
    // Only the commits after the cached one are replayed; stream sequences are global, so
    // when the last one directly follows the cached one it is the only new commit.
    const commits = last.seq === known.seq + 1 ? [last] : await store.read(subject, { fromSeq: known.seq + 1 });
    const next = fold(known, commits);
    cache.set(subject, next);
    return next;
  };

  const current = (component: string): Promise<Snapshot> => {
    const subject = subjects.package(component);
    // Concurrent callers for one aggregate share one catch-up.
    let p = inFlight.get(subject);
    if (!p) {
      p = catchUp(subject).finally(() => inFlight.delete(subject));
      inFlight.set(subject, p);
    }
    return p;
  };

  return {
    current,
    async find(component, version, platform) {
      const key = variantKey(version, platform);
      const hit = cache.get(subjects.package(component))?.state.packages.get(key);
      if (hit) return hit;
      return (await current(component)).state.packages.get(key);
    },
  };
}
