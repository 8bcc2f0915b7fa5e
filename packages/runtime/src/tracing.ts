import type { FastifyInstance } from "fastify";
import fp from "fastify-plugin";
import { context, INVALID_SPAN_CONTEXT, propagation, trace, SpanKind, SpanStatusCode, type Context, type Span, type TextMapGetter } from "@opentelemetry/api";

/**
 * Tracing with the OpenTelemetry API only. Without an SDK (OTEL_EXPORTER_OTLP_ENDPOINT unset)
 * every call here is the API's no-op: no span is allocated and no header written. With one, W3C
 * trace context travels in HTTP headers, NATS headers and the event envelope's
 * `metadata.traceparent`, so one deployment is one trace across every process.
 */
/**
 * The tracer, looked up at each use: the SDK may load the API's other build (CommonJS next to this
 * ESM), and only the global registry, not a tracer taken before the SDK started, sees its provider.
 */
export const tracer = () => trace.getTracer("molt");

/** Whether this process traces (OTEL_EXPORTER_OTLP_ENDPOINT set when it started): hot paths skip span work otherwise. */
export const tracingEnabled = Boolean(process.env["OTEL_EXPORTER_OTLP_ENDPOINT"]);

/**
 * Starts the SDK in a composition root when OTEL_EXPORTER_OTLP_ENDPOINT is set (OTLP over
 * HTTP/JSON, batched); returns the flush-and-stop for shutdown. Loaded only then, so a process
 * without tracing never loads the SDK.
 */
export async function startTracing(service: string, env: NodeJS.ProcessEnv = process.env): Promise<() => Promise<void>> {
  if (!env["OTEL_EXPORTER_OTLP_ENDPOINT"]) return () => Promise.resolve();
  const sdk = await import("./tracing-sdk.js");
  return sdk.startSdk(service);
}

/** A context whose parent is the given traceparent (or the active one when there is none). */
export function contextFrom(traceparent: string | undefined): Context {
  return traceparent ? propagation.extract(context.active(), { traceparent }) : context.active();
}

/** Writes the active trace context into a header setter (HTTP headers, NATS headers). */
export function injectTrace(set: (key: string, value: string) => void, ctx: Context = context.active()): void {
  if (!trace.getSpanContext(ctx)) return;
  propagation.inject(ctx, undefined, { set: (_c, k, v) => set(k, v) });
}

const natsGetter: TextMapGetter<{ get(k: string): string } | undefined> = {
  keys: () => ["traceparent", "tracestate"],
  get: (h, k) => h?.get(k) || undefined,
};

/** The context a NATS message carries in its headers (the active one when it has none). */
export function contextFromNats(headers: { get(k: string): string } | undefined): Context {
  return headers ? propagation.extract(context.active(), headers, natsGetter) : context.active();
}

/**
 * Runs `fn` in a span (a child of `parent`), ending it when `fn` settles and recording a throw.
 * Not tracing, `fn` runs as it is (with an invalid span): no span, no context switch.
 */
export async function inSpan<T>(name: string, parent: Context, fn: (span: Span) => Promise<T> | T, attributes: Record<string, string | number> = {}, kind: SpanKind = SpanKind.INTERNAL): Promise<T> {
  if (!tracingEnabled) return fn(trace.wrapSpanContext(INVALID_SPAN_CONTEXT));
  return tracer().startActiveSpan(name, { kind, attributes }, parent, async (span) => {
    try {
      return await fn(span);
    } catch (err) {
      span.recordException(err as Error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
      throw err;
    } finally {
      span.end();
    }
  });
}

export { context, propagation, trace, SpanKind, type Context, type Span };

declare module "fastify" {
  interface FastifyRequest {
    traceSpan?: Span;
  }
}

/**
 * A SERVER span per request, the child of the caller's `traceparent` header; the handler runs in
 * its context, so what it appends or calls continues the trace.
 */
export const requestTracing = fp(
  (app: FastifyInstance, _opts: object, done: () => void) => {
    traceRequests(app);
    done();
  },
  { name: "molt-request-tracing" },
);

function traceRequests(app: FastifyInstance): void {
  app.addHook("onRequest", (req, _reply, done) => {
    const parent = propagation.extract(context.active(), req.headers);
    const span = tracer().startSpan(`${req.method} ${req.routeOptions.url ?? "unmatched"}`, { kind: SpanKind.SERVER, attributes: { "http.request.method": req.method, "url.path": req.url.split("?")[0] ?? "" } }, parent);
    req.traceSpan = span;
    context.with(trace.setSpan(parent, span), done);
  });
  app.addHook("onResponse", (req, reply, done) => {
    req.traceSpan?.setAttribute("http.response.status_code", reply.statusCode);
    if (reply.statusCode >= 500) req.traceSpan?.setStatus({ code: SpanStatusCode.ERROR });
    req.traceSpan?.end();
    done();
  });
}
