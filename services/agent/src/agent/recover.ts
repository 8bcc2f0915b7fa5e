import type { DesiredState, JournalEntry } from "@molt/contracts";
import { componentPaths, installedVersion } from "../host/layout.js";
import { acquireLock, LockBusyError } from "../client/lock.js";
import { startProcess, stopProcess } from "../client/process.js";
import { readSwitchRecord, undoSwitch } from "../client/recovery.js";
import { readLaunch } from "../host/task-files.js";
import { errorMessage, type Log } from "../log.js";

/** What the host runs after a client died mid-task, as the agent's verdict must say it. */
export type DeadRunOutcome =
  /** Nothing was switched, or the switch was undone by someone else: the old version runs. */
  | { readonly kind: "failed" }
  /** The agent undid the dead run's unconfirmed switch: the old version runs again. */
  | { readonly kind: "rolled-back"; readonly detail: string }
  /** The switch was confirmed before the client died: the new version runs. */
  | { readonly kind: "succeeded"; readonly version: string };

/**
 * DESIGN's recovery rule, applied by the agent when a client ended without a verdict: under the
 * component lock (the dead client's ticket is stale), a switch of this task that was never
 * confirmed is undone; then the verdict says what the host runs. A live client holding the lock
 * undoes any unconfirmed switch itself when it begins, so a busy lock is left to it.
 */
export async function recoverDeadRun(root: string, task: DesiredState, entries: readonly JournalEntry[], log: Log): Promise<DeadRunOutcome> {
  const paths = componentPaths(root, task.component);
  try {
    const lock = await acquireLock(paths.lock, `recover-${task.taskId}`);
    try {
      const record = await readSwitchRecord(paths);
      if (record?.taskId === task.taskId) {
        const undone = await undoSwitch(root, task.component, paths);
        if (undone) {
          const notes = [`current → ${undone.record.from === null ? "none (install undone)" : `versions/${undone.record.from}`}`];
          // The old version must run again, whether the dead client had stopped it or started the new one.
          const { component } = await readLaunch(root, task);
          if (component.start !== undefined && undone.record.from !== null) {
            notes.push(await stopProcess(component, paths, undone.record.to));
            const pid = await startProcess(component, paths, undone.record.from);
            notes.push(pid === null ? "old version started" : `old version started (pid ${pid})`);
          }
          return { kind: "rolled-back", detail: notes.join("; ") };
        }
      }
    } finally {
      await lock.release();
    }
  } catch (err) {
    if (!(err instanceof LockBusyError)) log.error({ taskId: task.taskId, err: errorMessage(err) }, "could not recover after a dead upgrade client");
  }
  const switched = entries.some((e) => e.kind === "step-succeeded" && e.step === "override");
  if (switched && (await installedVersion(root, task.component)) === task.version && (await readSwitchRecord(paths))?.taskId !== task.taskId)
    return { kind: "succeeded", version: task.version };
  return { kind: "failed" };
}
