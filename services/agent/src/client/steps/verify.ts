import { realpath } from "node:fs/promises";
import { watchHealth } from "../health.js";
import type { StepContext, StepResult } from "../machine.js";

/** VERIFY: healthy for the whole watch window, and the running process answers the new version. */
export async function verify({ input, facts }: StepContext): Promise<StepResult> {
  const cwd = await realpath(input.paths.current);
  const detail = await watchHealth(input.component, input.paths, cwd, input.task.version, facts.startedPid);
  input.crash("verify:passed");
  return { detail };
}
