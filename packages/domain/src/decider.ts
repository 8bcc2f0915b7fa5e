import type { EventMetadata, MoltEvent, MoltEventType, EventOf } from "@molt/contracts";

/**
 * An aggregate's rules as pure functions (emmett's decider). `Decision` is usually the list of
 * event bodies; the slot's report handling answers with a richer result instead.
 */
export interface Decider<State, Command, Event, Decision> {
  decide(command: Command, state: State): Decision;
  evolve(state: State, event: Event): State;
  initialState(): State;
}

/**
 * What a decider produces: an event without id and metadata, which only the caller can supply
 * (commit id, clock, actor). Distributes over unions so `type` still narrows `data`.
 */
export type EventBody<E extends MoltEvent> = E extends MoltEvent ? Omit<E, "id" | "metadata"> : never;
export type EventBodyOf<T extends MoltEventType> = EventBody<EventOf<T>>;

/** Time and ids for one decision; they come from the command's caller, never from inside a decider. */
export interface CommandMeta {
  /** ISO 8601 date-time. */
  now: string;
  actor: string;
  correlationId: string;
  causationId?: string;
  traceparent?: string;
}

export type Envelope<B> = B & { id: string; metadata: EventMetadata };

/**
 * Ids derive from the commit id so a retried append of the same decision yields the same events,
 * which JetStream's msgID dedupe and consumers' id dedupe rely on.
 */
export function toEnvelopes<B extends EventBody<MoltEvent>>(
  bodies: readonly B[],
  meta: CommandMeta,
  commitId: string,
): Envelope<B>[] {
  return bodies.map((body, index) => ({
    ...body,
    id: `${commitId}/${index}`,
    metadata: {
      occurredAt: meta.now,
      actor: meta.actor,
      correlationId: meta.correlationId,
      ...(meta.causationId !== undefined ? { causationId: meta.causationId } : {}),
      ...(meta.traceparent !== undefined ? { traceparent: meta.traceparent } : {}),
    },
  }));
}

/** The `never` check closing every exhaustive switch. */
export function unreachable(value: never): never {
  throw new Error(`unreachable: ${JSON.stringify(value)}`);
}
