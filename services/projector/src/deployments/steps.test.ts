import { subjects, type MoltEvent } from "@molt/contracts";
import { describe, expect, it } from "vitest";
import { testDatabases } from "../testing.js";
import { deploymentsProjection } from "./projection.js";

const PKG = { platform: "linux-amd64", sha256: "a".repeat(64), size: 1024, url: "https://repo.example.com/p.tar.gz" };
const at = (s: number) => new Date(Date.UTC(2026, 11, 6, 10, 0, s)).toISOString();
const ev = (type: MoltEvent["type"], data: unknown, s: number) => ({ id: `${type}-${s}`, type, data, metadata: { occurredAt: at(s), actor: "host:h", correlationId: "c" } }) as MoltEvent;

/** A task's events, a step's start and end either in one commit (as hosts report them) or in two. */
function task(taskId: string, together: boolean): MoltEvent[][] {
  const allocated = ev("TaskAllocated", { taskId, deploymentId: "d-1", hostId: taskId, component: "c", version: "2.0.0", fromVersion: "1.0.0", attempt: 1, deadline: at(99), package: PKG }, 1);
  const accepted = ev("TaskAccepted", { taskId, seq: 1, at: at(2) }, 2);
  const pairs: Array<[MoltEvent, MoltEvent]> = [
    [ev("TaskStepStarted", { taskId, seq: 2, step: "begin", at: at(3) }, 4), ev("TaskStepSucceeded", { taskId, seq: 3, step: "begin", at: at(4), durationMs: 1000, detail: "ok" }, 4)],
    [
      ev("TaskStepStarted", { taskId, seq: 4, step: "download", at: at(5) }, 7),
      ev("TaskStepFailed", { taskId, seq: 5, step: "download", at: at(7), durationMs: 2000, error: "sha256 mismatch", logTail: "GET 200\nmismatch" }, 7),
    ],
  ];
  return [[allocated], [accepted], ...pairs.flatMap(([s, e]) => (together ? [[s, e]] : [[s], [e]]))];
}

describe.each(testDatabases())("task steps on %s", (_kind, template) => {
  it("[views] a step's start and end in one commit leave the same rows as in two commits", async () => {
    const db = await template().fresh();
    const projection = deploymentsProjection();
    for (const sql of projection.migrations) await db.exec(sql);
    let seq = 0;
    for (const [id, together] of [["t-one", true], ["t-two", false]] as const)
      for (const events of task(id, together))
        await db.transaction((tx) =>
          projection.apply(tx, { seq: ++seq, subject: subjects.slot(id, "c"), commit: { commitId: `${id}#${seq}`, events }, hostId: id, component: "c" }),
        );
    const rows = async (id: string) => ({
      task: (await db.query("SELECT current_step, state, error, log_tail, updated_at FROM tasks WHERE task_id = $1", [id])).rows,
      steps: (await db.query("SELECT seq, step, state, started_at, ended_at, duration_ms, error, detail, log_tail FROM task_steps WHERE task_id = $1 ORDER BY seq", [id])).rows,
    });
    const one = await rows("t-one");
    expect(one.steps).toHaveLength(2);
    expect(one.task).toEqual([expect.objectContaining({ current_step: "download", log_tail: "GET 200\nmismatch" })]);
    expect(one).toEqual(await rows("t-two"));
  });
});

describe.each(testDatabases())("task steps on %s: durations", (_kind, template) => {
  // A duration is any non-negative number the contract lets through; `make_interval(secs => d / 1000)`
  // underflowed (SQLSTATE 22003) for d below ~1e-320, refusing the whole commit (its task's verdict too)
  // even where the derived row was not inserted (its seq taken): a run folded in memory did not.
  it("[views] a step's end with a vanishing duration is projected, with or without a row of its own", async () => {
    const db = await template().fresh();
    const projection = deploymentsProjection();
    for (const sql of projection.migrations) await db.exec(sql);
    const taskId = "t-tiny";
    const commits: MoltEvent[][] = [
      [ev("TaskAllocated", { taskId, deploymentId: "d-1", hostId: "h", component: "c", version: "2.0.0", fromVersion: null, attempt: 1, deadline: at(99), package: PKG }, 1)],
      [ev("TaskStepStarted", { taskId, seq: 2, step: "begin", at: at(3) }, 3)],
      // its seq is the begin row's: no row of its own, the task still moves on
      [ev("TaskStepSucceeded", { taskId, seq: 2, step: "verify", at: at(4), durationMs: Number.MIN_VALUE }, 4), ev("TaskSucceeded", { taskId, seq: 5, at: at(5), version: "2.0.0" }, 5)],
      // no start reported: a row of its own, started when it ended
      [ev("TaskStepFailed", { taskId, seq: 6, step: "backup", at: at(6), durationMs: 1e-321, error: "late" }, 6)],
      // a duration no timestamp can be subtracted from: the row, its start unknown
      [ev("TaskStepSucceeded", { taskId, seq: 7, step: "override", at: at(7), durationMs: 1e17 }, 7)],
      // and with its seq taken: nothing to add, nothing refused
      [ev("TaskStepSucceeded", { taskId, seq: 7, step: "stop", at: at(8), durationMs: 1e17 }, 8)],
    ];
    for (const [i, events] of commits.entries())
      await db.transaction((tx) => projection.apply(tx, { seq: i + 1, subject: subjects.slot("h", "c"), commit: { commitId: `c#${i}`, events }, hostId: "h", component: "c" }));
    // Succeeded stays (a late step report changes no outcome); the last step reported is the current one.
    expect((await db.query("SELECT state, current_step FROM tasks")).rows).toEqual([{ state: "succeeded", current_step: "stop" }]);
    const steps = (await db.query<{ seq: number; started_at: Date; ended_at: Date | null }>("SELECT seq, started_at, ended_at FROM task_steps ORDER BY seq")).rows;
    expect(steps.map((s) => s.seq)).toEqual([2, 6, 7]);
    expect(steps[1]!.started_at).toEqual(steps[1]!.ended_at);
    expect(steps[2]!.started_at).toBeNull();
  });
});
