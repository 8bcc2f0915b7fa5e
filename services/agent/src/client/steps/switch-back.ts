import { fileExists } from "../../host/durable.js";
import { switchCurrent } from "../../host/layout.js";
import type { StepContext, StepResult } from "../machine.js";
import { writeSwitchRecord } from "../recovery.js";

/**
 * OVERRIDE of a rollback task: `current` back to the kept versions/<version>, no download. The
 * version must still be on the host (the last versions are kept for exactly this).
 */
export async function switchBack({ input, facts, signal }: StepContext): Promise<StepResult> {
  const { task, paths } = input;
  const { version } = task;
  if (facts.previousVersion === version) return { detail: `version ${version} already current` };
  if (!(await fileExists(paths.version(version))))
    throw new Error(`version ${version} is not kept on this host (no ${paths.version(version)}); nothing to roll back to`);
  signal.throwIfAborted();
  await writeSwitchRecord(paths, { taskId: task.taskId, from: facts.previousVersion, to: version });
  await switchCurrent(paths, version, task.taskId, () => input.crash("switch:linked"));
  input.crash("override:switched");
  return { detail: `current → versions/${version} (the copy kept on the host, no download)`, facts: { switched: true } };
}
