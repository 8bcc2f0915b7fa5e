import type { FastifyReply, FastifyRequest } from "fastify";

export interface SseStream {
  /** One message; `id` is what a reconnecting client sends back as Last-Event-ID. */
  send(event: string, data: unknown, id?: number): void;
  readonly closed: boolean;
  /** Runs when the client goes away (or the server closes the stream). */
  onClose(fn: () => void): void;
  /** Ends the stream from the server's side. */
  end(): void;
}

/**
 * Turns a request into a text/event-stream: headers, a comment every `keepAliveMs` so proxies
 * (and the gateway's upstream timeouts) see traffic, and cleanup when the client leaves.
 */
export function openSse(req: FastifyRequest, reply: FastifyReply, opts: { keepAliveMs: number }): SseStream {
  void reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache, no-transform",
    connection: "keep-alive",
    // nginx and similar proxies buffer responses unless told not to.
    "x-accel-buffering": "no",
  });
  res.write(": connected\n\n");
  let closed = false;
  const closers: Array<() => void> = [];
  const keepAlive = setInterval(() => res.write(": keep-alive\n\n"), opts.keepAliveMs);
  const close = () => {
    if (closed) return;
    closed = true;
    clearInterval(keepAlive);
    for (const fn of closers) fn();
  };
  req.raw.on("close", close);
  res.on("close", close);
  return {
    send(event, data, id) {
      if (closed) return;
      const lines = JSON.stringify(data);
      res.write(`${id !== undefined ? `id: ${id}\n` : ""}event: ${event}\ndata: ${lines}\n\n`);
    },
    get closed() {
      return closed;
    },
    onClose(fn) {
      closers.push(fn);
    },
    end() {
      close();
      res.end();
    },
  };
}

/** The Last-Event-ID a reconnecting client sent (header, or `lastEventId` for clients that cannot set headers). */
export function lastEventId(req: FastifyRequest, query: { lastEventId?: number | undefined }): number | undefined {
  const header = req.headers["last-event-id"];
  const raw = typeof header === "string" ? header : undefined;
  if (raw !== undefined && /^\d{1,15}$/.test(raw)) return Number(raw);
  return query.lastEventId;
}
