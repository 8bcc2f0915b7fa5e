import type { Queryable } from "@molt/db";
import { entryHash, GENESIS, type EntryFields } from "./chain.js";

/**
 * Appends the entries of one source message to the chain, inside the transaction that moves that
 * stream's checkpoint (the follower's).
 */
export async function appendEntries(tx: Queryable, entries: readonly EntryFields[]): Promise<void> {
  // One appender at a time across every process sharing the database: the chain has one head.
  await tx.query("SELECT pg_advisory_xact_lock(hashtext('molt-audit-chain'))");
  if (entries.length === 0) return;
  const head = await tx.query<{ hash: string }>("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1");
  let prev = head.rows[0]?.hash ?? GENESIS;
  const rows = entries.map((e) => {
    const hash = entryHash(prev, e);
    const row = {
      source: e.source,
      source_stream: e.sourceStream,
      source_seq: e.sourceSeq,
      source_idx: e.sourceIdx,
      at: e.at,
      actor: e.actor,
      kind: e.kind,
      target: e.target,
      outcome: e.outcome,
      data: e.data,
      prev_hash: prev,
      hash,
    };
    prev = hash;
    return row;
  });
  // One statement for the whole message; ids follow the array order, which is the chain's order.
  await tx.query(
    `INSERT INTO audit_log (source, source_stream, source_seq, source_idx, at, actor, kind, target, outcome, data, prev_hash, hash)
     SELECT r.source, r.source_stream, r.source_seq, r.source_idx, r.at, r.actor, r.kind, r.target, r.outcome, r.data, r.prev_hash, r.hash
     FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS e(v, ord),
       jsonb_to_record(e.v) AS r(source text, source_stream text, source_seq bigint, source_idx integer, at timestamptz,
         actor text, kind text, target text, outcome text, data jsonb, prev_hash text, hash text)
     ORDER BY e.ord`,
    [JSON.stringify(rows)],
  );
}
