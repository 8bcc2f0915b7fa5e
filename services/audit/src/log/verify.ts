import { canonicalJson } from "@molt/contracts";
import type { Queryable } from "@molt/db";
import type { Anchor } from "./anchor.js";
import { entryHash, GENESIS, type EntryFields } from "./chain.js";
import type { AuditRow } from "./schema.js";

export type VerifyFailure =
  /** An entry's fields do not give its hash, or it does not link to its predecessor. */
  | "hash-mismatch"
  /** Entries a signed anchor covered are gone from the end of the table. */
  | "tail-deleted"
  /** The chain holds but differs from a signed anchor: rows were rewritten and re-hashed. */
  | "rewritten"
  /** An anchor in the bucket is not signed by this service's key. */
  | "anchor-signature";

export interface VerifyResult {
  ok: boolean;
  /** Entries examined (hash and link recomputed), the bad one included. */
  checked: number;
  /** Where this pass started: 0 for a full pass, else the last verified entry. */
  fromId: number;
  /** The last entry of the table when the pass ran (0: empty). */
  headId: number;
  /** Signed anchors compared with the table. */
  anchors: number;
  /** The first entry found wrong (or, for a deleted tail, the first one missing). */
  firstBadId?: number;
  reason?: VerifyFailure;
  message?: string;
}

export interface VerifyOptions {
  pageSize?: number;
  /** The last verified point: rows up to it are not recomputed (its hash is still compared). */
  from?: { id: number; hash: string } | null;
  /** Anchors from outside the table, oldest first, each with whether its signature holds. */
  anchors?: ReadonlyArray<{ anchor: Anchor; valid: boolean }>;
  /** Recomputes a row from its source message: false when they differ, undefined when the source is gone. */
  rederive?: (row: AuditRow) => Promise<boolean | undefined>;
}

const fieldsOf = (r: AuditRow): EntryFields => ({
  source: r.source,
  sourceStream: r.source_stream,
  sourceSeq: Number(r.source_seq),
  sourceIdx: r.source_idx,
  at: r.at.toISOString(),
  actor: r.actor,
  kind: r.kind,
  target: r.target,
  outcome: r.outcome,
  data: r.data,
});

export function sameFields(a: EntryFields, b: EntryFields): boolean {
  return canonicalJson(a) === canonicalJson(b);
}

const COLUMNS = "id, source, source_stream, source_seq, source_idx, at, actor, kind, target, outcome, data, prev_hash, hash";

/**
 * Recomputes the chain in id order from the last verified point (or from the start), a page at a
 * time: an edited entry fails its own hash; an edited hash, a removed or reordered entry fails
 * the next entry's link. Then compares the table with the signed anchors published outside it:
 * an anchor past the table's end means a deleted tail; an anchor whose hash differs means rows
 * were rewritten and the chain re-hashed, and the rows between the last anchor that still holds
 * and that one are recomputed from their source messages to name the first rewritten entry.
 */
export async function verifyChain(db: Queryable, opts: VerifyOptions = {}): Promise<VerifyResult> {
  const pageSize = opts.pageSize ?? 1000;
  const headRow = (await db.query<{ id: number }>("SELECT id FROM audit_log ORDER BY id DESC LIMIT 1")).rows[0];
  const headId = headRow ? Number(headRow.id) : 0;
  let from = opts.from ?? null;
  if (from) {
    const at = (await db.query<{ hash: string }>("SELECT hash FROM audit_log WHERE id = $1", [from.id])).rows[0];
    // The verified point itself changed: nothing before it can be trusted, start over.
    if (at?.hash !== from.hash) from = null;
  }
  const anchors = opts.anchors ?? [];
  const base = { fromId: from?.id ?? 0, headId, anchors: anchors.length };
  let prev = from?.hash ?? GENESIS;
  let after = from?.id ?? 0;
  let checked = 0;
  for (;;) {
    const page = await db.query<AuditRow>(`SELECT ${COLUMNS} FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2`, [after, pageSize]);
    for (const r of page.rows) {
      checked++;
      if (r.prev_hash !== prev || entryHash(r.prev_hash, fieldsOf(r)) !== r.hash)
        return { ok: false, checked, ...base, firstBadId: Number(r.id), reason: "hash-mismatch", message: `entry ${r.id} does not match its hash or its predecessor's` };
      prev = r.hash;
      after = Number(r.id);
    }
    if (page.rows.length < pageSize) break;
  }

  let lastGood = 0;
  for (const { anchor, valid } of anchors) {
    if (!valid) return { ok: false, checked, ...base, reason: "anchor-signature", message: `an anchor for entry ${anchor.id} is not signed by this service's key (${anchor.keyId})` };
    if (anchor.id > headId)
      return { ok: false, checked, ...base, firstBadId: headId + 1, reason: "tail-deleted", message: `entries ${headId + 1}..${anchor.id} were anchored at ${anchor.at} and are gone` };
    const row = (await db.query<{ hash: string }>("SELECT hash FROM audit_log WHERE id = $1", [anchor.id])).rows[0];
    if (row?.hash === anchor.hash) {
      lastGood = anchor.id;
      continue;
    }
    const firstBadId = await pinpoint(db, lastGood, anchor.id, opts.rederive);
    return {
      ok: false,
      checked,
      ...base,
      firstBadId,
      reason: "rewritten",
      message: `entry ${anchor.id} no longer has the hash anchored at ${anchor.at}: entries after ${lastGood} were rewritten and re-hashed`,
    };
  }
  return { ok: true, checked, ...base };
}

/** The first row in (after, upTo] that differs from its source message; after + 1 if none can be told. */
async function pinpoint(db: Queryable, after: number, upTo: number, rederive: VerifyOptions["rederive"]): Promise<number> {
  if (!rederive) return after + 1;
  let cursor = after;
  for (;;) {
    const page = await db.query<AuditRow>(`SELECT ${COLUMNS} FROM audit_log WHERE id > $1 AND id <= $2 ORDER BY id LIMIT 500`, [cursor, upTo]);
    for (const r of page.rows) {
      if ((await rederive(r)) === false) return Number(r.id);
      cursor = Number(r.id);
    }
    if (page.rows.length < 500) return after + 1;
  }
}

export { fieldsOf };
