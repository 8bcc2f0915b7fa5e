import { DeploymentSummary, TaskCounts, TaskView, type BatchProgress, type TaskStateView } from "@molt/contracts";
import { MultiBar, Presets, type SingleBar } from "cli-progress";
import { z } from "zod";
import type { Context } from "../context.js";
import { sseMessages } from "../http.js";
import { CliError, paintState } from "../output.js";

/**
 * How `molt watch` ends, for scripts and CI: 0 only when every planned host succeeded. A deployment
 * without a brake goes on past a failed host and ends `completed`: that is not success (3).
 */
export const WATCH_EXIT = { completed: 0, failed: 3, "completed-with-failures": 3, cancelled: 4, braked: 5 } as const;

const Progress = z.object({ deployment: DeploymentSummary, counts: TaskCounts });
/** `GET /v1/projector/status`, the two positions watch reads (any role may). */
const ViewsPosition = z.object({ checkpoint: z.number().int().min(0), streamLastSeq: z.number().int().min(0) });
type Progress = z.infer<typeof Progress>;

const FINISHED: readonly TaskStateView[] = ["succeeded", "failed", "rejected", "timed-out", "cancelled"];
const FAILED: readonly TaskStateView[] = ["failed", "rejected", "timed-out"];
const IN_FLIGHT: readonly TaskStateView[] = ["allocated", "dispatched", "running"];

const count = (p: Progress, states: readonly TaskStateView[]) => states.reduce((n, s) => n + (p.counts[s] ?? 0), 0);

/** The end of a deployment as watch reports it, or null while it may still move. */
export function outcomeOf(p: Progress): keyof typeof WATCH_EXIT | null {
  const state = p.deployment.state;
  if (state === "completed") return count(p, FAILED) > 0 ? "completed-with-failures" : "completed";
  if (state === "failed" || state === "cancelled") return state;
  // A brake stops allocation; once what was in flight has finished, nothing moves until an operator acts.
  if (p.deployment.braked && count(p, IN_FLIGHT) === 0) return "braked";
  return null;
}

function countsText(p: Progress): string {
  return Object.entries(p.counts)
    .filter(([, n]) => n > 0)
    .map(([s, n]) => `${s} ${n}`)
    .join("  ");
}

/** A batch's hosts per outcome, the ones that happened: `succeeded 2  failed 1`. */
function outcomesText(b: BatchProgress): string {
  return Object.entries(b.outcomes)
    .filter(([, n]) => n > 0)
    .map(([o, n]) => `${o} ${n}`)
    .join("  ");
}

/** One batch in a line: `batch 1 2/3 running`. */
const batchText = (b: BatchProgress) => `batch ${b.index} ${b.finished}/${b.size} ${b.state}`;

/** Where a failed task stopped: its failed step and that step's error, else the task's error. */
function failureOf(t: TaskView): string {
  const step = [...t.steps].reverse().find((s) => s.state === "failed");
  return `${t.hostId}: ${t.state}${step ? ` at ${step.step}` : t.currentStep ? ` at ${t.currentStep}` : ""}: ${step?.error ?? t.error ?? "no reason given"}`;
}

/**
 * Follows `GET /v1/deployments/:id/events` (snapshots: `progress` and `task`) until the deployment
 * ends, reconnecting with Last-Event-ID when the stream drops. Returns the exit code.
 *
 * Read-your-writes across invocations (`molt retry X && molt watch X`): the views may not have
 * applied the command yet and still show the old end. So watch first reads the event stream's end
 * (`streamLastSeq`: every command answered before watch started is at or before it) and takes an
 * end only from a snapshot whose id (the stream sequence the views had applied when it was taken)
 * has reached it. An older snapshot that looks finished is shown but not believed: watch waits for
 * the views' checkpoint to reach that end, then asks for a fresh snapshot.
 */
