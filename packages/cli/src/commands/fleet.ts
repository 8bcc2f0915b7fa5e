import { FleetVersions, HostList, QuarantineAnswer, type HostView } from "@molt/contracts";
import type { Context } from "../context.js";

export async function hosts(ctx: Context, opts: { cluster?: string; platform?: string; online?: boolean; offline?: boolean; limit: string }): Promise<void> {
  const gw = await ctx.gateway();
  const want = Number(opts.limit);
  const all: HostView[] = [];
  let after: string | undefined;
  // Page through until the limit: the view answers at most a page per request.
  do {
    const page = await gw.get("/v1/hosts", HostList, {
      cluster: opts.cluster,
      platform: opts.platform,
      online: opts.online ? "true" : opts.offline ? "false" : undefined,
      limit: String(Math.min(500, want - all.length)),
      after,
    });
    all.push(...page.hosts);
    after = page.next ?? undefined;
  } while (after !== undefined && all.length < want);
  if (ctx.out.json) return ctx.out.data({ hosts: all, next: after ?? null });
  const { c } = ctx.out;
  ctx.out.table(
    ["host", "platform", "cluster", "online", "components"],
    all.map((h) => [
      h.hostId,
      h.platform,
      h.cluster ?? "",
      h.online ? c.green("yes") : c.red("no"),
      Object.entries(h.components)
        .map(([name, v]) => `${name}@${v ?? "none"}`)
        .join(" "),
    ]),
  );
}

export async function versions(ctx: Context, component: string): Promise<void> {
  const fleet = await (await ctx.gateway()).get("/v1/fleet/versions", FleetVersions, { component });
  if (ctx.out.json) return ctx.out.data(fleet);
  for (const d of fleet.components) {
    ctx.out.line(`${ctx.out.c.bold(d.component)}: ${d.total} host(s)`);
    ctx.out.table(
      ["version", "hosts", "share"],
      d.versions.map((v) => {
        const share = d.total > 0 ? v.hosts / d.total : 0;
        return [v.version ?? "(not installed)", v.hosts, `${"█".repeat(Math.round(share * 20)).padEnd(20, "·")} ${(share * 100).toFixed(0)}%`];
      }),
    );
  }
}

/**
 * `drain` (alias `quarantine`): later plans skip the host's slot for the component until `clear`;
 * `clear` also lifts a quarantine its failures set. `POST /v1/hosts/:host/quarantine | clear`
 * (idempotent on the server: draining a drained slot changes nothing).
 */
export async function quarantine(ctx: Context, action: "quarantine" | "clear", host: string, opts: { component: string; reason?: string }): Promise<void> {
  const answer = await (await ctx.gateway()).post(`/v1/hosts/${encodeURIComponent(host)}/${action}`, QuarantineAnswer, {
    body: { component: opts.component, ...(opts.reason !== undefined ? { reason: opts.reason } : {}) },
  });
  if (ctx.out.json) return ctx.out.data(answer);
  const { c } = ctx.out;
  ctx.out.line(
    answer.quarantined
      ? `${c.yellow("⏸")} ${answer.hostId} ${answer.component}: drained (later plans skip it; molt clear ${answer.hostId} --component ${answer.component})`
      : `${c.green("✓")} ${answer.hostId} ${answer.component}: not quarantined (later plans include it)`,
  );
}
