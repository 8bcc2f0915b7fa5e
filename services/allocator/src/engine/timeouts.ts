import type { StoredCommit } from "@molt/event-store";
import type { MessageContext } from "./consumer.js";
import type { EngineDeps } from "./deps.js";

/**
 * The deadline index is the redelivery schedule of a durable consumer on slot events: each
 * TaskAllocated is handed back (nak with delay) until its deadline, then the task, if still
 * active, is timed out and withdrawn. Nothing walks the desired keys, every replica shares the
 * schedule, and a killed replica's pending deadlines come back to another.
 */
export function timeouts(deps: EngineDeps) {
  return async function deadlines(c: StoredCommit, ctx: MessageContext): Promise<void> {
    for (const e of c.commit.events) {
      if (e.type !== "TaskAllocated") continue;
      const d = e.data;
      const { state } = await deps.slots.load(d.hostId, d.component);
      if (state.active?.taskId !== d.taskId) continue;
      const now = ctx.clock();
      if (now.getTime() < Date.parse(d.deadline)) {
        ctx.redeliverAt(d.deadline);
        continue;
      }
      const out = await deps.slots.handle(
        d.hostId,
        d.component,
        { type: "TimeOutTask", data: { taskId: d.taskId, now: now.toISOString() } },
        { now: now.toISOString(), actor: "allocator", correlationId: e.metadata.correlationId, causationId: e.id },
        `${d.taskId}:timed-out`,
      );
      if (out.state.active?.taskId !== d.taskId) await deps.desired.withdraw(d.hostId, d.component, d.taskId);
    }
  };
}
