import type { MoltEvent } from "@molt/contracts";

/** A stored commit as far as a replay of its events needs it. */
type Replayed = { commit: { events: readonly MoltEvent[] } };

const ENDED = new Set(["TaskSucceeded", "TaskFailed", "TaskRejected", "TaskTimedOut", "TaskCancelled"]);

/**
 * Tasks in flight after each slot commit, replayed in stream order: the maximum. Only the tasks
 * of `deploymentId` when given, else every deployment's (the fleet-wide figure).
 */
export function maxInFlight(commits: readonly Replayed[], deploymentId?: string): number {
  const open = new Set<string>();
  let max = 0;
  for (const c of commits)
    for (const e of c.commit.events) {
      if (e.type === "TaskAllocated") {
        if (deploymentId !== undefined && e.data.deploymentId !== deploymentId) continue;
        open.add(e.data.taskId);
        max = Math.max(max, open.size);
      } else if (ENDED.has(e.type) && "taskId" in e.data) open.delete(e.data.taskId);
    }
  return max;
}
