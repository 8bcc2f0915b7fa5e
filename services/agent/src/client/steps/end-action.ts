import type { StepContext, StepResult } from "../machine.js";
import { discardLeftovers, pruneVersions } from "../staging.js";

/** END_ACTION never fails: a cleanup problem must not turn a done upgrade into a failure; it is reported as detail. */
export async function endAction({ input, facts }: StepContext): Promise<StepResult> {
  const notes: string[] = [];
  try {
    await discardLeftovers(input.paths);
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
