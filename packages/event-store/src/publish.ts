import { JetStreamApiError, JetStreamError, type PubAck } from "@nats-io/jetstream";
import {
  ClosedConnectionError,
  createInbox,
  NoRespondersError,
  PermissionViolationError,
  RequestError,
  TimeoutError,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
  type Subscription,
} from "@nats-io/transport-node";

/** What a JetStream publish is answered with: where the message landed, or that its msgID was stored already. */
export type Ack = Pick<PubAck, "stream" | "seq" | "duplicate">;

/** Publishes a message to a stream and resolves with the stream's ack. */
export type JetStreamPublish = (subject: string, body: Uint8Array, headers: MsgHdrs) => Promise<Ack>;

interface Pending {
  subject: string;
  deadline: number;
  resolve: (ack: Ack) => void;
  reject: (err: unknown) => void;
}

interface JsAck {
  stream?: string;
  seq?: number;
  duplicate?: boolean;
  error?: { code: number; err_code?: number; description: string };
}

const decoder = new TextDecoder();

/**
 * `js.publish` without nats.js's per-request machinery: one reply subscription (`<inbox>.*`) for
 * every publish of this publisher, acks matched by token, deadlines swept by one timer.
 *
 * Why not `jetstream(nc).publish`: each of its requests builds a RequestError (an Error, stack
 * captured) when it is cancelled after its answer, a timer and a deferred, a backoff, copies of
 * the options and a TextDecoder for the ack; in the event-store benchmark that was a third of
 * append's client CPU, more than validating and encoding the commit (docs/benchmarks.md).
 * The semantics are those of `js.publish` with one try: an ack, a JetStreamApiError carrying the
 * server's error code, NoRespondersError (no stream on the subject, or none reachable),
 * TimeoutError when no ack came within `timeoutMs` (the message may or may not be stored: the
 * caller retries with the same msgID), a PermissionViolationError when the server refuses the
 * publish, and ClosedConnectionError when the connection closes first.
 */
export function jetStreamPublisher(nc: NatsConnection, opts: { timeoutMs?: number } = {}): JetStreamPublish {
  const timeoutMs = opts.timeoutMs ?? 5_000;
  // Insertion order is deadline order (one timeout for all), so the sweep stops at the first live one.
  const pending = new Map<string, Pending>();
  let inbox: string | undefined;
  let sub: Subscription | undefined;
  let sweeper: ReturnType<typeof setInterval> | undefined;
  let next = 0;

  const settle = (token: string): Pending | undefined => {
    const p = pending.get(token);
    if (p) pending.delete(token);
    if (pending.size === 0 && sweeper !== undefined) {
      clearInterval(sweeper);
      sweeper = undefined;
    }
    return p;
  };
  const rejectAll = (err: unknown, which: (p: Pending) => boolean = () => true) => {
    for (const [token, p] of pending) if (which(p)) settle(token)?.reject(err);
  };
  const sweep = () => {
    const now = Date.now();
    for (const [token, p] of pending) {
      if (p.deadline > now) break;
      settle(token)?.reject(new TimeoutError());
    }
  };

  const onReply = (err: Error | null, m: Msg) => {
    // A refused reply subscription is reported here once, then the subscription is closed.
    if (err) return rejectAll(err);
    const p = settle(m.subject.slice(inbox!.length));
    if (!p) return; // timed out already
    if (m.data.length === 0) {
      // A status without a body: 503 = no responders (no stream listens on the subject).
      const h = m.headers;
      return p.reject(h?.code === 503 ? new NoRespondersError(p.subject) : new RequestError(`${h?.code ?? "?"} ${h?.description ?? "empty reply"}`));
    }
    let ack: JsAck;
    try {
      ack = JSON.parse(decoder.decode(m.data)) as JsAck;
    } catch (parseErr) {
      return p.reject(parseErr);
    }
    if (ack.error) return p.reject(new JetStreamApiError(ack.error as ConstructorParameters<typeof JetStreamApiError>[0]));
    if (!ack.stream || typeof ack.seq !== "number") return p.reject(new JetStreamError("invalid ack response"));
    p.resolve({ stream: ack.stream, seq: ack.seq, duplicate: ack.duplicate ?? false });
  };

  const subscribe = (): string => {
    const prefix = (nc as { options?: { inboxPrefix?: string } }).options?.inboxPrefix;
    const base = `${createInbox(prefix)}.`;
    const s = nc.subscribe(`${base}*`, { callback: onReply });
    inbox = base;
    sub = s;
    void s.closed.then(() => {
      // The connection closed (or the server refused the subscription): nothing more will be answered.
      if (sub === s) {
        sub = undefined;
        inbox = undefined;
      }
      rejectAll(new ClosedConnectionError());
    });
    // A publish the server refuses (no permission on the subject) is reported on the connection's status only.
    void (async () => {
      for await (const st of nc.status()) {
        if (sub !== s) break;
        if (st.type === "error" && st.error instanceof PermissionViolationError && st.error.operation === "publish") {
          const refused = st.error;
          rejectAll(refused, (p) => p.subject === refused.subject);
        }
      }
    })().catch(() => {
      // The status stream ended with the connection: refused publishes would then only time out.
    });
    return base;
  };

  return (subject, body, headers) => {
    const base = inbox ?? subscribe();
    const token = (next++).toString(36);
    return new Promise<Ack>((resolve, reject) => {
      pending.set(token, { subject, deadline: Date.now() + timeoutMs, resolve, reject });
      sweeper ??= setInterval(sweep, Math.min(250, timeoutMs));
      try {
        nc.publish(subject, body, { reply: base + token, headers });
      } catch (err) {
        // Closed, draining, a subject or size the client refuses: nothing was sent.
        settle(token)?.reject(err);
      }
    });
  };
}
