import type { DesiredState, JournalEntry } from "@molt/contracts";
import { realpath } from "node:fs/promises";
import { type ComponentPaths, componentPaths, installedVersion } from "../host/layout.js";
import { watchHealth } from "../client/health.js";
import { acquireLock, LockBusyError } from "../client/lock.js";
import { findPid, startProcess, stopProcess } from "../client/process.js";
import { readSwitchRecord, type SwitchRecord, undoSwitch } from "../client/recovery.js";
import { readLaunch } from "../host/task-files.js";
import { errorMessage, type Log } from "../log.js";
import type { ComponentConfig } from "./components.js";

/** What the host runs after a client died mid-task, as the agent's verdict must say it. */
export type DeadRunOutcome =
  /** Nothing was switched, or the switch was undone by someone else: the old version runs. */
  | { readonly kind: "failed" }
  /** The agent undid the dead run's unconfirmed switch: the old version runs again, verified when it has a process or a health check. */
  | { readonly kind: "rolled-back"; readonly detail: string }
  /** The agent undid the switch, but the old version could not be restarted or failed its verification. */
  | { readonly kind: "rollback-failed"; readonly error: string }
  /** The switch was confirmed before the client died: the new version runs. */
  | { readonly kind: "succeeded"; readonly version: string };

/**
 * DESIGN's recovery rule, applied by the agent when a client ended without a verdict: under the
 * component lock (the dead client's ticket is stale), a switch of this task that was never
 * confirmed is undone, the old version's process is brought back (see restoreProcess) and
 * verified as ROLLBACK does it; then the verdict says what the host runs. A live client holding
 * the lock undoes any unconfirmed switch itself when it begins, so a busy lock is left to it.
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
          const { component } = await readLaunch(root, task);
          try {
            await restoreProcess(component, paths, undone.record, entries, notes);
          } catch (err) {
            return { kind: "rollback-failed", error: [...notes, errorMessage(err)].join("; ") };
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

/**
 * After `current` is back at `from`: the old version must run and pass the same verification as
 * ROLLBACK's (healthy for the watch window, answering `from`). If the dead run never began STOP,
 * the old process was never touched and is only verified; else whatever runs now (the old one
 * stopped, or the new one started) is stopped and the old version started. An undone install
 * only stops the new version's process. Notes what it did; throws when the old version does not
 * come back.
 */
async function restoreProcess(component: ComponentConfig, paths: ComponentPaths, record: SwitchRecord, entries: readonly JournalEntry[], notes: string[]): Promise<void> {
  const hasProcess = component.start !== undefined;
  const stopBegan = entries.some((e) => e.kind === "step-started" && e.step === "stop");
  let startedPid: number | null = null;
  if (hasProcess && (stopBegan || record.from === null)) {
    notes.push(await stopProcess(component, paths, record.to));
    if (record.from !== null) {
      startedPid = await startProcess(component, paths, record.from);
      notes.push(startedPid === null ? "old version started" : `old version started (pid ${startedPid})`);
    }
  } else if (hasProcess) {
    const pid = await findPid(component, paths);
    notes.push(`the old process was never stopped${pid === null ? "" : ` (pid ${pid})`}`);
  }
  if (record.from === null || (!hasProcess && component.health === undefined)) return;
  try {
    notes.push(await watchHealth(component, paths, await realpath(paths.current), record.from, startedPid));
  } catch (err) {
    throw new Error(`the restored version ${record.from} failed verification: ${errorMessage(err)}`);
  }
}
