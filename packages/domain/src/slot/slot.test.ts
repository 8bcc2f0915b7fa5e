import { SlotEvent, SlotState, type JournalEntry, type Step } from "@molt/contracts";
import { describe, expect, it } from "vitest";
import { toEnvelopes } from "../decider.js";
import { IllegalStateError, SlotBusyError } from "../errors.js";
import { given } from "../spec.js";
import { decideSlot, slotDecider, type RecordReport, type SlotCommand } from "./decide.js";
import { evolveSlot, initialSlotState, isActive, outcomeOf, SLOT_RECENT_LIMIT, type SlotEventBody } from "./state.js";

const AT = "2025-03-01T10:00:00.000Z";
const DEADLINE = "2025-03-01T10:30:00.000Z";
const T = "t1";

const allocation = (taskId = T) => ({
  taskId,
  deploymentId: "d1",
  hostId: "web-12.eu-1.example.com",
  component: "metrics-agent",
  version: "2.1.0",
  fromVersion: "2.0.0",
  attempt: 1,
  deadline: DEADLINE,
  package: { platform: "linux-amd64", sha256: "a".repeat(64), size: 4096, url: "https://repo.example.com/p/metrics-agent" },
});

// Event bodies, as the decider emits them and as `given` replays them.
const ev = {
  allocated: (taskId = T): SlotEventBody => ({ type: "TaskAllocated", data: allocation(taskId) }),
  dispatched: (taskId = T): SlotEventBody => ({ type: "TaskDispatched", data: { taskId, revision: 1 } }),
  accepted: (seq: number, taskId = T): SlotEventBody => ({ type: "TaskAccepted", data: { taskId, seq, at: AT } }),
  started: (seq: number, step: Step, taskId = T): SlotEventBody => ({
    type: "TaskStepStarted",
    data: { taskId, seq, step, at: AT },
  }),
  stepOk: (seq: number, step: Step, taskId = T): SlotEventBody => ({
    type: "TaskStepSucceeded",
    data: { taskId, seq, step, at: AT, durationMs: 5 },
  }),
  stepFailed: (seq: number, step: Step): SlotEventBody => ({
    type: "TaskStepFailed",
    data: { taskId: T, seq, step, at: AT, durationMs: 5, error: "health check failed" },
  }),
  rolledBack: (seq: number): SlotEventBody => ({ type: "TaskRolledBack", data: { taskId: T, seq, at: AT, reason: "verify failed" } }),
  succeeded: (seq: number, taskId = T): SlotEventBody => ({ type: "TaskSucceeded", data: { taskId, seq, at: AT, version: "2.1.0" } }),
  failed: (seq: number, step?: Step): SlotEventBody => ({
    type: "TaskFailed",
    data: { taskId: T, seq, at: AT, reason: "verify failed", ...(step ? { step } : {}) },
  }),
  rejected: (seq: number): SlotEventBody => ({ type: "TaskRejected", data: { taskId: T, seq, at: AT, reason: "component locked" } }),
  timedOut: (taskId = T): SlotEventBody => ({ type: "TaskTimedOut", data: { taskId, deadline: DEADLINE } }),
  cancelled: (taskId = T): SlotEventBody => ({ type: "TaskCancelled", data: { taskId, reason: "deployment cancelled" } }),
};

// Journal entries as the host's upgrade client writes them.
const en = {
  accepted: (seq: number): JournalEntry => ({ kind: "accepted", seq, at: AT }),
  started: (seq: number, step: Step): JournalEntry => ({ kind: "step-started", seq, at: AT, step }),
  stepOk: (seq: number, step: Step): JournalEntry => ({ kind: "step-succeeded", seq, at: AT, step, durationMs: 5 }),
  stepFailed: (seq: number, step: Step): JournalEntry => ({
    kind: "step-failed",
    seq,
    at: AT,
    step,
    durationMs: 5,
    error: "health check failed",
  }),
  rolledBack: (seq: number): JournalEntry => ({ kind: "rolled-back", seq, at: AT, reason: "verify failed" }),
  succeeded: (seq: number): JournalEntry => ({ kind: "succeeded", seq, at: AT, version: "2.1.0" }),
  failed: (seq: number, step?: Step): JournalEntry => ({ kind: "failed", seq, at: AT, reason: "verify failed", ...(step ? { step } : {}) }),
  rejected: (seq: number): JournalEntry => ({ kind: "rejected", seq, at: AT, reason: "component locked" }),
};

