import type { StepContext, StepResult } from "../machine.js";
import { startProcess } from "../process.js";

/** START: the new version's process, detached (it outlives the client). */
export async function start({ input }: StepContext): Promise<StepResult> {
  const pid = await startProcess(input.component, input.paths, input.task.version);
  return { detail: pid === null ? `started ${input.component.start?.systemdUnit ?? ""}`.trim() : `started pid ${pid}`, facts: { started: true, startedPid: pid } };
}
