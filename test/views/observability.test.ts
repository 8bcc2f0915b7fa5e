import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { subjects } from "@molt/contracts";
import type { EventStore } from "@molt/event-store";
import { metricSample, promtoolCheck, waitFor, type System } from "@molt/testkit";
import { Validator } from "@seriousme/openapi-schema-validator";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { COMPONENT, history, operatorApi, simIds, startScenario, type Scenario } from "../roll-engine/harness.js";

/**
 * Observability of the whole system. Every process's /metrics after a scripted rollout whose outcomes are known: 8 simulated hosts,
 * two of which fail their download. The counters must equal those outcomes, and every exposition
 * must pass `promtool check metrics`.
 */
const OPERATOR = "operator-token-metrics-001";
const HOSTS = simIds("sim-", 8);
const FAILING = ["sim-003", "sim-006"];
const SUCCEEDED = HOSTS.length - FAILING.length;

let bed: Scenario;
let store: EventStore;
let system: System;
let faultDir: string;
const op = operatorApi(() => system, OPERATOR);

async function scrape(url: string): Promise<string> {
  const res = await fetch(url);
  expect(res.status, url).toBe(200);
  expect(res.headers.get("content-type"), url).toMatch(/^text\/plain; version=0\.0\.4/);
  return res.text();
}

/** Waits until every expected sample of one process's /metrics has its value (counters are updated a moment after the events). */
async function expectSamples(name: string, expected: Array<[string, Record<string, string>, number]>): Promise<string> {
  let text = "";
  const wrong = () => expected.filter(([metric, labels, value]) => metricSample(text, metric, labels) !== value);
  await waitFor(`${name}'s counters equal the rollout's outcomes`, async () => {
    text = await scrape(system.metricsUrls[name]!);
    return wrong().length === 0 ? true : undefined;
  }, { timeoutMs: 20_000 }).catch(() => undefined);
  for (const [metric, labels, value] of expected) expect(metricSample(text, metric, labels), `${name} ${metric}${JSON.stringify(labels)}`).toBe(value);
  return text;
}

beforeAll(async () => {
  faultDir = await mkdtemp(join(tmpdir(), "molt-metrics-fault-"));
  const faultFile = join(faultDir, "fault.json");
  await writeFile(faultFile, JSON.stringify({ hosts: FAILING, step: "download", message: "injected: mirror down" }));
  bed = await startScenario({
    name: "metrics",
    operator: OPERATOR,
    prefix: "sim-",
    hosts: HOSTS,
    allocatorReplicas: 1,
    stepDelayMs: 20,
    env: { MOLT_HEARTBEAT_MS: "500", MOLT_POLL_MS: "1000", MOLT_RETRY_DELAY_MS: "100", MOLT_SIM_FAULT_FILE: faultFile },
  });
  system = bed.system;
  store = bed.store;
  await op.upload("2.0.0");
}, 180_000);

afterAll(async () => {
  await bed?.stop([]);
  await rm(faultDir, { recursive: true, force: true });
});