const report = (...entries: JournalEntry[]): RecordReport => ({
  type: "RecordReport",
  data: { report: { hostId: "web-12.eu-1.example.com", taskId: T, component: "metrics-agent", entries } },
});

const slot = given(slotDecider);
const running = [ev.allocated(), ev.dispatched(), ev.accepted(1)];
const inStep = [...running, ev.started(2, "download")];
const fold = (events: readonly SlotEventBody[], from: SlotState = initialSlotState()) => events.reduce(evolveSlot, from);

describe("slot: AllocateTask", () => {
  it("[spine] allocating on an empty slot records TaskAllocated", () => {
    slot([]).when({ type: "AllocateTask", data: allocation() }).then([ev.allocated()]);
  });

  it("[spine] allocating the same task again while it is active is a no-op success", () => {
    slot([ev.allocated()]).when({ type: "AllocateTask", data: allocation() }).then([]);
    slot(running).when({ type: "AllocateTask", data: allocation() }).then([]);
  });

  it("[spine] allocating a task that already finished (in recent) is a no-op success", () => {
    slot([...running, ev.succeeded(2)]).when({ type: "AllocateTask", data: allocation() }).then([]);
    slot([ev.allocated(), ev.timedOut()]).when({ type: "AllocateTask", data: allocation() }).then([]);
  });

  it("[spine] allocating a different task on a busy slot throws SlotBusyError", () => {
    slot([ev.allocated()]).when({ type: "AllocateTask", data: allocation("t2") }).thenThrows(SlotBusyError, /busy with task t1/);
    expect(() => decideSlot({ type: "AllocateTask", data: allocation("t2") }, fold([ev.allocated()]))).toThrow(
      expect.objectContaining({ code: "busy", activeTaskId: T, requestedTaskId: "t2" }),
    );
  });

  it("[spine] a slot is free again once its task has finished", () => {
    slot([...running, ev.succeeded(2)]).when({ type: "AllocateTask", data: allocation("t2") }).then([ev.allocated("t2")]);
    slot([ev.allocated(), ev.cancelled()]).when({ type: "AllocateTask", data: allocation("t2") }).then([ev.allocated("t2")]);
  });
});

describe("slot: DispatchTask", () => {
  const dispatch: SlotCommand = { type: "DispatchTask", data: { taskId: T, revision: 1 } };

  it("[spine] dispatching an allocated task records TaskDispatched", () => {
    slot([ev.allocated()]).when(dispatch).then([ev.dispatched()]);
  });

  it("[spine] dispatching again once dispatched or running is a no-op", () => {
    slot([ev.allocated(), ev.dispatched()]).when(dispatch).then([]);
    slot(running).when(dispatch).then([]);
    // Dispatch can be lost and the host still picks the task up; a late dispatch must not rewind it.
    slot([ev.allocated(), ev.accepted(1)]).when(dispatch).then([]);
  });

  it("[spine] dispatching a finished task is a no-op", () => {
    slot([ev.allocated(), ev.timedOut()]).when(dispatch).then([]);
    slot([...running, ev.succeeded(2)]).when(dispatch).then([]);
  });

  it("[spine] dispatching an unknown task throws IllegalStateError", () => {
    slot([]).when(dispatch).thenThrows(IllegalStateError);
    slot([ev.allocated("t2")]).when(dispatch).thenThrows(IllegalStateError, /never allocated/);
  });
});

