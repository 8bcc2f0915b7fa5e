import { subjects, type MoltEvent } from "@molt/contracts";
import type { Db } from "@molt/db";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { ProjectedCommit } from "../projection/projection.js";
import { testDatabases } from "../testing.js";
import { deploymentsProjection } from "./projection.js";

const PKG = { platform: "linux-amd64", sha256: "a".repeat(64), size: 1024, url: "https://repo.example.com/p.tar.gz" };
const STEPS = ["begin", "download", "verify"] as const;
const at = (ms: number) => new Date(Date.UTC(2026, 11, 6, 10, 0, 0, ms)).toISOString();

/**
 * One event, drawn from small domains so that sequences collide the way replays and bad reports
 * do: duplicate allocations, step seqs reused, ends without starts, two open rows of one step,
 * outcomes after outcomes, touches of deployments that do or do not exist.
 */
const anEvent = fc
    .record({
      kind: fc.constantFrom(
        "allocated",
        "dispatched",
        "accepted",
        "stepStarted",
        "stepSucceeded",
        "stepFailed",
        "rolledBack",
        "succeeded",
        "failed",
        "rejected",
        "timedOut",
        "cancelled",
        "requested",
        "touched",
      ),
      task: fc.integer({ min: 0, max: 2 }),
      seq: fc.integer({ min: 1, max: 6 }),
      step: fc.constantFrom(...STEPS),
      ms: fc.integer({ min: 0, max: 100_000 }),
      durationMs: fc.oneof(fc.integer({ min: 0, max: 5_000 }), fc.double({ min: 0, max: 5_000, noNaN: true })),
      text: fc.option(fc.string({ maxLength: 8 }), { nil: undefined }),
      attempt: fc.integer({ min: 1, max: 2 }),
    });

/** The drawn event as a MoltEvent of the property run `run` (ids of its own: runs share the databases). */
function toEvent(r: typeof anEvent extends fc.Arbitrary<infer T> ? T : never, run: number): MoltEvent {
      const taskId = `r${run}-t${r.task}`;
      const deploymentId = `r${run}-d`;
      const data = ((): { type: MoltEvent["type"]; data: unknown } => {
        const base = { taskId, seq: r.seq, at: at(r.ms) };
        switch (r.kind) {
          case "allocated":
            return {
              type: "TaskAllocated",
              data: { taskId, deploymentId, hostId: `h${r.task}`, component: "c", version: "2.0.0", fromVersion: r.text ?? null, attempt: r.attempt, deadline: at(r.ms + 9), package: PKG },
            };
          case "dispatched":
            return { type: "TaskDispatched", data: { taskId, revision: 1 } };
          case "accepted":
            return { type: "TaskAccepted", data: base };
          case "stepStarted":
            return { type: "TaskStepStarted", data: { ...base, step: r.step } };
          case "stepSucceeded":
            return { type: "TaskStepSucceeded", data: { ...base, step: r.step, durationMs: r.durationMs, ...(r.text === undefined ? {} : { detail: r.text }) } };
          case "stepFailed":
            return { type: "TaskStepFailed", data: { ...base, step: r.step, durationMs: r.durationMs, error: "e", ...(r.text === undefined ? {} : { logTail: r.text }) } };
          case "rolledBack":
            return { type: "TaskRolledBack", data: base };
          case "succeeded":
            return { type: "TaskSucceeded", data: { ...base, version: "2.0.0" } };
          case "failed":
            return { type: "TaskFailed", data: { ...base, reason: "boom", ...(r.text === undefined ? {} : { step: r.step }) } };
          case "rejected":
            return { type: "TaskRejected", data: { ...base, reason: "busy" } };
          case "timedOut":
            return { type: "TaskTimedOut", data: { taskId, deadline: at(r.ms) } };
          case "cancelled":
            return { type: "TaskCancelled", data: { taskId, reason: "stop" } };
          case "requested":
            return {
              type: "DeploymentRequested",
              data: { deploymentId, component: "c", version: "2.0.0", hosts: ["h0"], selector: {}, idempotencyKey: null, requestHash: "b".repeat(64), taskTimeoutMs: 60_000 },
            };
          case "touched":
            return { type: "HostOutcomeRecorded", data: { deploymentId, hostId: `h${r.task}`, attempt: 1, outcome: "succeeded" } };
        }
      })();
      return { id: `${r.kind}-${r.ms}`, ...data, metadata: { occurredAt: at(r.ms + 1), actor: "host:h", correlationId: "c" } } as MoltEvent;
}

/** Commits of 1–3 events, then where the runs begin (the first cut: what is already in the database before the first run). */
const aScenario = fc
    .array(fc.array(anEvent, { minLength: 1, maxLength: 3 }), { minLength: 1, maxLength: 30 })
    .chain((commits) => fc.tuple(fc.constant(commits), fc.uniqueArray(fc.integer({ min: 0, max: commits.length }), { maxLength: 6 })));

const rowsOf = async (db: Db, run: number) => {
  const like = `r${run}-%`;
  const q = async (sql: string) => (await db.query(sql, [like])).rows;
  return {
    tasks: await q(`SELECT * FROM tasks WHERE task_id LIKE $1 ORDER BY task_id`),
    steps: await q(`SELECT * FROM task_steps WHERE task_id LIKE $1 ORDER BY task_id, seq`),
    deployments: await q(`SELECT * FROM deployments WHERE id LIKE $1 ORDER BY id`),
  };
};

describe.each(testDatabases())("task rows folded per run on %s", (_kind, template) => {
  it("[views] a run folded in memory leaves the same rows as applying its commits one by one", async () => {
    const [one, folded] = [await template().fresh(), await template().fresh()];
    const projection = deploymentsProjection();
    for (const db of [one, folded]) for (const sql of projection.migrations) await db.exec(sql);
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        aScenario,
        async ([drawn, cuts]) => {
          const r = ++run;
          const events = drawn.map((evs) => evs.map((e) => toEvent(e, r)));
          const commits: ProjectedCommit[] = events.map((evs, i) => ({
            seq: i + 1,
            subject: subjects.slot(`h-${r}`, "c"),
            commit: { commitId: `r${r}#${i}`, events: evs },
            hostId: `h-${r}`,
            component: "c",
          }));
          // A commit the database refuses (e.g. a duration too small for float8 / 1000) is
          // dead-lettered: its rows are not there, the next commits are. A run holding one
          // fails whole and is applied commit by commit (the follower's fallback).
          const each = async (db: Db, cs: readonly ProjectedCommit[]) => {
            for (const c of cs) await db.transaction((tx) => projection.apply(tx, c)).catch(() => undefined);
          };
          await each(one, commits);
          const bounds = [...new Set([0, ...cuts, commits.length])].sort((a, b) => a - b);
          // Before the first cut commit by commit (rows already there when the runs read), then runs.
          await each(folded, commits.slice(0, bounds[1]));
          for (let i = 1; i + 1 < bounds.length; i++) {
            const runOf = commits.slice(bounds[i], bounds[i + 1]);
            await folded.transaction((tx) => projection.applyRun!(tx, runOf)).catch(() => each(folded, runOf));
          }
          expect(await rowsOf(folded, r)).toEqual(await rowsOf(one, r));
        },
      ),
      { numRuns: 60 },
    );
  }, 120_000);
});
