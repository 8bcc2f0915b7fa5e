import type { StepContext, StepResult } from "../machine.js";
import { stopProcess } from "../process.js";

/** STOP: the old process (stop command or unit, wait, TERM, KILL after the grace period). */
export async function stop({ input, facts }: StepContext): Promise<StepResult> {
  const detail = await stopProcess(input.component, input.paths, facts.previousVersion);
  input.crash("stop:stopped");
  return { detail, facts: { stopped: true } };
}
