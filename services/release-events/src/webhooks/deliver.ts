import { releaseNameOf, releaseSubjects, STREAM_RELEASE, type ReleaseName } from "@molt/contracts";
import type { Logger } from "@molt/runtime";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { Webhook as Signer } from "standardwebhooks";
import { request, type Dispatcher } from "undici";
import type { AddressGuard } from "./ssrf.js";
import type { Webhook, WebhookStore } from "./store.js";

export interface DeliveryTimings {
  /** One attempt's limit (connect, headers, body): a hanging receiver is cut off then. */
  timeoutMs: number;
  /** The first retry's delay; each next one doubles, up to `retryMaxMs`, with jitter. */
  retryMinMs: number;
  retryMaxMs: number;
  /** How long an event is retried before the subscription is marked failing and paused. */
  giveUpMs: number;
  /** How often an idle subscription looks for new events (the publisher also wakes it at once). */
  pollMs: number;
}

export const DEFAULT_TIMINGS: DeliveryTimings = { timeoutMs: 10_000, retryMinMs: 5_000, retryMaxMs: 3_600_000, giveUpMs: 26 * 3_600_000, pollMs: 1_000 };

/** Exponential backoff with equal jitter: between half and all of min(max, min·2^(n-1)). */
export const backoff = (t: Pick<DeliveryTimings, "retryMinMs" | "retryMaxMs">, failures: number, random = Math.random) => {
  const cap = Math.min(t.retryMaxMs, t.retryMinMs * 2 ** Math.min(failures - 1, 40));
  return Math.round(cap / 2 + (random() * cap) / 2);
};

const decoder = new TextDecoder();

/**
 * One worker per active subscription, each walking MOLT_RELEASE from its own stored cursor, one
 * event at a time: the cursor moves only once the receiver answered 2xx, so order holds (per
 * deployment and overall) and nothing is skipped; a receiver that fails or hangs holds back only
 * its own subscription.
 */
