import type { StepContext, StepResult } from "../machine.js";
import { clearSwitchRecord, readSwitchRecord, undoSwitch } from "../recovery.js";
import { discardLeftovers, pruneVersions } from "../staging.js";

/** END_ACTION (release the lock, clean up) never fails: a cleanup problem must not turn a done upgrade into a failure; it is reported as detail. */
export async function endAction({ input, facts, failing }: StepContext): Promise<StepResult> {
  const notes: string[] = [];
  try {
    // Success confirms the switch (the record goes); on the failure path an unconfirmed switch of
    // this run is undone, so the old version is what the host runs.
    const record = await readSwitchRecord(input.paths);
    if (record?.taskId === input.task.taskId) {
      if (!failing) await clearSwitchRecord(input.paths);
      else if (await undoSwitch(input.root, input.task.component, input.paths)) notes.push(`switch undone: current → ${record.from ?? "none"}`);
    }
  } catch (err) {
    notes.push(`switch record: ${(err as Error).message}`);
  }
  try {
    // A failed run keeps its (partial) download, so the retry of the same package resumes it.
    await discardLeftovers(input.paths, failing ? input.task.package?.sha256 : undefined);
  } catch (err) {
    notes.push(`staging cleanup failed: ${(err as Error).message}`);
  }
  try {
    const pruned = await pruneVersions(input.root, input.task.component, input.paths, facts.previousVersion);
    if (pruned.length > 0) notes.push(`pruned ${pruned.join(", ")}`);
  } catch (err) {
    notes.push(`pruning failed: ${(err as Error).message}`);
  }
  try {
    await facts.lock?.release();
    notes.push("lock released");
  } catch (err) {
    notes.push(`lock release failed: ${(err as Error).message}`);
  }
  return { detail: notes.join("; "), facts: { lock: null } };
}
