import { createParser, type EventSourceMessage } from "eventsource-parser";
import { authHeaders, failure } from "./api.js";

export interface LiveHandlers {
  onMessage(event: string, data: unknown): void;
  /** A refusal the stream cannot recover from (404, 401): shown, not retried. */
  onError(err: Error): void;
}

/**
 * Server-sent events over fetch (EventSource cannot send the Authorization header). Reconnects
 * after a drop with the last id it saw as Last-Event-ID, so the server resumes without a gap.
 * Returns a function that stops it.
 */
export function follow(path: string, handlers: LiveHandlers, retryMs = 1000): () => void {
  const abort = new AbortController();
  let lastId: string | undefined;
  const run = async (): Promise<void> => {
    while (!abort.signal.aborted) {
      try {
        const headers: Record<string, string> = { ...authHeaders(), accept: "text/event-stream" };
        if (lastId !== undefined) headers["last-event-id"] = lastId;
        const res = await fetch(path, { headers, signal: abort.signal });
        if (res.status >= 400 && res.status < 500) {
          handlers.onError(await failure(res));
          return;
        }
        if (!res.ok || !res.body) throw new Error(`stream answered ${res.status}`);
        const parser = createParser({
          onEvent(msg: EventSourceMessage) {
            if (msg.id !== undefined) lastId = msg.id;
            handlers.onMessage(msg.event ?? "message", JSON.parse(msg.data));
          },
        });
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          parser.feed(value);
        }
      } catch {
        if (abort.signal.aborted) return;
      }
      await new Promise((r) => setTimeout(r, retryMs));
    }
  };
  void run();
  return () => abort.abort();
}