describe("metrics", () => {
  it("[views] after a rollout with 2 failed downloads of 8, every process's /metrics counts exactly those outcomes and passes promtool check metrics", async () => {
    const id = await op.deploy({ version: "2.0.0", hosts: HOSTS, strategy: { maxUnavailable: { percent: 50 } } }, "metrics-1");
    const done = await history(store).waitFor(id, "DeploymentCompleted");
    expect(done.e.type === "DeploymentCompleted" && done.e.data).toMatchObject({ succeeded: SUCCEEDED, failed: FAILING.length });
    const published = (await store.read(subjects.package(COMPONENT))).flatMap((c) => c.commit.events).find((e) => e.type === "PackagePublished");
    const size = published?.type === "PackagePublished" ? published.data.size : NaN;

    // Every process in the system has a /metrics: the six HTTP services, the allocator, feedback and the agent.
    expect(Object.keys(system.metricsUrls).sort()).toEqual(["action", "agent-sim", "allocator-1", "audit", "feedback", "gateway", "package-repo", "projector", "release-events"]);

    const agent = await expectSamples("agent-sim", [
      ["molt_agent_tasks_total", { outcome: "succeeded" }, SUCCEEDED],
      ["molt_agent_tasks_total", { outcome: "failed" }, FAILING.length],
      ["molt_agent_step_duration_seconds_count", { step: "download", outcome: "succeeded" }, SUCCEEDED],
      ["molt_agent_step_duration_seconds_count", { step: "download", outcome: "failed" }, FAILING.length],
      ["molt_agent_download_bytes_total", {}, SUCCEEDED * size],
    ]);
    expect(metricSample(agent, "molt_agent_heartbeats_total", { status: "ok" })).toBeGreaterThanOrEqual(HOSTS.length);
    const feedback = await expectSamples("feedback", [
      ["molt_feedback_task_verdicts_total", { outcome: "succeeded" }, SUCCEEDED],
      ["molt_feedback_task_verdicts_total", { outcome: "failed" }, FAILING.length],
    ]);
    expect(metricSample(feedback, "molt_feedback_heartbeats_total", { status: "ok" })).toBeGreaterThanOrEqual(HOSTS.length);
    expect(metricSample(feedback, "molt_feedback_reports_total", { status: "refused" })).toBeUndefined();
    await expectSamples("allocator-1", [
      ["molt_allocator_tasks_dispatched_total", {}, HOSTS.length],
      ["molt_allocator_tasks_finished_total", { outcome: "succeeded" }, SUCCEEDED],
      ["molt_allocator_tasks_finished_total", { outcome: "failed" }, FAILING.length],
      ["molt_allocator_tasks_in_flight", {}, 0],
    ]);
    await expectSamples("projector", [
      ["molt_tasks_finished_total", { outcome: "succeeded" }, SUCCEEDED],
      ["molt_tasks_finished_total", { outcome: "failed" }, FAILING.length],
      ["molt_tasks", { state: "succeeded" }, SUCCEEDED],
      ["molt_tasks", { state: "failed" }, FAILING.length],
      ["molt_task_step_duration_seconds_count", { step: "download", outcome: "failed" }, FAILING.length],
      ["molt_deployments", { state: "completed" }, 1],
      ["molt_projection_lag_events", {}, 0],
      ["molt_projection_lag_seconds", {}, 0],
    ]);
    // The deployment was asked for through the gateway and action: their request histograms saw it.
    const gateway = await scrape(system.metricsUrls["gateway"]!);
    expect(metricSample(gateway, "molt_http_request_duration_seconds_count", { method: "POST", status: "202" })).toBeGreaterThanOrEqual(1);
    const action = await scrape(system.metricsUrls["action"]!);
    expect(metricSample(action, "molt_http_request_duration_seconds_count", { route: "/v1/deployments", method: "POST", status: "202" })).toBe(1);

    for (const [name, url] of Object.entries(system.metricsUrls)) {
      const text = await scrape(url);
      expect(metricSample(text, "molt_process_resident_memory_bytes", { service: name.replace(/-(sim|\d+)$/, "") }), name).toBeGreaterThan(0);
      expect(await promtoolCheck(text), `promtool check metrics on ${name}'s /metrics`).toBe("");
    }
  }, 120_000);

  it("[views] /docs serves the gateway's OpenAPI document, generated from the services' zod schemas, and it passes an OpenAPI validator", async () => {
    const res = await fetch(`${system.gatewayUrl}/docs/json`);
    expect(res.status).toBe(200);
    const doc = (await res.json()) as { openapi: string; paths: Record<string, Record<string, { parameters?: Array<{ name: string; in: string }> }>> };
    const result = await new Validator().validate(doc);
    expect(result.errors ?? [], JSON.stringify(result.errors)).toEqual([]);
    expect(result.valid).toBe(true);
    // Every service behind the gateway is in it, each operation where the gateway routes it.
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(["/v1/deployments", "/v1/deployments/{id}", "/v1/hosts", "/v1/tasks/{taskId}", "/v1/audit", "/v1/packages"]));
    expect(Object.keys(doc.paths["/v1/deployments"]!).sort()).toEqual(["get", "post"]);
    // From the zod schemas: the query filters of the deployment list are documented parameters.
    expect(doc.paths["/v1/deployments"]!["get"]!.parameters?.map((p) => `${p.in}:${p.name}`)).toEqual(expect.arrayContaining(["query:state", "query:cursor"]));
    // Internal endpoints are not part of the API (the release events' AsyncAPI document is, where integrators look for it).
    expect(Object.keys(doc.paths).filter((p) => !p.startsWith("/v1/"))).toEqual(["/asyncapi.json"]);
    // The page itself, served by the gateway (no CDN): Swagger UI over /docs/json.
    const page = await fetch(`${system.gatewayUrl}/docs`);
    expect(page.status).toBe(200);
    expect(await page.text()).toMatch(/swagger/i);
  });
});