describe("slot: RecordReport ordering and duplicates", () => {
  it("[spine] the first entry 'accepted' moves a dispatched task to running", () => {
    slot([ev.allocated(), ev.dispatched()])
      .when(report(en.accepted(1)))
      .then({ status: "accepted", events: [ev.accepted(1)] });
    expect(fold([ev.allocated(), ev.dispatched(), ev.accepted(1)]).active).toMatchObject({ status: "running", lastSeq: 1 });
  });

  it("[spine] 'accepted' is also taken from an allocated task whose dispatch event is not yet stored", () => {
    slot([ev.allocated()])
      .when(report(en.accepted(1)))
      .then({ status: "accepted", events: [ev.accepted(1)] });
  });

  it("[spine] a step's start and end reported together become two events of one decision", () => {
    slot(running)
      .when(report(en.started(2, "begin"), en.stepOk(3, "begin")))
      .then({ status: "accepted", events: [ev.started(2, "begin"), ev.stepOk(3, "begin")] });
  });

  it("[spine] a report whose entries are all stored already is a duplicate", () => {
    slot(inStep).when(report(en.accepted(1), en.started(2, "download"))).then({ status: "duplicate" });
    slot(inStep).when(report(en.started(2, "download"))).then({ status: "duplicate" });
  });

  it("[spine] a report overlapping stored entries keeps only the new tail", () => {
    slot(inStep)
      .when(report(en.started(2, "download"), en.stepOk(3, "download")))
      .then({ status: "accepted", events: [ev.stepOk(3, "download")] });
  });

  it("[spine] a gap in seq is refused as out of order", () => {
    slot(inStep)
      .when(report(en.stepOk(4, "download")))
      .then({ status: "refused", reason: "out of order: expected seq 3, got 4" });
    slot([ev.allocated()])
      .when(report(en.started(2, "begin")))
      .then({ status: "refused", reason: "out of order: expected seq 1, got 2" });
  });

  it("[spine] a report for a task the slot never had is refused as unknown", () => {
    slot([]).when(report(en.accepted(1))).then({ status: "refused", reason: "unknown task t1" });
    slot([ev.allocated("t2")]).when(report(en.accepted(1))).then({ status: "refused", reason: "unknown task t1" });
  });

  it("[spine] a late duplicate after the task finished is duplicate, never refused", () => {
    const finished = [...running, ev.started(2, "begin"), ev.stepOk(3, "begin"), ev.succeeded(4)];
    slot(finished).when(report(en.succeeded(4))).then({ status: "duplicate" });
    slot(finished).when(report(en.started(2, "begin"), en.stepOk(3, "begin"))).then({ status: "duplicate" });
    slot([...inStep, ev.timedOut()]).when(report(en.started(2, "download"))).then({ status: "duplicate" });
  });

  it("[spine] a timed-out task refuses new entries", () => {
    slot([...inStep, ev.timedOut()])
      .when(report(en.stepOk(3, "download")))
      .then({ status: "refused", reason: "task t1 is timed out" });
    // Partly old, partly new is still new work on a withdrawn task.
    slot([...inStep, ev.timedOut()])
      .when(report(en.started(2, "download"), en.stepOk(3, "download")))
      .then({ status: "refused", reason: "task t1 is timed out" });
  });

  it("[spine] a cancelled (withdrawn) task refuses new entries", () => {
    slot([ev.allocated(), ev.cancelled()])
      .when(report(en.accepted(1)))
      .then({ status: "refused", reason: "task t1 is withdrawn (cancelled)" });
  });

  it("[spine] a finished task refuses entries past its last seq", () => {
    slot([...running, ev.succeeded(2)])
      .when(report(en.started(3, "begin")))
      .then({ status: "refused", reason: "task t1 is finished (succeeded)" });
  });
});