export function createDelivery(deps: { nc: NatsConnection; store: WebhookStore; guard: AddressGuard; logger: Logger; timings: DeliveryTimings; stream?: string }) {
  const { store, logger, timings, guard } = deps;
  const stream = deps.stream ?? STREAM_RELEASE;
  const dispatcher: Dispatcher = guard.dispatcher({ timeoutMs: timings.timeoutMs });
  const workers = new Map<string, { abort: AbortController; done: Promise<void> }>();
  let jsm: JetStreamManager | undefined;
  let wakers = new Set<() => void>();
  let closed = false;

  /** Sleeps `ms`, or less when woken by new events (`wakeable`) or stopped. */
  const sleep = (ms: number, signal: AbortSignal, wakeable: boolean) =>
    new Promise<void>((res) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        wakers.delete(done);
        res();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener("abort", done);
      if (wakeable) wakers.add(done);
    });

  const matches = (w: Webhook, component: string, name: ReleaseName) =>
    (w.filters.components.length === 0 || w.filters.components.includes(component)) && (w.filters.types.length === 0 || w.filters.types.includes(name));

  /** One POST, signed as Standard Webhooks prescribes; the outcome, never a throw. */
  const post = async (w: Webhook, id: string, body: string, signal: AbortSignal): Promise<{ status: number | null; ok: boolean; error: string | null }> => {
    try {
      const url = new URL(w.url);
      // An IP literal is connected to without a lookup: checked here instead.
      await guard.checkHost(url.hostname).catch((err: unknown) => {
        if ((err as Error).name === "SsrfError") throw err;
      });
      const now = new Date();
      const signature = new Signer(w.secret).sign(id, now, body);
      const res = await request(w.url, {
        method: "POST",
        dispatcher,
        signal: AbortSignal.any([signal, AbortSignal.timeout(timings.timeoutMs)]),
        headers: {
          "content-type": "application/cloudevents+json",
          "webhook-id": id,
          "webhook-timestamp": String(Math.floor(now.getTime() / 1000)),
          "webhook-signature": signature,
          "user-agent": "molt-release-events",
        },
        body,
      });
      await res.body.dump({ limit: 64 * 1024 }).catch(() => undefined);
      const ok = res.statusCode >= 200 && res.statusCode < 300;
      const redirect = res.statusCode >= 300 && res.statusCode < 400 ? await redirectError(w.url, res.headers["location"]) : null;
      return { status: res.statusCode, ok, error: ok ? null : (redirect ?? `answered ${res.statusCode}`) };
    } catch (err) {
      const e = err as Error & { cause?: Error };
      return { status: null, ok: false, error: `${e.name}: ${e.message}${e.cause ? ` (${e.cause.message})` : ""}`.slice(0, 1000) };
    }
  };

  /**
   * A redirect is never followed; the attempt's error says where it led, and that it was refused
   * when that is an address the guard forbids (a redirect to loopback or to the metadata address).
   */
  const redirectError = async (from: string, location: string | string[] | undefined) => {
    const to = String(location ?? "?").slice(0, 300);
    let target: URL | undefined;
    try {
      target = new URL(to, from);
    } catch {
      return `redirect to ${to} not followed`;
    }
    const refused = await guard.checkHost(target.hostname).then(
      () => null,
      (err: unknown) => ((err as Error).name === "SsrfError" ? (err as Error).message : null),
    );
    return refused ? `redirect to ${target.href} refused: ${refused}` : `redirect to ${target.href} not followed`;
  };

  const run = async (id: string, signal: AbortSignal): Promise<void> => {
    jsm ??= await jetstreamManager(deps.nc);
    while (!signal.aborted) {
      const w = await store.get(id);
      if (!w || w.state !== "active") return;
      const m = await jsm.direct.getMessage(stream, { seq: w.cursor + 1, next_by_subj: releaseSubjects.all }).catch((err: unknown) => {
        logger.warn({ err, webhook: id }, "reading MOLT_RELEASE failed; retrying");
        return undefined;
      });
      if (!m) {
        await sleep(timings.pollMs, signal, true);
        continue;
      }
      const body = decoder.decode(m.data);
      const event = JSON.parse(body) as { id: string; type: string };
      const name = releaseNameOf(event.type);
      const component = m.subject.split(".")[2] ?? "";
      if (!name || !matches(w, component, name)) {
        await store.advance(id, m.seq);
        continue;
      }
      let since: number | undefined;
      for (let attempt = 1; !signal.aborted; attempt++) {
        const started = Date.now();
        const out = await post(w, event.id, body, signal);
        // Stopped (pause, delete, shutdown) mid-attempt: a 2xx already answered still counts, so
        // the receiver does not get that event again on resume; anything else is recorded as cut
        // short and retried then.
        const cut = signal.aborted && !out.ok;
        await store.record(id, { eventId: event.id, eventType: event.type, streamSeq: m.seq, attempt, durationMs: Date.now() - started, ...out, ...(cut ? { error: `stopped mid-attempt (paused, deleted or shutting down): ${out.error ?? ""}`.slice(0, 1000) } : {}) });
        if (cut) return;
        if (out.ok) {
          await store.advance(id, m.seq);
          break;
        }
        // The give-up time counts from the first failure at this event, stored: a restart keeps it.
        since ??= (await store.retrying(id, new Date(started))).getTime();
        const delay = backoff(timings, attempt);
        if (Date.now() - since + delay > timings.giveUpMs) {
          // Paused where it stands: resuming retries this event first.
          await store.setState(id, "failing", `event ${event.id} undelivered after ${attempt} attempts: ${out.error}`);
          logger.warn({ webhook: id, eventId: event.id, attempts: attempt, error: out.error }, "webhook failing: paused");
          return;
        }
        await sleep(delay, signal, false);
      }
    }
  };

  const start = (id: string) => {
    if (closed || workers.has(id)) return;
    const abort = new AbortController();
    const done = run(id, abort.signal)
      .catch((err: unknown) => logger.error({ err, webhook: id }, "webhook worker failed"))
      .finally(() => {
        if (workers.get(id)?.abort === abort) workers.delete(id);
      });
    workers.set(id, { abort, done });
  };
  const stop = async (id: string) => {
    const wk = workers.get(id);
    if (!wk) return;
    wk.abort.abort();
    await wk.done;
  };

  return {
    /** Starts a worker for every active subscription (at boot). */
    async startAll(): Promise<void> {
      for (const w of await store.list()) if (w.state === "active") start(w.id);
    },
    start,
    stop,
    /** New events are on the stream: idle workers look at once. */
    wake() {
      const ws = wakers;
      wakers = new Set();
      for (const w of ws) w();
    },
    async close(): Promise<void> {
      closed = true;
      await Promise.all([...workers.keys()].map(stop));
      await dispatcher.close();
    },
  };
}
export type Delivery = ReturnType<typeof createDelivery>;
