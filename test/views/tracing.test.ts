import { createServer, type Server } from "node:http";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { subjects } from "@molt/contracts";
import { createEventStore, type EventStore } from "@molt/event-store";
import { freePort, startNatsServer, startSystem, waitFor, type SecureNatsServer, type System } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { COMPONENT, history, operatorApi, teardown } from "../roll-engine/harness.js";

/**
 * One deployment, one trace: every process is started with OTEL_EXPORTER_OTLP_ENDPOINT pointing
 * at a tiny OTLP/HTTP receiver (JSON) started here, and the spans it collects must hold one trace
 * id with spans from every hop: gateway → action → allocator → agent → upgrade client (its own
 * process, a real host agent's) → feedback → projector.
 */
const OPERATOR = "operator-token-tracing-01";
const HOST = "web-1.trace.example.com";
const HOPS = ["gateway", "action", "allocator", "agent", "upgrade-client", "feedback", "projector"];

interface ReceivedSpan {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  path: string;
}
const spans: ReceivedSpan[] = [];
let receiver: Server;
let nats: SecureNatsServer;
let nc: NatsConnection;
let store: EventStore;
let system: System;
let dataDir: string;
const op = operatorApi(() => system, OPERATOR);

type AnyValue = { stringValue?: string };
interface ExportRequest {
  resourceSpans?: Array<{
    resource?: { attributes?: Array<{ key: string; value: AnyValue }> };
    scopeSpans?: Array<{ spans?: Array<{ traceId: string; spanId: string; parentSpanId?: string; name: string; attributes?: Array<{ key: string; value: AnyValue }> }> }>;
  }>;
}

/** OTLP/HTTP with JSON bodies (what @opentelemetry/exporter-trace-otlp-http posts to /v1/traces). */
async function startReceiver(): Promise<string> {
  const port = await freePort();
  receiver = createServer((req, res) => {
    let body = "";
    req.on("data", (d: Buffer) => (body += d.toString()));
    req.on("end", () => {
      if (req.url !== "/v1/traces" || !(req.headers["content-type"] ?? "").includes("json")) {
        res.writeHead(415).end();
        return;
      }
      const parsed = JSON.parse(body) as ExportRequest;
      for (const rs of parsed.resourceSpans ?? []) {
        const service = rs.resource?.attributes?.find((a) => a.key === "service.name")?.value.stringValue ?? "?";
        for (const ss of rs.scopeSpans ?? [])
          for (const s of ss.spans ?? [])
            spans.push({ service, traceId: s.traceId, spanId: s.spanId, parentSpanId: s.parentSpanId ?? "", name: s.name, path: s.attributes?.find((a) => a.key === "url.path")?.value.stringValue ?? "" });
      }
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((r) => receiver.listen(port, "127.0.0.1", () => r()));
  return `http://127.0.0.1:${port}`;
}

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "molt-trace-"));
  const endpoint = await startReceiver();
  nats = await startNatsServer({ secure: true });
  nc = await nats.bus.connect("admin");
  store = createEventStore(nc);
  system = await startSystem({
    nats,
    dataDir,
    tokens: { [OPERATOR]: { actor: "otto", role: "operator" } },
    agents: [{ hostId: HOST, seed: `${COMPONENT}@1.0.0` }],
    env: { OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_BSP_SCHEDULE_DELAY: "200", MOLT_HEARTBEAT_MS: "500", MOLT_POLL_MS: "1000", MOLT_RETRY_DELAY_MS: "100" },
  });
  await waitFor("the host registered", async () => ((await store.readLast(subjects.hostMeta(HOST))) ? true : undefined), { timeoutMs: 60_000 });
  await op.upload("2.0.0");
}, 180_000);

afterAll(async () => {
  await teardown({ extra: [], system, nc, nats, dataDir });
  await new Promise<void>((r) => (receiver ? receiver.close(() => r()) : r()));
});

describe("traces", () => {
  it("[views] one deployment is one trace: the OTLP receiver holds spans of one trace id from gateway, action, allocator, agent, upgrade client, feedback and projector", async () => {
    const id = await op.deploy({ version: "2.0.0", hosts: [HOST] }, "trace-1");
    await history(store).waitFor(id, "DeploymentCompleted", 90_000);
    // The trace of the deployment request: the gateway's span of POST /v1/deployments is its root.
    const root = await waitFor("the gateway's span of the deployment request", () =>
      spans.find((s) => s.service === "gateway" && s.name.startsWith("POST") && s.path === "/v1/deployments" && s.parentSpanId === ""));
    const servicesOf = () => new Set(spans.filter((s) => s.traceId === root.traceId).map((s) => s.service));
    await waitFor(`spans of every hop in trace ${root.traceId}`, () => (HOPS.every((h) => servicesOf().has(h)) ? true : undefined), { timeoutMs: 30_000 }).catch(() => undefined);
    expect([...servicesOf()].sort(), JSON.stringify(spans.filter((s) => s.traceId === root.traceId).map((s) => `${s.service}: ${s.name}`))).toEqual(expect.arrayContaining(HOPS));
    // Linked, not just sharing an id: every span of the trace but the root has its parent in it.
    // Each process exports its ended spans in its own batches, so a child can reach the receiver
    // before its parent from another process (the projector's span of the last commit before the
    // allocator's that appended it): wait for the parents, then assert.
    const orphans = () => {
      const trace = spans.filter((s) => s.traceId === root.traceId);
      const ids = new Set(trace.map((s) => s.spanId));
      return trace.filter((s) => s !== root && !ids.has(s.parentSpanId)).map((s) => `${s.service}: ${s.name}`);
    };
    await waitFor("every span's parent in the trace", () => (orphans().length === 0 ? true : undefined), { timeoutMs: 30_000 }).catch(() => undefined);
    expect(orphans()).toEqual([]);
  }, 150_000);
});