describe("slot: RecordReport transitions", () => {
  it("[spine] a step-succeeded for a step that is not open is refused", () => {
    slot(running)
      .when(report(en.stepOk(2, "download")))
      .then({ status: "refused", reason: "step-succeeded at seq 2: step download is not open" });
    slot(inStep)
      .when(report(en.stepOk(3, "verify")))
      .then({ status: "refused", reason: "step-succeeded at seq 3: step verify is not open (step download is)" });
    slot(inStep)
      .when(report(en.stepFailed(3, "verify")))
      .then({ status: "refused", reason: "step-failed at seq 3: step verify is not open (step download is)" });
  });

  it("[spine] step-succeeded and step-failed close the open step", () => {
    slot(inStep)
      .when(report(en.stepOk(3, "download")))
      .then({ status: "accepted", events: [ev.stepOk(3, "download")] });
    slot(inStep)
      .when(report(en.stepFailed(3, "download")))
      .then({ status: "accepted", events: [ev.stepFailed(3, "download")] });
    expect(fold([...inStep, ev.stepFailed(3, "download")]).active).toMatchObject({ openStep: null, lastSeq: 3 });
  });

  it("[spine] a step's end carries its detail (succeeded) or its log tail (failed) into the event", () => {
    slot(inStep)
      .when(report({ kind: "step-succeeded", seq: 3, at: AT, step: "download", durationMs: 5, detail: "resumed at 1 MiB" }))
      .then({ status: "accepted", events: [{ type: "TaskStepSucceeded", data: { taskId: T, seq: 3, step: "download", at: AT, durationMs: 5, detail: "resumed at 1 MiB" } }] });
    slot(inStep)
      .when(report({ kind: "step-failed", seq: 3, at: AT, step: "download", durationMs: 7, error: "sha256 mismatch", logTail: "curl: (18)" }))
      .then({
        status: "accepted",
        events: [{ type: "TaskStepFailed", data: { taskId: T, seq: 3, step: "download", at: AT, durationMs: 7, error: "sha256 mismatch", logTail: "curl: (18)" } }],
      });
  });

  it("[spine] step-started while another step is open is refused", () => {
    slot(inStep)
      .when(report(en.started(3, "override")))
      .then({ status: "refused", reason: "step-started at seq 3: step download is still open" });
  });

  it("[spine] step-started before 'accepted' is refused", () => {
    slot([ev.allocated(), ev.dispatched()])
      .when(report(en.started(1, "begin")))
      .then({ status: "refused", reason: "step-started at seq 1: task t1 has not been accepted" });
  });

  it("[spine] 'accepted' on a task already running is refused", () => {
    slot(running)
      .when(report(en.accepted(2)))
      .then({ status: "refused", reason: "accepted at seq 2: task t1 is already running" });
  });

  it("[spine] a refused report yields no events even when its earlier entries were fine", () => {
    slot(running)
      .when(report(en.started(2, "stop"), en.stepOk(3, "start")))
      .then({ status: "refused", reason: "step-succeeded at seq 3: step start is not open (step stop is)" });
  });

  it("[spine] a failed step then rolled-back then failed is accepted in order", () => {
    slot([...running, ev.started(2, "verify")])
      .when(report(en.stepFailed(3, "verify"), en.started(4, "rollback"), en.stepOk(5, "rollback"), en.rolledBack(6), en.failed(7, "verify")))
      .then({
        status: "accepted",
        events: [ev.stepFailed(3, "verify"), ev.started(4, "rollback"), ev.stepOk(5, "rollback"), ev.rolledBack(6), ev.failed(7, "verify")],
      });
  });

  it("[spine] rolled-back needs a running task with no open step", () => {
    slot([...running, ev.started(2, "rollback")])
      .when(report(en.rolledBack(3)))
      .then({ status: "refused", reason: "rolled-back at seq 3: step rollback is still open" });
    slot([ev.allocated()])
      .when(report(en.rolledBack(1)))
      .then({ status: "refused", reason: "rolled-back at seq 1: task t1 has not been accepted" });
  });

  it("[spine] succeeded and failed need no open step", () => {
    slot(inStep).when(report(en.succeeded(3))).then({ status: "refused", reason: "succeeded at seq 3: step download is still open" });
    slot(inStep).when(report(en.failed(3))).then({ status: "refused", reason: "failed at seq 3: step download is still open" });
  });

  it("[spine] succeeded and failed need an accepted task", () => {
    slot([ev.allocated(), ev.dispatched()])
      .when(report(en.succeeded(1)))
      .then({ status: "refused", reason: "succeeded at seq 1: task t1 has not been accepted" });
  });

  it("[spine] rejected is allowed instead of accepted, right after accepted, or while running with no open step", () => {
    slot([ev.allocated(), ev.dispatched()]).when(report(en.rejected(1))).then({ status: "accepted", events: [ev.rejected(1)] });
    slot([ev.allocated()]).when(report(en.rejected(1))).then({ status: "accepted", events: [ev.rejected(1)] });
    slot([ev.allocated(), ev.dispatched()])
      .when(report(en.accepted(1), en.rejected(2)))
      .then({ status: "accepted", events: [ev.accepted(1), ev.rejected(2)] });
    slot(running).when(report(en.rejected(2))).then({ status: "accepted", events: [ev.rejected(2)] });
  });

  it("[spine] rejected with a step open is refused", () => {
    slot(inStep).when(report(en.rejected(3))).then({ status: "refused", reason: "rejected at seq 3: step download is still open" });
  });

  it("[spine] an entry after a terminal entry in the same report is refused", () => {
    slot(running)
      .when(report(en.succeeded(2), en.started(3, "begin")))
      .then({ status: "refused", reason: "step-started at seq 3 comes after task t1 ended" });
  });

  it("[spine] a whole upgrade reported entry by entry is accepted", () => {
    const steps: Step[] = ["begin", "backup", "download", "override", "stop", "start", "verify", "end-action"];
    let state = fold([ev.allocated(), ev.dispatched()]);
    const entries: JournalEntry[] = [en.accepted(1)];
    steps.forEach((step, i) => entries.push(en.started(2 + 2 * i, step), en.stepOk(3 + 2 * i, step)));
    entries.push(en.succeeded(2 + 2 * steps.length));
    for (const entry of entries) {
      const result = decideSlot(report(entry), state);
      expect(result.status).toBe("accepted");
      if (result.status === "accepted") state = fold(result.events, state);
    }
    expect(state).toEqual({
      active: null,
      recent: [{ taskId: T, deploymentId: "d1", outcome: "succeeded", lastSeq: 18, attempt: 1 }],
      version: "2.1.0",
    });
  });
});

