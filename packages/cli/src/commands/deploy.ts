import { CreateDeploymentBody, DeploymentAccepted, PlanPreview, type HostCount, type Selector, type StrategyInput } from "@molt/contracts";
import { z } from "zod";
import type { Context } from "../context.js";
import { idempotencyKey } from "../http.js";
import { CliError } from "../output.js";

export interface DeployFlags {
  hosts?: string;
  selector?: string;
  canary?: string;
  approval?: boolean;
  maxUnavailable?: string;
  pause?: string;
  pauseFromThird?: string;
  concurrency?: string;
  brake?: string;
  brakeMin?: string;
  byCluster?: boolean;
  timeout?: string;
  allowEmpty?: boolean;
  dryRun?: boolean;
  idempotencyKey?: string;
  /** Print only the deployment id (for `DEP=$(molt deploy … -q)`). */
  quiet?: boolean;
}

/** `5` is five hosts, `10%` ten percent of the planned hosts. */
function hostCount(flag: string, value: string): HostCount {
  const m = /^(\d+(?:\.\d+)?)(%?)$/.exec(value);
  if (!m) throw new CliError(`${flag} ${JSON.stringify(value)}: give a host count (5) or a percent (10%)`, 2);
  return m[2] ? { percent: Number(m[1]) } : { hosts: Number(m[1]) };
}

/** `120000`, `90s`, `5m`, `1h` → milliseconds. */
export function millis(flag: string, value: string): number {
  const m = /^(\d+)(ms|s|m|h)?$/.exec(value);
  if (!m) throw new CliError(`${flag} ${JSON.stringify(value)}: give milliseconds (1500) or a span (90s, 5m, 1h)`, 2);
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? "ms") as "ms" | "s" | "m" | "h"];
}

/** `cluster=eu-1,platform=linux-amd64,version=1.0.0,role=web`: known fields, anything else a label. */
export function parseSelector(value: string): Selector {
  const selector: Selector = {};
  for (const pair of value.split(",").filter(Boolean)) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new CliError(`--selector ${JSON.stringify(pair)}: expected key=value`, 2);
    const key = pair.slice(0, eq).trim();
    const v = pair.slice(eq + 1).trim();
    if (key === "cluster" || key === "platform") selector[key] = v;
    else if (key === "version") selector.version = v === "none" ? null : v;
    else selector.labels = { ...selector.labels, [key.replace(/^label\./, "")]: v };
  }
  return selector;
}

export function deploymentBody(component: string, version: string, f: DeployFlags): CreateDeploymentBody {
  if (!f.hosts && !f.selector) throw new CliError("name the hosts (--hosts a,b) or give a --selector", 2);
  const strategy: StrategyInput = {
    ...(f.canary ? { canary: { size: hostCount("--canary", f.canary), approval: f.approval ?? false } } : {}),
    ...(f.maxUnavailable ? { maxUnavailable: hostCount("--max-unavailable", f.maxUnavailable) } : {}),
    ...(f.pause ? { pauseMs: millis("--pause", f.pause) } : {}),
    ...(f.pauseFromThird ? { pauseFromThirdMs: millis("--pause-from-third", f.pauseFromThird) } : {}),
    ...(f.concurrency ? { concurrency: Number(f.concurrency) } : {}),
    ...(f.brake ? { brake: { threshold: brakeThreshold(f.brake), minFinished: f.brakeMin ? Number(f.brakeMin) : 1 } } : {}),
    ...(f.byCluster ? { orderByCluster: true } : {}),
  };
  if (f.approval && !f.canary) throw new CliError("--approval waits after the canary: give --canary too", 2);
  const body = {
    component,
    version,
    ...(f.hosts ? { hosts: f.hosts.split(",").map((h) => h.trim()).filter(Boolean) } : {}),
    ...(f.selector ? { selector: parseSelector(f.selector) } : {}),
    ...(Object.keys(strategy).length > 0 ? { strategy } : {}),
    ...(f.timeout ? { taskTimeoutMs: millis("--timeout", f.timeout) } : {}),
    ...(f.allowEmpty ? { allowEmpty: true } : {}),
  };
  // Checked here with the server's own schema, so a typo is a usage error before any request.
  const parsed = CreateDeploymentBody.safeParse(body);
  if (!parsed.success) throw new CliError(parsed.error.issues.map((i) => `${i.path.join(".") || "request"}: ${i.message}`).join("; "), 2);
  return parsed.data;
}

/** `0.2` or `20%`: the failed share of finished tasks over which the rollout stops. */
function brakeThreshold(value: string): number {
  const m = /^(\d+(?:\.\d+)?)(%?)$/.exec(value);
  if (!m) throw new CliError(`--brake ${JSON.stringify(value)}: give a share (0.2) or a percent (20%)`, 2);
  return m[2] ? Number(m[1]) / 100 : Number(m[1]);
}

const Preview = z.object({ dryRun: z.literal(true), plan: PlanPreview });

export async function deploy(ctx: Context, component: string, version: string, flags: DeployFlags): Promise<string | null> {
  const body = deploymentBody(component, version, flags);
  const gw = await ctx.gateway();
  const { plan } = await gw.post("/v1/deployments", Preview, { body, query: { dryRun: "true" } });
  if (flags.dryRun) {
    if (ctx.out.json) ctx.out.data({ dryRun: true, plan });
    else printPlan(ctx, plan);
    return null;
  }
  if (!ctx.out.json && !flags.quiet) printPlan(ctx, plan);
  const accepted = await gw.post("/v1/deployments", DeploymentAccepted, { body, idempotencyKey: flags.idempotencyKey ?? idempotencyKey("cli-deploy") });
  if (ctx.out.json) ctx.out.data({ ...accepted, plan });
  else if (flags.quiet) ctx.out.line(accepted.deploymentId);
  else {
    ctx.out.line(`${ctx.out.c.green("✓")} deployment ${ctx.out.c.bold(accepted.deploymentId)} accepted`);
    ctx.out.line(`  follow it: molt watch ${accepted.deploymentId}`);
  }
  return accepted.deploymentId;
}

function printPlan(ctx: Context, plan: PlanPreview): void {
  const { c } = ctx.out;
  ctx.out.line(`${c.bold("plan")}: ${plan.planned} host(s) in ${plan.batches.length} batch(es), ${plan.skipped} skipped`);
  ctx.out.table(
    ["batch", "kind", "hosts", "first hosts"],
    plan.batches.map((b) => [b.index, b.kind, b.size, `${b.hosts.slice(0, 5).join(", ")}${b.size > 5 ? ", …" : ""}`]),
  );
  if (plan.skips.length > 0) {
    ctx.out.line(c.yellow(`skipped (${plan.skipped}):`));
    for (const s of plan.skips) ctx.out.line(`  ${s.hostId}: ${s.reason}`);
    if (plan.skipped > plan.skips.length) ctx.out.line(`  … and ${plan.skipped - plan.skips.length} more`);
  }
}
