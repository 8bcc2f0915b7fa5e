import { DeliverPolicy, jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";

/** One stream message as read, before any validation. */
export interface RawMessage {
  subject: string;
  seq: number;
  data: Uint8Array;
  /** When JetStream stored it. */
  time: Date;
}

export interface Subscription {
  stop(): Promise<void>;
  /** Resolves when the subscription ends (stopped or failed). */
  readonly done: Promise<void>;
}

/**
 * Catch-up then live: every message of `stream` matching `filter` from `fromSeq` on, in stream
 * order, through an ordered consumer (no server-side state to clean up). Each message is handled
 * before the next is taken. A failure, including the consumer ending by itself, goes to `onError`
 * (or rejects `done`); callers that keep a checkpoint restart from it.
 */
export function followStream(
  nc: NatsConnection,
  opts: {
    stream: string;
    filter: string;
    fromSeq: number;
    handler: (m: RawMessage) => Promise<void> | void;
    onError?: (err: unknown) => void;
  },
): Subscription {
  const js = jetstream(nc);
  let stopped = false;
  let close: (() => Promise<unknown>) | undefined;
  const done = (async () => {
    const consumer = await js.consumers.get(opts.stream, {
      filter_subjects: opts.filter,
      ...(opts.fromSeq > 1 ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: opts.fromSeq } : {}),
    });
    const messages = await consumer.consume();
    close = () => messages.close();
    // Stopped while the consumer was being made. close() resolves once the iterator has ended,
    // so awaited before iterating it never resolved and stop() waited forever (a projector
    // rebuild on an empty stream hung so): close, let the iterator end, then wait.
    if (stopped) {
      const closed = messages.close();
      for await (const _ of messages) break;
      await closed;
      return;
    }
    for await (const m of messages) {
      await opts.handler({ subject: m.subject, seq: m.seq, data: m.data, time: new Date(Math.floor(m.info.timestampNanos / 1e6)) });
      if (stopped) break;
    }
    if (!stopped) throw new Error(`the consumer on ${opts.stream} ended`);
  })().catch((err: unknown) => {
    if (stopped) return;
    if (opts.onError) opts.onError(err);
    else throw err;
  });
  return {
    done,
    async stop() {
      stopped = true;
      await close?.();
      await done.catch(() => undefined);
    },
  };
}