describe("slot: terminal entries move the task into recent", () => {
  it("[spine] succeeded moves the task into recent with its lastSeq and sets the slot version", () => {
    const state = fold([...running, ev.started(2, "begin"), ev.stepOk(3, "begin")]);
    const result = decideSlot(report(en.succeeded(4)), state);
    expect(result).toEqual({ status: "accepted", events: [ev.succeeded(4)] });
    if (result.status !== "accepted") return;
    expect(fold(result.events, state)).toEqual({
      active: null,
      recent: [{ taskId: T, deploymentId: "d1", outcome: "succeeded", lastSeq: 4, attempt: 1 }],
      version: "2.1.0",
    });
  });

  it("[spine] failed and rejected move the task into recent and keep the slot version", () => {
    expect(fold([...running, ev.failed(2)])).toEqual({
      active: null,
      recent: [{ taskId: T, deploymentId: "d1", outcome: "failed", lastSeq: 2, attempt: 1 }],
      version: null,
    });
    expect(fold([ev.allocated(), ev.rejected(1)]).recent).toEqual([{ taskId: T, deploymentId: "d1", outcome: "rejected", lastSeq: 1, attempt: 1 }]);
  });

  it("[spine] timed-out and cancelled tasks keep the last seq they had reached", () => {
    expect(fold([...inStep, ev.timedOut()]).recent).toEqual([{ taskId: T, deploymentId: "d1", outcome: "timed-out", lastSeq: 2, attempt: 1 }]);
    expect(fold([ev.allocated(), ev.cancelled()]).recent).toEqual([{ taskId: T, deploymentId: "d1", outcome: "cancelled", lastSeq: 0, attempt: 1 }]);
  });

  it("[spine] recent keeps only the newest tasks, newest first", () => {
    const events: SlotEventBody[] = [];
    for (let i = 0; i < SLOT_RECENT_LIMIT + 5; i++) events.push(ev.allocated(`t${i}`), ev.cancelled(`t${i}`));
    const state = fold(events);
    expect(state.recent).toHaveLength(SLOT_RECENT_LIMIT);
    expect(state.recent[0]?.taskId).toBe(`t${SLOT_RECENT_LIMIT + 4}`);
    expect(state.recent.at(-1)?.taskId).toBe("t5");
  });

  it("[spine] isActive and outcomeOf answer from the state", () => {
    const state = fold([ev.allocated("t0"), ev.timedOut("t0"), ev.allocated()]);
    expect(isActive(state, T)).toBe(true);
    expect(isActive(state, "t0")).toBe(false);
    expect(outcomeOf(state, "t0")).toBe("timed-out");
    expect(outcomeOf(state, T)).toBeUndefined();
    expect(outcomeOf(state, "nope")).toBeUndefined();
  });
});

