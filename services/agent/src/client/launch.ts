import { type DesiredState, trustedKeys } from "@molt/contracts";
import { readLaunch } from "../host/task-files.js";
import type { RunTaskOptions } from "./run-task.js";

/** The run options a task's recorded launch context gives: its component config and the host's trusted keys. */
export async function launchOptions(root: string, task: DesiredState): Promise<Pick<RunTaskOptions, "component" | "trust">> {
  const launch = await readLaunch(root, task);
  return { component: launch.component, trust: launch.trustedKeys.length > 0 ? trustedKeys(launch.trustedKeys) : null };
}
