import { subjects, type MoltEvent } from "@molt/contracts";
import { evolveDeployment, initialDeploymentState, type DeploymentEventBody } from "@molt/domain";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { testDatabases } from "../testing.js";
import { deploymentsProjection } from "./projection.js";

const PLATFORM = "linux-amd64";
const PKG = { platform: PLATFORM, sha256: "a".repeat(64), size: 1024, url: "https://repo.example.com/p.tar.gz" };
const host = fc.constantFrom("h1", "h2", "h3", "h4");
const planId = fc.constantFrom("p1", "p2");
const index = fc.integer({ min: 0, max: 3 });
const key = fc.option(fc.constantFrom("k1", "k2"), { nil: undefined });

/** Any deployment event body after the request, in any order: the decider's guards are not assumed. */
const later = (deploymentId: string): fc.Arbitrary<DeploymentEventBody> =>
  fc.oneof(
    fc.record({ planId, part: fc.integer({ min: 0, max: 2 }), skipped: fc.array(host, { maxLength: 2 }) }).map(({ planId, part, skipped }) => ({
      type: "PlanPartRecorded" as const,
      data: { deploymentId, planId, part, batches: [], skipped: skipped.map((hostId) => ({ hostId, reason: "at target" })) },
    })),
    fc.record({ planId, batches: fc.integer({ min: 1, max: 3 }), skipped: fc.nat(3) }).map(({ planId, batches, skipped }) => ({
      type: "DeploymentPlanned" as const,
      data: {
        deploymentId,
        planId,
        parts: 1,
        packages: { [PLATFORM]: PKG },
        batches: Array.from({ length: batches }, (_, i) => ({ index: i, kind: "batch" as const, size: 1 })),
        skipped,
      },
    })),
    index.map((i) => ({ type: "BatchStarted" as const, data: { deploymentId, index: i } })),
    index.map((i) => ({ type: "BatchCompleted" as const, data: { deploymentId, index: i, succeeded: 1, failed: 0 } })),
    fc.record({ reason: fc.option(fc.constantFrom("by hand", "lunch"), { nil: undefined }), commandKey: key }).map((d) => ({
      type: "DeploymentPaused" as const,
      data: { deploymentId, ...d },
    })),
    key.map((commandKey) => ({ type: "DeploymentResumed" as const, data: { deploymentId, commandKey } })),
    fc.record({ attempt: fc.integer({ min: 2, max: 4 }), index: fc.integer({ min: 1, max: 5 }) }).map((d) => ({
      type: "DeploymentRetried" as const,
      data: { deploymentId, ...d, hosts: 1 },
    })),
    fc.nat(5).map((failed) => ({ type: "DeploymentBraked" as const, data: { deploymentId, failed, finished: 5, threshold: 0.2 } })),
    index.map((i) => ({ type: "CanaryAwaitingApproval" as const, data: { deploymentId, index: i } })),
    key.map((commandKey) => ({ type: "CanaryApproved" as const, data: { deploymentId, commandKey } })),
    fc.constant({ type: "DeploymentCancelled" as const, data: { deploymentId, reason: "stop" } }),
    fc.constant({ type: "DeploymentCompleted" as const, data: { deploymentId, succeeded: 1, failed: 0, skipped: 0 } }),
    fc.constant({ type: "DeploymentFailed" as const, data: { deploymentId, reason: "brake", succeeded: 0, failed: 1 } }),
  );

const request = (deploymentId: string): DeploymentEventBody => ({
  type: "DeploymentRequested",
  data: { deploymentId, component: "metrics-agent", version: "2.1.0", hosts: ["h1", "h2"], idempotencyKey: null, requestHash: "b".repeat(64), taskTimeoutMs: 60_000 },
});

let runs = 0;
describe.each(testDatabases())("deployments projection on %s", (_kind, template) => {
  it("[views] a deployment's state, pause, plan skips, approval and brake are the domain's evolve, for any event sequence", async () => {
    const db = await template().fresh();
    const projection = deploymentsProjection();
    await db.exec("CREATE TABLE IF NOT EXISTS schema_migrations (name text, version integer)");
    for (const sql of projection.migrations) await db.exec(sql);
    const prefix = `${Date.now().toString(36)}-${_kind}`;
    let seq = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(later("placeholder"), { maxLength: 14 }),
        async (tail) => {
          const id = `d-${prefix}-${++runs}`;
          const events = [request(id), ...tail.map((e) => ({ ...e, data: { ...e.data, deploymentId: id } }) as DeploymentEventBody)];
          for (const [i, e] of events.entries()) {
            const event = { ...e, id: `${id}/${i}`, metadata: { occurredAt: new Date(Date.UTC(2025, 2, 1, 10, 0, i)).toISOString(), actor: "alice", correlationId: "c" } } as MoltEvent;
            await db.transaction((tx) =>
              projection.apply(tx, { seq: ++seq, subject: subjects.deployment(id), commit: { commitId: `${id}#${i}`, events: [event] }, hostId: null, component: null }),
            );
          }
          const folded = events.reduce(evolveDeployment, initialDeploymentState());
          const row = (await db.query("SELECT state, paused_from, planned, skipped, awaiting_approval, braked FROM deployments WHERE id = $1", [id])).rows[0];
          expect(row).toEqual({
            state: folded.status,
            paused_from: folded.pausedFrom,
            planned: folded.planned,
            skipped: folded.skipped,
            awaiting_approval: folded.awaitingApproval,
            braked: folded.braked,
          });
        },
      ),
      { numRuns: 100 },
    );
    await db.close();
  }, 120_000);
});