describe("slot: TimeOutTask", () => {
  const timeOut = (now: string, taskId = T): SlotCommand => ({ type: "TimeOutTask", data: { taskId, now } });

  it("[spine] an active task at or past its deadline times out", () => {
    slot(inStep).when(timeOut("2025-03-01T10:30:00Z")).then([ev.timedOut()]);
    slot([ev.allocated()]).when(timeOut("2025-03-01T11:00:00.000Z")).then([ev.timedOut()]);
  });

  it("[spine] a task before its deadline does not time out", () => {
    slot(inStep).when(timeOut("2025-03-01T10:29:59.999Z")).then([]);
  });

  it("[spine] timing out a task that is not active is a no-op", () => {
    slot([]).when(timeOut("2025-03-01T11:00:00.000Z")).then([]);
    slot([ev.allocated("t2")]).when(timeOut("2025-03-01T11:00:00.000Z")).then([]);
    slot([...running, ev.succeeded(2)]).when(timeOut("2025-03-01T11:00:00.000Z")).then([]);
    slot([ev.allocated(), ev.timedOut()]).when(timeOut("2025-03-01T11:00:00.000Z")).then([]);
  });
});

describe("slot: CancelTask", () => {
  const cancel = (taskId = T): SlotCommand => ({ type: "CancelTask", data: { taskId, reason: "deployment cancelled" } });

  it("[spine] a task not yet running is cancelled", () => {
    slot([ev.allocated()]).when(cancel()).then([ev.cancelled()]);
    slot([ev.allocated(), ev.dispatched()]).when(cancel()).then([ev.cancelled()]);
  });

  it("[spine] a running task is left to finish", () => {
    slot(running).when(cancel()).then([]);
    slot(inStep).when(cancel()).then([]);
  });

  it("[spine] cancelling an unknown or finished task is a no-op", () => {
    slot([]).when(cancel()).then([]);
    slot([ev.allocated("t2")]).when(cancel()).then([]);
    slot([ev.allocated(), ev.cancelled()]).when(cancel()).then([]);
  });
});

describe("slot: envelopes and contracts", () => {
  const meta = { now: AT, actor: "allocator", correlationId: "corr-1" };

  it("[spine] toEnvelopes gives deterministic ids and metadata from the command", () => {
    const envelopes = toEnvelopes([ev.allocated(), ev.dispatched()], { ...meta, causationId: "cause-1" }, "c-42");
    expect(envelopes.map((e) => e.id)).toEqual(["c-42/0", "c-42/1"]);
    expect(envelopes[0]).toEqual({
      ...ev.allocated(),
      id: "c-42/0",
      metadata: { occurredAt: AT, actor: "allocator", correlationId: "corr-1", causationId: "cause-1" },
    });
    expect(Object.keys(toEnvelopes([ev.dispatched()], meta, "c")[0]?.metadata ?? {})).toEqual(["occurredAt", "actor", "correlationId"]);
  });

  it("[spine] every event the slot decides is a valid contracts SlotEvent and evolves to a valid SlotState", () => {
    const bodies = [
      ...running,
      ev.started(2, "verify"),
      ev.stepFailed(3, "verify"),
      ev.started(4, "rollback"),
      ev.stepOk(5, "rollback"),
      ev.rolledBack(6),
      ev.failed(7, "verify"),
    ];
    const envelopes: SlotEvent[] = toEnvelopes(bodies, meta, "c-1");
    for (const e of envelopes) expect(SlotEvent.parse(e)).toEqual(e);
    expect(SlotState.parse(fold(envelopes))).toEqual(fold(bodies));
    expect(SlotState.parse(fold(running))).toEqual(fold(running));
  });
});
