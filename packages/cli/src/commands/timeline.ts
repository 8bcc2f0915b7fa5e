import { HostTimeline, type TimelineEvent } from "@molt/contracts";
import type { Context } from "../context.js";
import { formatDuration, parseSince } from "../output.js";

/** Step events carry the step; a step's end is timed from its start on the same task. */
function rows(events: TimelineEvent[], started: Map<string, number>): Array<Array<string | number>> {
  return events.map((e) => {
    const key = `${e.taskId ?? ""}/${e.step ?? ""}`;
    const at = Date.parse(e.occurredAt);
    let duration = "";
    if (e.type === "TaskStepStarted") started.set(key, at);
    else if ((e.type === "TaskStepSucceeded" || e.type === "TaskStepFailed") && started.has(key)) {
      duration = formatDuration(at - started.get(key)!);
      started.delete(key);
    }
    const data = e.data as Record<string, unknown> | null;
    const detail = data && typeof data === "object" ? (data["error"] ?? data["reason"] ?? data["version"] ?? "") : "";
    return [e.occurredAt, e.type, e.step ?? "", duration, e.taskId ?? "", typeof detail === "string" ? detail : JSON.stringify(detail)];
  });
}

/** A host's history from the timeline view; `--follow` keeps asking for what comes after the last event seen. */
export async function timeline(ctx: Context, host: string, opts: { since?: string; follow?: boolean; intervalMs?: number }): Promise<void> {
  const gw = await ctx.gateway();
  const since = opts.since ? Date.parse(parseSince(opts.since)) : null;
  const started = new Map<string, number>();
  let after = 0;
  let first = true;
  /** Not following, --json prints one document with every page's events. */
  const all: TimelineEvent[] = [];
  for (;;) {
    const page = await gw.get(`/v1/hosts/${encodeURIComponent(host)}/timeline`, HostTimeline, { after: String(after), limit: "1000" });
    const fresh = page.events.filter((e) => since === null || Date.parse(e.occurredAt) >= since);
    if (page.events.length > 0) after = page.events.at(-1)!.streamSeq;
    if (ctx.out.json) {
      // One document when not following; one event per line when following.
      if (!opts.follow) all.push(...fresh);
      else for (const e of fresh) ctx.out.data(e);
    } else if (fresh.length > 0 || first) {
      const r = rows(fresh, started);
      if (first) ctx.out.table(["time", "event", "step", "took", "task", "detail"], r);
      else for (const row of r) ctx.out.line(row.join("  "));
    }
    first = false;
    if (page.next !== null) continue;
    if (!opts.follow) {
      if (ctx.out.json) ctx.out.data({ hostId: page.hostId, events: all, next: null });
      return;
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 1000));
  }
}
