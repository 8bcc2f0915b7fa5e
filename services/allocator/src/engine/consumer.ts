import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type JsMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { InvalidHostIdError } from "@molt/contracts";
import { CommitTooLargeError, concerns, CorruptCommitError, decodeCommit, InvalidCommitError, type StoredCommit } from "@molt/event-store";
import { ZodError } from "zod";
import type { Logger } from "@molt/runtime";
import { RetryLater } from "./rules.js";

/** Errors that would repeat on every redelivery. */
function isPermanent(err: unknown): boolean {
  return (
    err instanceof CorruptCommitError ||
    err instanceof InvalidCommitError ||
    err instanceof CommitTooLargeError ||
    err instanceof ZodError ||
    err instanceof InvalidHostIdError
  );
}

export interface ConsumerOptions {
  stream: string;
  durable: string;
  /** Subjects this durable reads (default every event). */
  filter?: string;
  /** Messages delivered and not acked at once across replicas (default 1000). */
  maxAckPending?: number;
  /** Messages handled at once by this replica. */
  concurrency: number;
  /** Redelivery delay after a failure or a busy slot. */
  retryDelayMs: number;
  ackWaitMs: number;
  /**
   * The event types the handler acts on. A commit with none of them is acked unread: most slot
   * commits are step reports the roll engine has no rule for, and validating each in full
   * (twice, once per durable) was a large share of the allocator's CPU per host.
   */
  handles?: ReadonlySet<string>;
}

/** What a handler may ask of the message it handles. */
export interface MessageContext {
  /** Hand the message back for a later look (a pause or a deadline): redelivered after `at`, ISO 8601. */
  redeliverAt(at: string): void;
  /** The reader's clock, for the one kind of rule that needs it: has a wake-up time passed. */
  clock(): Date;
}

/**
 * All replicas bind the same durable pull consumer, so each event is handled by one of them at
 * a time; a message is acked only after its decisions are appended, and a killed replica's
 * unacked messages come back to another after ack_wait.
 */
export function runConsumer(
  nc: NatsConnection,
  opts: ConsumerOptions,
  handle: (c: StoredCommit, ctx: MessageContext) => Promise<void>,
  logger: Logger,
): Promise<{ stop(): Promise<void>; done: Promise<void> }> {
  const decode = (m: JsMsg) => (opts.handles !== undefined && !concerns(m.data, opts.handles) ? null : decodeCommit(m));
  return consume(nc, opts, decode, handle, logger);
}

/**
 * The same loop over messages of which the handler needs less than the whole commit: `decode`
 * turns a message into what `handle` takes, or null for one to ack unread. With `headersOnly`
 * the server sends subjects and headers only.
 */
export async function consume<T>(
  nc: NatsConnection,
  opts: ConsumerOptions & { headersOnly?: boolean },
  decode: (m: JsMsg) => T | null,
  handle: (c: T, ctx: MessageContext) => Promise<void>,
  logger: Logger,
): Promise<{ stop(): Promise<void>; done: Promise<void> }> {
  const jsm = await jetstreamManager(nc);
  const config = {
    durable_name: opts.durable,
    filter_subject: opts.filter ?? "molt.es.>",
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: opts.ackWaitMs * 1_000_000,
    max_ack_pending: opts.maxAckPending ?? 1000,
    ...(opts.headersOnly ? { headers_only: true } : {}),
  };
  try {
    await jsm.consumers.info(opts.stream, opts.durable);
  } catch (err) {
    if ((err as Error).name !== "ConsumerNotFoundError") throw err;
    try {
      await jsm.consumers.add(opts.stream, config);
    } catch (addErr) {
      // Another replica created it between our info and add: bind to theirs.
      logger.debug({ err: addErr }, "durable consumer created by another replica");
    }
  }
  const consumer = await jetstream(nc).consumers.get(opts.stream, opts.durable);
  const messages = await consumer.consume({ max_messages: Math.max(opts.concurrency * 2, 16) });
  const running = new Set<Promise<void>>();

  const process = async (m: JsMsg) => {
    // A long decision (thousands of appends) must not outlive ack_wait, or the server hands the
    // same message to a second replica while the first is still at it.
    const progress = setInterval(() => m.working(), Math.max(50, Math.floor(opts.ackWaitMs / 3)));
    let wakeAt: number | null = null;
    const ctx: MessageContext = {
      redeliverAt: (at) => {
        const t = Date.parse(at);
        wakeAt = wakeAt === null ? t : Math.min(wakeAt, t);
      },
      clock: () => new Date(),
    };
    try {
      const item = decode(m);
      if (item === null) {
        m.ack();
        return;
      }
      await handle(item, ctx);
      if (wakeAt === null) m.ack();
      else m.nak(Math.max(1, wakeAt - Date.now()));
    } catch (err) {
      if (isPermanent(err)) {
        // Retrying cannot help (the message or what it names is malformed): say so loudly, move on.
        logger.error({ err, seq: m.seq, subject: m.subject }, "event cannot be handled; terminated");
        m.term();
        return;
      }
      if (err instanceof RetryLater) logger.info({ reason: err.message, seq: m.seq }, "retrying later");
      else logger.error({ err, seq: m.seq, subject: m.subject, deliveries: m.info.deliveryCount }, "event handling failed; will retry");
      m.nak(opts.retryDelayMs);
    } finally {
      clearInterval(progress);
    }
  };

  const done = (async () => {
    for await (const m of messages) {
      while (running.size >= opts.concurrency) await Promise.race(running);
      const p = process(m).finally(() => running.delete(p));
      running.add(p);
    }
    await Promise.all(running);
  })();
  return {
    done,
    async stop() {
      await messages.close();
      await done;
    },
  };
}
