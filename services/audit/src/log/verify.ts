import type { Queryable } from "@molt/db";
import { entryHash, GENESIS } from "./chain.js";
import type { AuditRow } from "./schema.js";

export interface VerifyResult {
  ok: boolean;
  /** Entries examined, the bad one included. */
  checked: number;
  /** The first entry whose hash or link to its predecessor does not hold. */
  firstBadId?: number;
}

/**
 * Recomputes the whole chain in id order, a page at a time. An edited entry fails its own hash;
 * an edited hash, a removed or a reordered entry fails the next entry's link.
 */
export async function verifyChain(db: Queryable, opts: { pageSize?: number } = {}): Promise<VerifyResult> {
  const pageSize = opts.pageSize ?? 1000;
  let prev = GENESIS;
  let after = 0;
  let checked = 0;
  for (;;) {
    const page = await db.query<AuditRow>(
      `SELECT id, source, source_stream, source_seq, source_idx, at, actor, kind, target, outcome, data, prev_hash, hash
       FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2`,
      [after, pageSize],
    );
    for (const r of page.rows) {
      checked++;
      const recomputed = entryHash(r.prev_hash, {
        source: r.source,
        sourceStream: r.source_stream,
        sourceSeq: r.source_seq,
        sourceIdx: r.source_idx,
        at: r.at.toISOString(),
        actor: r.actor,
        kind: r.kind,
        target: r.target,
        outcome: r.outcome,
        data: r.data,
      });
      if (r.prev_hash !== prev || recomputed !== r.hash) return { ok: false, checked, firstBadId: r.id };
      prev = r.hash;
      after = r.id;
    }
    if (page.rows.length < pageSize) return { ok: true, checked };
  }
}
