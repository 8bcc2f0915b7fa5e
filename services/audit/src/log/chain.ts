import { createHash } from "node:crypto";
import { canonicalJson } from "@molt/contracts";

/** The first entry's prev_hash. */
export const GENESIS = "0".repeat(64);

/** What an entry says; the chain hashes exactly these fields (id and the hashes themselves are not hashed). */
export interface EntryFields {
  source: "event" | "command";
  sourceStream: string;
  sourceSeq: number;
  /** Position inside the source message: a commit holds one or more events. */
  sourceIdx: number;
  /** ISO 8601 with milliseconds, as timestamptz gives it back. */
  at: string;
  actor: string;
  kind: string;
  target: string | null;
  outcome: string | null;
  data: unknown;
}

/** hash = sha256(prev_hash + canonical JSON of the entry's fields), hex. */
export function entryHash(prevHash: string, f: EntryFields): string {
  const body = canonicalJson({
    source: f.source,
    sourceStream: f.sourceStream,
    sourceSeq: f.sourceSeq,
    sourceIdx: f.sourceIdx,
    at: f.at,
    actor: f.actor,
    kind: f.kind,
    target: f.target,
    outcome: f.outcome,
    data: f.data,
  });
  return createHash("sha256").update(prevHash).update(body).digest("hex");
}
