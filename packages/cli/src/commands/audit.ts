import { z } from "zod";
import type { Context } from "../context.js";
import { parseSince } from "../output.js";

/** `audit --verify` on a chain that does not verify. */
export const AUDIT_BROKEN_EXIT = 6;

/** An audit entry as `GET /v1/audit` answers (the audit service's row, read through the gateway). */
export const AuditEntry = z.object({
  id: z.number().int(),
  source: z.enum(["event", "command"]),
  at: z.string(),
  actor: z.string(),
  kind: z.string(),
  target: z.string().nullable(),
  outcome: z.string().nullable(),
  data: z.unknown(),
  hash: z.string(),
});
const AuditPage = z.object({ entries: z.array(AuditEntry) });
const Verified = z.object({ ok: z.boolean(), checked: z.number() }).loose();

export async function audit(ctx: Context, opts: { actor?: string; kind?: string; since?: string; limit: string; verify?: boolean; full?: boolean }): Promise<number> {
  const gw = await ctx.gateway();
  if (opts.verify) {
    const result = await gw.get("/v1/audit/verify", Verified, { full: opts.full ? "true" : undefined });
    if (ctx.out.json) ctx.out.data(result);
    else if (result.ok) ctx.out.line(`${ctx.out.c.green("✓")} the audit chain verifies (${result.checked} entries checked)`);
    else ctx.out.line(`${ctx.out.c.red("✗")} the audit chain does NOT verify: ${JSON.stringify(result)}`);
    return result.ok ? 0 : AUDIT_BROKEN_EXIT;
  }
  const page = await gw.get("/v1/audit", AuditPage, {
    actor: opts.actor,
    kind: opts.kind,
    since: opts.since ? parseSince(opts.since) : undefined,
    limit: opts.limit,
  });
  if (ctx.out.json) {
    ctx.out.data(page);
    return 0;
  }
  ctx.out.table(
    ["id", "at", "actor", "kind", "target", "outcome"],
    page.entries.map((e) => [e.id, e.at, e.actor, e.kind, e.target ?? "", e.outcome ?? ""]),
  );
  return 0;
}
