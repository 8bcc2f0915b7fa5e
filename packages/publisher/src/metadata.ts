import type { RepositoryMetadata } from "@molt/contracts";

/** How long a signed metadata document is good for unless the publisher says otherwise. */
export const DEFAULT_METADATA_EXPIRY_DAYS = 90;

export type MetadataEntry = RepositoryMetadata["packages"][number];

/** What one command changes in a component's metadata. */
export type MetadataChange =
  | { kind: "add"; entry: Omit<MetadataEntry, "yanked"> }
  | { kind: "yank"; version: string; platform?: string | undefined };

export function expiresIn(days: number, now = new Date()): string {
  return new Date(now.getTime() + days * 86_400_000).toISOString();
}

/**
 * The next metadata document: the previous one's entries with the change applied, `version` one
 * more. A variant added again keeps its entry (and a yanked one stays yanked: a yank is final).
 * Entries are sorted so that the same content always signs the same bytes.
 */
export function nextMetadata(component: string, previous: RepositoryMetadata | null, change: MetadataChange, expires: string): RepositoryMetadata {
  const entries = new Map<string, MetadataEntry>((previous?.packages ?? []).map((e) => [`${e.version} ${e.platform}`, e]));
  switch (change.kind) {
    case "add": {
      const key = `${change.entry.version} ${change.entry.platform}`;
      if (!entries.has(key)) entries.set(key, { ...change.entry, yanked: false });
      break;
    }
    case "yank":
      for (const [key, e] of entries)
        if (e.version === change.version && (change.platform === undefined || e.platform === change.platform)) entries.set(key, { ...e, yanked: true });
      break;
    default:
      return change satisfies never;
  }
  return { component, version: (previous?.version ?? 0) + 1, expires, packages: sortEntries([...entries.values()]) };
}

export function sortEntries(entries: MetadataEntry[]): MetadataEntry[] {
  const key = (e: MetadataEntry) => `${e.version} ${e.platform}`;
  return entries.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
}
