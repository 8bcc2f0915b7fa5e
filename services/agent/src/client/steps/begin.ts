import { acquireLock, LockBusyError } from "../lock.js";
import { type StepContext, type StepResult, TaskRejectedError } from "../machine.js";
import { undoSwitch } from "../recovery.js";
import { discardLeftovers } from "../staging.js";

/** BEGIN: the deadline, then the component lock; a busy lock rejects the task, touching nothing. */
export async function begin({ input }: StepContext): Promise<StepResult> {
  const { task, paths, now } = input;
  if (Date.parse(task.deadline) <= now().getTime()) throw new TaskRejectedError(`deadline ${task.deadline} has passed`);
  let lock;
  try {
    lock = await acquireLock(paths.lock, task.taskId, now);
  } catch (err) {
    if (err instanceof LockBusyError) throw new TaskRejectedError(err.message);
    throw err;
  }
  let recovered = "";
  try {
    // A switch a dead run never confirmed is rolled back first (DESIGN's recovery rule).
    const undone = await undoSwitch(input.root, task.component, paths);
    if (undone) recovered = `; rolled back task ${undone.record.taskId}'s unconfirmed switch to ${undone.record.to} (current → ${undone.record.from ?? "none"})`;
    // Holding the lock, anything in staging or a temp `current` link was left by a run that died
    // before its switch: the recovery rule is to discard it (the old version stays), except a
    // partial download of this very package, which the download resumes.
    await discardLeftovers(paths, task.package?.sha256);
  } catch (err) {
    await lock.release();
    throw err;
  }
  return { detail: `lock taken (pid ${process.pid})${recovered}`, facts: { lock } };
}
