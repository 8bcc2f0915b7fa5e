import type { Msg, NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { contextFromNats, inSpan, SpanKind, tracingEnabled } from "./tracing.js";

export interface Responder {
  stop(): Promise<void>;
}

/**
 * NATS request/reply on a queue group, so replicas share the load. At most `concurrency`
 * requests are handled at once per replica; the rest wait in the subscription. A handler that
 * throws is answered with `onError`'s body, never left without a reply.
 */
export function respond(
  nc: NatsConnection,
  opts: {
    subject: string;
    queue: string;
    concurrency?: number;
    logger: Logger;
    handle: (msg: Msg) => Promise<unknown>;
    onError: (err: unknown) => unknown;
    /**
     * For periodic requests whose late answer is worth nothing (heartbeats): when more than
     * `maxPending` wait in the subscription, a request taken from it is dropped unanswered (the
     * requester times out and sends its next one later), so a replica that cannot keep up holds a
     * bounded queue instead of one that grows with every period.
     */
    shed?: { maxPending: number; onShed?: (msg: Msg) => void };
  },
): Responder {
  const sub = nc.subscribe(opts.subject, { queue: opts.queue });
  const limit = opts.concurrency ?? 64;
  const running = new Set<Promise<void>>();
  const loop = (async () => {
    for await (const msg of sub) {
      if (opts.shed && sub.getPending() > opts.shed.maxPending) {
        opts.shed.onShed?.(msg);
        continue;
      }
      while (running.size >= limit) await Promise.race(running);
      const p = (async () => {
        let answer: unknown;
        try {
          // Traced: a SERVER span, the child of the requester's `traceparent` header.
          answer = await (tracingEnabled ? inSpan(`${opts.queue} ${opts.subject}`, contextFromNats(msg.headers), () => opts.handle(msg), {}, SpanKind.SERVER) : opts.handle(msg));
        } catch (err) {
          opts.logger.error({ err, subject: msg.subject }, "request handler failed");
          answer = opts.onError(err);
        }
        if (msg.reply) msg.respond(JSON.stringify(answer));
      })().finally(() => running.delete(p));
      running.add(p);
    }
  })();
  return {
    async stop() {
      await sub.drain();
      await loop;
      await Promise.all(running);
    },
  };
}