export async function watch(ctx: Context, id: string, opts: { reconnectMs?: number; notFoundGraceMs?: number; pollMs?: number } = {}): Promise<number> {
  const gw = await ctx.gateway();
  const pollMs = opts.pollMs ?? 100;
  /** The views' position; an unreachable gateway gets a few tries, as the stream does. */
  const position = async () => {
    for (let attempt = 0; ; attempt++) {
      try {
        return await gw.get("/v1/projector/status", ViewsPosition);
      } catch (err) {
        if (attempt >= 5 || !(err instanceof CliError) || !err.message.startsWith("cannot reach")) throw err;
        await new Promise((r) => setTimeout(r, opts.reconnectMs ?? 1000));
      }
    }
  };
  const readFrom = (await position()).streamLastSeq;
  const caughtUp = async () => {
    while ((await position()).checkpoint < readFrom) await new Promise((r) => setTimeout(r, pollMs));
  };
  const { out } = ctx;
  const { c } = out;
  const reported = new Set<string>();
  let lastId: string | undefined;
  let lastLine = "";
  let bars: { multi: MultiBar; overall: SingleBar; batches: SingleBar; each: Map<number, SingleBar> } | null = null;
  const note = (text: string) => (bars ? bars.multi.log(`${text}\n`) : out.line(text));

  const show = (p: Progress) => {
    const d = p.deployment;
    const planned = Math.max(d.hostsTotal - d.skipped.length, 0);
    const finished = count(p, FINISHED);
    if (out.tty) {
      if (!bars) {
        const multi = new MultiBar(
          { format: " {label} {bar} {value}/{total} {info}", hideCursor: true, clearOnComplete: false, stopOnComplete: false, etaBuffer: 20, barsize: 30, autopadding: true, forceRedraw: true, noTTYOutput: false, fps: 10 },
          Presets.shades_classic,
        );
        bars = {
          multi,
          overall: multi.create(planned, 0, { label: "hosts  ", info: "" }),
          batches: multi.create(d.batches.total, 0, { label: "batches", info: "" }),
          each: new Map(),
        };
      }
      // One bar per batch (a retry adds one), under the overall ones.
      for (const b of d.batches.items) {
        let bar = bars.each.get(b.index);
        if (!bar) bars.each.set(b.index, (bar = bars.multi.create(b.size, 0, { label: `batch ${b.index}`.padEnd(7), info: "" })));
        bar.setTotal(b.size);
        bar.update(b.finished, { info: `${b.kind} ${b.state}  ${outcomesText(b)}` });
      }
      const state = `${paintState(c, d.state)}${d.awaitingApproval !== null ? c.yellow(" awaiting approval") : ""}${d.braked ? c.red(" braked") : ""}`;
      bars.overall.setTotal(planned);
      bars.overall.update(finished, { info: `${state}  ${countsText(p)}` });
      bars.batches.setTotal(d.batches.total);
      bars.batches.update(d.batches.completed, { info: `started ${d.batches.started}` });
      return;
    }
    const line = `${d.state}${d.awaitingApproval !== null ? " (awaiting approval)" : ""}${d.braked ? " (braked)" : ""} hosts ${finished}/${planned} batches ${d.batches.completed}/${d.batches.total}  ${countsText(p)}${d.batches.items.length > 0 ? `  [${d.batches.items.map(batchText).join(", ")}]` : ""}`;
    if (line !== lastLine) out.line(`${new Date().toISOString()} ${line}`);
    lastLine = line;
  };

  // A deployment just accepted (`deploy --watch`, or `molt watch $(molt deploy … -q)`) is a 404 at
  // the views until the projector has applied it: that is waited out for a few seconds.
  const notFoundUntil = Date.now() + (opts.notFoundGraceMs ?? 10_000);
  for (let attempt = 0; ; attempt++) {
    let stream: AsyncIterable<Buffer>;
    try {
      stream = await gw.stream(`/v1/deployments/${encodeURIComponent(id)}/events`, lastId ? { "last-event-id": lastId } : {});
    } catch (err) {
      if (err instanceof CliError && err.status === 404 && lastId === undefined && Date.now() < notFoundUntil) {
        attempt--;
        await new Promise((r) => setTimeout(r, 200));
        continue;
      }
      // Another refusal (401, 403) is final; an unreachable gateway gets a few tries before giving up.
      if (attempt >= 5 || !(err instanceof CliError) || !err.message.startsWith("cannot reach")) throw err;
      await new Promise((r) => setTimeout(r, opts.reconnectMs ?? 1000));
      continue;
    }
    let stale = false;
    try {
      for await (const msg of sseMessages(stream)) {
        if (msg.id) lastId = msg.id;
        if (msg.event === "task") {
          const t = TaskView.parse(JSON.parse(msg.data));
          if (out.json) out.data({ type: "task", task: t });
          if (FAILED.includes(t.state) && !reported.has(t.taskId)) {
            reported.add(t.taskId);
            if (!out.json) note(c.red(`✗ ${failureOf(t)}`));
          }
        } else if (msg.event === "progress") {
          const p = Progress.parse(JSON.parse(msg.data));
          if (out.json) out.data({ type: "progress", ...p });
          else show(p);
          const outcome = outcomeOf(p);
          // A snapshot without an id comes from a server that does not say what it reflects: believed.
          if (outcome !== null && (msg.id === undefined || Number(msg.id) >= readFrom)) return finish(outcome, p);
          if (outcome !== null) {
            stale = true;
            break;
          }
        }
      }
    } catch (err) {
      if (err instanceof z.ZodError || err instanceof SyntaxError) throw new CliError(`unexpected event from the gateway: ${err.message}`);
      // The connection dropped: reconnect from the last event id.
    }
    if (stale) {
      // Views older than a command answered before watch started: once they have caught up, the
      // stream is opened again from the last id, which is behind them, so a fresh snapshot follows.
      await caughtUp();
      attempt--;
      continue;
    }
    await new Promise((r) => setTimeout(r, opts.reconnectMs ?? 1000));
  }

  function finish(outcome: keyof typeof WATCH_EXIT, p: Progress): number {
    bars?.multi.stop();
    const code = WATCH_EXIT[outcome];
    const d = p.deployment;
    if (out.json) out.data({ type: "end", deploymentId: id, outcome, exitCode: code });
    else {
      const how = outcome === "completed" ? c.green("completed") : c.red(outcome);
      const why =
        outcome === "braked" && d.braked
          ? `: ${d.braked.failed} of ${d.braked.finished} finished hosts failed (threshold ${d.braked.threshold})`
          : outcome === "completed-with-failures"
            ? `: ${count(p, FAILED)} host(s) failed`
            : d.reason
              ? `: ${d.reason}`
              : "";
      out.line(`deployment ${id} ${how}${why}  (${countsText(p) || "no tasks"})`);
    }
    return code;
  }
}
