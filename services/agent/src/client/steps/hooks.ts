import { realpath } from "node:fs/promises";
import type { StepContext, StepResult } from "../machine.js";
import { CommandFailedError, componentEnv, describeResult, runCommand } from "../process.js";

async function runHook(ctx: StepContext, which: "beforeStop" | "afterVerify"): Promise<StepResult> {
  const { input, facts } = ctx;
  const hooks = input.component.hooks;
  const command = hooks?.[which];
  if (command === undefined) return { detail: "no hook" };
  const cwd = await realpath(input.paths.current).catch(() => input.paths.dir);
  const r = await runCommand(command, {
    cwd,
    env: { ...componentEnv(input.paths, input.task.version), MOLT_PREVIOUS_VERSION: facts.previousVersion ?? "" },
    timeoutMs: hooks?.timeoutMs ?? 60_000,
  });
  if (r.code !== 0) throw new CommandFailedError(describeResult(`hook ${which}`, r), r.output);
  return { detail: `hook ${which} ok${r.output ? `: ${r.output.slice(-200)}` : ""}` };
}

/** PRE_STOP: the hook before STOP (drain from a load balancer); a failure takes the rollback path. */
export const preStop = (ctx: StepContext) => runHook(ctx, "beforeStop");
/** POST_VERIFY: the hook after VERIFY (put it back). */
export const postVerify = (ctx: StepContext) => runHook(ctx, "afterVerify");
