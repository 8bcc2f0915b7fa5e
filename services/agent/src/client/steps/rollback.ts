import { realpath } from "node:fs/promises";
import { installedVersion } from "../../host/layout.js";
import { watchHealth } from "../health.js";
import type { StepContext, StepResult } from "../machine.js";
import { startProcess, stopProcess } from "../process.js";
import { undoSwitch } from "../recovery.js";

/**
 * ROLLBACK, after any failure from OVERRIDE on: stop what this run started, switch `current` back,
 * restart the old version if this run stopped it, and verify it answers. A failure here leaves
 * the task failed with both reasons.
 */
export async function rollback({ input, facts }: StepContext): Promise<StepResult> {
  const { component, paths, root, task } = input;
  const notes: string[] = [];
  const hasProcess = component.start !== undefined;
  if (hasProcess && facts.started) notes.push(`new version: ${await stopProcess(component, paths, task.version, facts.startedPid)}`);
  const undone = await undoSwitch(root, task.component, paths);
  if (undone) notes.push(`current → ${undone.record.from === null ? "none" : `versions/${undone.record.from}`}`);
  const old = await installedVersion(root, task.component);
  if (hasProcess && facts.stopped && old !== null) {
    const pid = await startProcess(component, paths, old);
    notes.push(pid === null ? "old version started" : `old version started (pid ${pid})`);
    notes.push(await watchHealth(component, paths, await realpath(paths.current), old, pid));
  }
  return { detail: notes.length > 0 ? notes.join("; ") : "nothing to roll back: the old version was never touched", facts: { switched: false } };
}
