import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { constants, PerformanceObserver, type PerformanceEntry } from "node:perf_hooks";
import { getHeapStatistics } from "node:v8";
import { collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { Logger } from "pino";
import { z } from "zod";
import type { FastifyPluginCallback } from "fastify";
import fp from "fastify-plugin";

/**
 * One Prometheus registry per process: the runtime's own metrics (process CPU, memory, event-loop
 * lag, GC) labelled with the service name; a service adds its own to the same registry.
 */
export function createMetrics(service: string): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  collectDefaultMetrics({ register: registry, prefix: "molt_" });
  // prom-client also names three gauges `*_total`, a counter's suffix, which `promtool check
  // metrics` refuses; `molt_nodejs_active_resources` (by type) says the same, so they go.
  for (const name of ["active_handles_total", "active_requests_total", "active_resources_total"]) registry.removeSingleMetric(`molt_nodejs_${name}`);
  watchMajorGcs();
  new Gauge({
    name: "molt_nodejs_heap_live_bytes",
    help: "V8 heap in use just after the last full (mark-compact) collection: the live set, without the garbage heap_size_used also counts; 0 before the first",
    registers: [registry],
    collect() {
      this.set(liveAfterMajorGc);
    },
  });
  return registry;
}

/**
 * The heap just after each full collection, for `molt_nodejs_heap_live_bytes`. `heap_size_used`
 * includes garbage V8 has not collected yet, and V8 lets it pile up to its next collection's limit:
 * a busy process's heap_size_used and RSS climb for minutes with a live set that is flat (the
 * simulator of 10,000 hosts: RSS 474 -> 669 MiB in 3 minutes, live set 135 -> 132 MiB in two heap
 * snapshots 110 s apart). A leak shows here as a rising floor. One observer per process.
 */
let liveAfterMajorGc = 0;
let gcObserver: PerformanceObserver | undefined;
function watchMajorGcs(): void {
  if (gcObserver) return;
  gcObserver = new PerformanceObserver((list) => {
    // A gc entry's `detail` ({ kind, flags }) is missing from @types/node 20's PerformanceEntry.
    const major = list.getEntries().some((e) => (e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR);
    if (major) liveAfterMajorGc = getHeapStatistics().used_heap_size;
  });
  gcObserver.observe({ entryTypes: ["gc"] });
}

/**
 * `GET /metrics` in Prometheus' text format, and a request-duration histogram by route (the route
 * pattern, never the raw URL, so ids do not explode the label set). Unauthenticated, as scrapers
 * are: it carries counts and timings, no ids or payloads.
 */
const metricsPlugin: FastifyPluginCallback<{ registry: Registry }> = (app, { registry }, done) => {
  const requests = new Histogram({
    name: "molt_http_request_duration_seconds",
    help: "HTTP requests by method, route pattern and status",
    labelNames: ["method", "route", "status"] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  app.addHook("onResponse", (req, reply, done) => {
    const route = req.routeOptions.url ?? "unmatched";
    if (route !== "/metrics") requests.observe({ method: req.method, route, status: String(reply.statusCode) }, reply.elapsedTime / 1000);
    done();
  });
  app.get("/metrics", { config: { auth: false }, schema: { hide: true } }, async (_req, reply) => {
    const text = await registry.metrics();
    return reply.type(registry.contentType).send(text);
  });
  done();
};

/** Registered on the app itself (not encapsulated), so the hook sees every route. */
export const metricsRoutes = fp(metricsPlugin, { name: "molt-metrics" });

/** Env of a process without an HTTP API (allocator, feedback, agent): where it serves `/metrics`, if anywhere. */
export const metricsEnv = {
  MOLT_METRICS_HOST: z.string().min(1).default("127.0.0.1"),
  /** Unset: no metrics endpoint. 0: any free port (logged). */
  MOLT_METRICS_PORT: z.coerce.number().int().min(0).max(65535).optional(),
};

export interface MetricsServer {
  readonly url: string;
  close(): Promise<void>;
}

/**
 * `GET /metrics` on its own small node:http server, for a process that has no HTTP API: the
 * registry is read at scrape time only, so nothing runs between scrapes.
 */
export async function serveMetrics(registry: Registry, opts: { host: string; port: number }): Promise<MetricsServer> {
  const server = createServer((req, res) => {
    if (req.method !== "GET" || req.url?.split("?")[0] !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain" }).end("only GET /metrics here\n");
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { "content-type": registry.contentType }).end(text),
      (err: unknown) => res.writeHead(500, { "content-type": "text/plain" }).end(`metrics failed: ${err instanceof Error ? err.message : String(err)}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  return {
    url: `http://${opts.host.includes(":") ? `[${opts.host}]` : opts.host}:${address.port}/metrics`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Metrics from the environment: a registry, served when MOLT_METRICS_PORT is set (the url is logged for port 0). */
export async function metricsFromEnv(
  service: string,
  config: { MOLT_METRICS_HOST: string; MOLT_METRICS_PORT?: number | undefined },
  logger: Logger,
): Promise<{ registry: Registry; close: () => Promise<void> }> {
  const registry = createMetrics(service);
  if (config.MOLT_METRICS_PORT === undefined) return { registry, close: () => Promise.resolve() };
  const server = await serveMetrics(registry, { host: config.MOLT_METRICS_HOST, port: config.MOLT_METRICS_PORT });
  logger.info({ url: server.url }, "metrics listening");
  return { registry, close: () => server.close() };
}

/** The `outcome` label of each event that ends a task: one list for every service that counts them. */
export const TASK_END_OUTCOME: Readonly<Record<string, string>> = {
  TaskSucceeded: "succeeded",
  TaskFailed: "failed",
  TaskRejected: "rejected",
  TaskTimedOut: "timed-out",
  TaskCancelled: "cancelled",
};

/** Upgrade step durations by step and outcome, with buckets from 10 ms to 15 min: the agent's and the projector's. */
export function stepDurations(registry: Registry, name: string, help: string) {
  return new Histogram({ name, help, labelNames: ["step", "outcome"] as const, buckets: [0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900], registers: [registry] });
}
