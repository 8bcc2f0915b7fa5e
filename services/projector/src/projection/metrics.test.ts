import { describe, expect, it } from "vitest";
import { subjects, type MoltEvent } from "@molt/contracts";
import { createLogger } from "@molt/runtime";
import { metricSample, waitFor } from "@molt/testkit";
import { buildApp } from "../app.js";
import { projectorTestBed, viewerHeaders, viewerTokens as tokens } from "../testing.js";

// Its own server and stream, so the counts below are exactly this scripted rollout's.
const logger = createLogger("projector-metrics-test");
logger.level = "warn";
const bed = projectorTestBed();

const at = (ms: number) => new Date(Date.parse("2026-03-01T10:00:00.000Z") + ms).toISOString();
const meta = (ms: number) => ({ occurredAt: at(ms), actor: "test", correlationId: "c-1" });
let commits = 0;
async function append(subject: string, expectedSequence: number, events: Array<Omit<MoltEvent, "id" | "metadata">>, ms: number) {
  const commitId = `c-${++commits}`;
  const full = events.map((e, i) => ({ ...e, id: `${commitId}/${i}`, metadata: meta(ms) })) as MoltEvent[];
  return (await bed.store.append(subject, { commitId, events: full }, { expectedSequence })).seq;
}

const sample = metricSample;

describe("projector metrics", () => {
  it("[views] /metrics counts equal a scripted rollout's known outcomes: 3 succeeded, 1 failed at download", async () => {
    const app = await buildApp({ db: await bed.template.fresh(), store: bed.store, logger, tokens, retryMs: 20 });
    try {
      const deploymentId = "d-metrics";
      const hosts = ["h-1", "h-2", "h-3", "h-4"];
      await append(subjects.deployment(deploymentId), 0, [
        {
          type: "DeploymentRequested",
          data: { deploymentId, component: "metrics-agent", version: "2.0.0", hosts, idempotencyKey: "k", requestHash: "a".repeat(64), taskTimeoutMs: 60_000 },
        },
      ], 0);
      let last = 0;
      for (const [i, hostId] of hosts.entries()) {
        const taskId = `t-${hostId}`;
        const fail = i === 3;
        const subject = subjects.slot(hostId, "metrics-agent");
        let seq = await append(subject, 0, [
          { type: "TaskAllocated", data: { taskId, deploymentId, hostId, component: "metrics-agent", version: "2.0.0", fromVersion: "1.0.0", attempt: 1, deadline: at(60_000) } },
        ], 10);
        seq = await append(subject, seq, [
          { type: "TaskAccepted", data: { taskId, seq: 1, at: at(20) } },
          { type: "TaskStepStarted", data: { taskId, seq: 2, step: "download", at: at(30) } },
          fail
            ? { type: "TaskStepFailed", data: { taskId, seq: 3, step: "download", at: at(1_530), durationMs: 1_500, error: "sha256 mismatch" } }
            : { type: "TaskStepSucceeded", data: { taskId, seq: 3, step: "download", at: at(230), durationMs: 200 } },
          fail
            ? { type: "TaskFailed", data: { taskId, seq: 4, at: at(1_600), reason: "download: sha256 mismatch", step: "download" } }
            : { type: "TaskSucceeded", data: { taskId, seq: 4, at: at(300), version: "2.0.0" } },
        ], 20);
        last = seq;
      }
      await waitFor("the views to hold the rollout", async () => ((await app.inject({ url: "/v1/projector/status", headers: viewerHeaders })).json<{ checkpoint: number }>().checkpoint >= last ? true : undefined));

      const res = await app.inject({ url: "/metrics" });
      expect(res.statusCode).toBe(200);
      expect(res.headers["content-type"]).toMatch(/^text\/plain; version=0\.0\.4/);
      const text = res.body;
      expect(sample(text, "molt_tasks", { state: "succeeded" })).toBe(3);
      expect(sample(text, "molt_tasks", { state: "failed" })).toBe(1);
      expect(sample(text, "molt_tasks", { state: "running" })).toBe(0);
      expect(sample(text, "molt_tasks_finished_total", { outcome: "succeeded" })).toBe(3);
      expect(sample(text, "molt_tasks_finished_total", { outcome: "failed" })).toBe(1);
      expect(sample(text, "molt_task_step_duration_seconds_count", { step: "download", outcome: "succeeded" })).toBe(3);
      expect(sample(text, "molt_task_step_duration_seconds_sum", { step: "download", outcome: "succeeded" })).toBeCloseTo(0.6);
      expect(sample(text, "molt_task_step_duration_seconds_count", { step: "download", outcome: "failed" })).toBe(1);
      expect(sample(text, "molt_deployments", { state: "requested" })).toBe(1);
      expect(sample(text, "molt_projection_lag_events")).toBe(0);
      expect(sample(text, "molt_projection_dead_letters")).toBe(0);
      // The runtime's own: process metrics and request durations by route pattern (no ids).
      expect(sample(text, "molt_process_resident_memory_bytes")).toBeGreaterThan(0);
      expect(text).toContain('route="/v1/projector/status"');
    } finally {
      await app.close();
    }
  });
});
