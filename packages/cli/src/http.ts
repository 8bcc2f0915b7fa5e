import { randomBytes } from "node:crypto";
import { ErrorBody } from "@molt/contracts";
import { request } from "undici";
import type { z } from "zod";
import type { Target } from "./config.js";
import { CliError } from "./output.js";

export interface Gateway {
  readonly url: string;
  readonly token: string | undefined;
  /** GET and parse with a contracts schema: an answer of another shape is an error, not a guess. */
  get<S extends z.ZodType>(path: string, schema: S, query?: Record<string, string | undefined>): Promise<z.infer<S>>;
  post<S extends z.ZodType>(path: string, schema: S, opts?: { body?: unknown; query?: Record<string, string | undefined>; idempotencyKey?: string }): Promise<z.infer<S>>;
  /** An open `text/event-stream` body (the caller reads it). */
  stream(path: string, headers?: Record<string, string>): Promise<AsyncIterable<Buffer>>;
}

/** What went wrong, in words: unreachable, or the server's own `{error:{code,message}}`. */
function unreachable(url: string, err: unknown): CliError {
  const e = err as { code?: string; cause?: { code?: string; message?: string }; message?: string };
  const why = e.cause?.code ?? e.code ?? e.cause?.message ?? e.message ?? String(err);
  return new CliError(`cannot reach the gateway at ${url} (${why})`);
}

export function refusal(status: number, text: string): CliError {
  let parsed: unknown = undefined;
  try {
    parsed = JSON.parse(text);
  } catch {
    // Not JSON: a proxy's page; show its start.
  }
  const body = ErrorBody.safeParse(parsed);
  if (body.success) return new CliError(`${body.data.error.message} (${status} ${body.data.error.code})`, 1, status);
  return new CliError(`the gateway answered ${status}${text ? `: ${text.slice(0, 200)}` : ""}`, 1, status);
}

export function createGateway(target: Target): Gateway {
  const headers = (extra: Record<string, string> = {}) => ({ ...(target.token ? { authorization: `Bearer ${target.token}` } : {}), ...extra });
  const urlOf = (path: string, query?: Record<string, string | undefined>) => {
    const u = new URL(`${target.url}${path}`);
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) u.searchParams.set(k, v);
    return u;
  };
  const call = async (method: "GET" | "POST", u: URL, extra: Record<string, string>, body?: string) => {
    let res;
    try {
      res = await request(u, { method, headers: headers(extra), ...(body !== undefined ? { body } : {}) });
    } catch (err) {
      throw unreachable(target.url, err);
    }
    const text = await res.body.text();
    if (res.statusCode >= 400) throw refusal(res.statusCode, text);
    try {
      return JSON.parse(text) as unknown;
    } catch {
      throw new CliError(`the gateway answered ${res.statusCode} with something that is not JSON: ${text.slice(0, 200)}`);
    }
  };
  const parse = <S extends z.ZodType>(path: string, schema: S, value: unknown): z.infer<S> => {
    const r = schema.safeParse(value);
    if (!r.success) throw new CliError(`unexpected answer from ${path}: ${r.error.issues.slice(0, 3).map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`);
    return r.data;
  };
  return {
    url: target.url,
    token: target.token,
    async get(path, schema, query) {
      return parse(path, schema, await call("GET", urlOf(path, query), {}));
    },
    async post(path, schema, opts = {}) {
      const extra: Record<string, string> = opts.idempotencyKey ? { "idempotency-key": opts.idempotencyKey } : {};
      if (opts.body !== undefined) extra["content-type"] = "application/json";
      return parse(path, schema, await call("POST", urlOf(path, opts.query), extra, opts.body !== undefined ? JSON.stringify(opts.body) : undefined));
    },
    async stream(path, extra = {}) {
      let res;
      try {
        res = await request(urlOf(path), { method: "GET", headers: headers({ accept: "text/event-stream", ...extra }) });
      } catch (err) {
        throw unreachable(target.url, err);
      }
      if (res.statusCode >= 400) throw refusal(res.statusCode, await res.body.text());
      return res.body;
    },
  };
}

export interface SseMessage {
  event: string;
  data: string;
  id: string | undefined;
}

/** Server-sent events from a byte stream (https://html.spec.whatwg.org/multipage/server-sent-events.html), comments skipped. */
export async function* sseMessages(body: AsyncIterable<Buffer> | Iterable<Buffer>): AsyncGenerator<SseMessage> {
  let buffer = "";
  let event = "message";
  let data: string[] = [];
  let id: string | undefined;
  for await (const chunk of body) {
    buffer += chunk.toString("utf8");
    let nl: number;
    while ((nl = buffer.search(/\r?\n/)) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(buffer[nl] === "\r" ? nl + 2 : nl + 1);
      if (line === "") {
        if (data.length > 0) yield { event, data: data.join("\n"), id };
        event = "message";
        data = [];
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
      else if (field === "id") id = value;
    }
  }
}

/** A fresh Idempotency-Key per invocation: a retried request of the same invocation is one command. */
export function idempotencyKey(prefix: string): string {
  return `${prefix}-${randomBytes(8).toString("hex")}`;
}
