import type { JsMsg } from "@nats-io/jetstream";
import { decodeHostToken, parseEventSubject } from "@molt/contracts";
import type { MessageContext } from "./consumer.js";
import type { EngineDeps } from "./deps.js";

/** The commit id `dispatch.allocate` gives a task's allocation: `<taskId>:allocated`. */
const ALLOCATED = ":allocated";

/** A slot commit that allocated a task, as the deadline consumer sees it: from its subject and headers only. */
export interface Allocation {
  hostId: string;
  component: string;
  taskId: string;
  subject: string;
  seq: number;
}

/**
 * The deadline consumer reads subjects and headers only (the server sends no bodies): a slot
 * commit is an allocation when its msgID (the commit id) says so, and the task's deadline is in
 * the slot's state. Every other slot commit (the step reports) is acked unread.
 */
export function allocationOf(m: JsMsg): Allocation | null {
  const id = m.headers?.get("Nats-Msg-Id") ?? "";
  if (!id.endsWith(ALLOCATED)) return null;
  const where = parseEventSubject(m.subject);
  if (where?.kind !== "slot") return null;
  return { hostId: decodeHostToken(where.hostToken), component: where.component, taskId: id.slice(0, -ALLOCATED.length), subject: m.subject, seq: m.seq };
}

/**
 * The deadline index is the redelivery schedule of a durable consumer on slot events: each
 * allocation is handed back (nak with delay) until its task's deadline, then the task, if still
 * active, is timed out and withdrawn. Nothing walks the desired keys, every replica shares the
 * schedule, and a killed replica's pending deadlines come back to another.
 */
export function timeouts(deps: EngineDeps) {
  return async function deadlines(a: Allocation, ctx: MessageContext): Promise<void> {
    const { state } = await deps.slots.load(a.hostId, a.component);
    const active = state.active;
    if (active?.taskId !== a.taskId) return;
    const now = ctx.clock();
    if (now.getTime() < Date.parse(active.deadline)) {
      ctx.redeliverAt(active.deadline);
      return;
    }
    // Rare (a silent host): the allocation's event, for the correlation it carries.
    const allocated = (await deps.store.read(a.subject, { fromSeq: a.seq }))[0]?.commit.events.find((e) => e.type === "TaskAllocated");
    const out = await deps.slots.handle(
      a.hostId,
      a.component,
      { type: "TimeOutTask", data: { taskId: a.taskId, now: now.toISOString() } },
      { now: now.toISOString(), actor: "allocator", correlationId: allocated?.metadata.correlationId ?? a.taskId, ...(allocated ? { causationId: allocated.id } : {}) },
      `${a.taskId}:timed-out`,
    );
    if (out.state.active?.taskId !== a.taskId) await deps.desired.withdraw(a.hostId, a.component, a.taskId);
  };
}
