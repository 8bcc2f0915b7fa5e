import type { AuditPage } from "@molt/contracts";
import type { Db } from "@molt/db";
import type { App } from "@molt/runtime";
import { z } from "zod";
import type { AuditRow } from "../log/schema.js";

const AuditQuery = z
  .object({
    actor: z.string().min(1).max(200).optional(),
    kind: z.string().min(1).max(100).optional(),
    target: z.string().min(1).max(300).optional(),
    source: z.enum(["event", "command"]).optional(),
    /** Years 1970-9999 only, as contracts' Timestamp: PostgreSQL refuses year 0, which z.iso.datetime takes. */
    since: z.iso
      .datetime({ offset: true })
      .refine((s) => {
        const t = Date.parse(s);
        return Number.isFinite(t) && t >= Date.UTC(1970, 0, 1) && t < Date.UTC(10_000, 0, 1);
      }, "must be a date-time between 1970 and 9999")
      .optional(),
    limit: z.coerce.number().int().min(1).max(1000).default(100),
    /** Oldest first from just after this id: how a follower tails the log. */
    after: z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
    /** Newest first from just before this id: the next page of a newest-first listing. */
    before: z.coerce.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional(),
  })
  .strict();

export function queryRoutes(app: App, deps: { db: Db }): void {
  const { db } = deps;
  app.get("/v1/audit", { schema: { querystring: AuditQuery } }, async (req): Promise<AuditPage> => {
    const q = req.query;
    const where: string[] = [];
    const params: unknown[] = [];
    const add = (sql: string, value: unknown) => {
      params.push(value);
      where.push(sql.replace("?", `$${params.length}`));
    };
    if (q.actor !== undefined) add("actor = ?", q.actor);
    if (q.kind !== undefined) add("kind = ?", q.kind);
    if (q.target !== undefined) add("target = ?", q.target);
    if (q.source !== undefined) add("source = ?", q.source);
    if (q.since !== undefined) add("at >= ?::timestamptz", q.since);
    if (q.after !== undefined) add("id > ?", q.after);
    if (q.before !== undefined) add("id < ?", q.before);
    params.push(q.limit);
    const order = q.after !== undefined ? "ASC" : "DESC";
    const r = await db.query<AuditRow>(
      `SELECT * FROM audit_log ${where.length > 0 ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY id ${order} LIMIT $${params.length}`,
      params,
    );
    return {
      entries: r.rows.map((e) => ({
        id: e.id,
        source: e.source,
        sourceStream: e.source_stream,
        sourceSeq: e.source_seq,
        sourceIdx: e.source_idx,
        at: e.at.toISOString(),
        actor: e.actor,
        kind: e.kind,
        target: e.target,
        outcome: e.outcome,
        data: e.data,
        prevHash: e.prev_hash,
        hash: e.hash,
      })),
    };
  });
}
