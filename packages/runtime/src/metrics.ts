import { collectDefaultMetrics, Histogram, Registry } from "prom-client";
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
  return registry;
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
  app.get("/metrics", { config: { auth: false } }, async (_req, reply) => {
    const text = await registry.metrics();
    return reply.type(registry.contentType).send(text);
  });
  done();
};

/** Registered on the app itself (not encapsulated), so the hook sees every route. */
export const metricsRoutes = fp(metricsPlugin, { name: "molt-metrics" });
