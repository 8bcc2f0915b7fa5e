import { AuditPage, AuditVerification } from "@molt/contracts";
import type { Context } from "../context.js";
import { parseSince } from "../output.js";

/** `audit --verify` on a chain that does not verify. */
export const AUDIT_BROKEN_EXIT = 6;

export async function audit(ctx: Context, opts: { actor?: string; kind?: string; since?: string; limit: string; verify?: boolean; full?: boolean }): Promise<number> {
  const gw = await ctx.gateway();
  if (opts.verify) {
    const result = await gw.get("/v1/audit/verify", AuditVerification, { full: opts.full ? "true" : undefined });
    if (ctx.out.json) ctx.out.data(result);
    else if (result.ok) ctx.out.line(`${ctx.out.c.green("✓")} the audit chain verifies (${result.checked} entries checked)`);
    else ctx.out.line(`${ctx.out.c.red("✗")} the audit chain does NOT verify at entry ${result.firstBadId ?? "?"}: ${result.message ?? result.reason ?? "no reason given"}`);
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
