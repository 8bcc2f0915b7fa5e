import { DeploymentEvent, type Batch } from "@molt/contracts";
import { describe, expect, it } from "vitest";
import { toEnvelopes } from "../decider.js";
import { IdempotencyMismatchError, IllegalStateError, NotFoundError, ValidationError } from "../errors.js";
import { given } from "../spec.js";
import { decideDeployment, deploymentDecider, type DeploymentCommand, type RequestDeployment } from "./decide.js";
import {
  evolveDeployment,
  initialDeploymentState,
  isTerminal,
  nextBatchToStart,
  type DeploymentEventBody,
  type SkippedHost,
} from "./state.js";

const D = "d1";
const HASH = "b".repeat(64);
const pkg = { platform: "linux-amd64", sha256: "a".repeat(64), size: 4096, url: "https://repo.example.com/p/metrics-agent" };
const host = (hostId: string) => ({ hostId, fromVersion: "2.0.0", platform: pkg.platform });
const packages = { [pkg.platform]: pkg };

const requestData = (requestHash = HASH): RequestDeployment["data"] => ({
  deploymentId: D,
  component: "metrics-agent",
  version: "2.1.0",
  hosts: ["web-1", "web-2", "web-3", "web-4"],
  idempotencyKey: "key-1",
  requestHash,
  taskTimeoutMs: 600_000,
});
const batches: Batch[] = [
  { index: 0, kind: "canary", hosts: [host("web-1")] },
  { index: 1, kind: "batch", hosts: [host("web-2"), host("web-3")] },
];
const skipped: SkippedHost[] = [{ hostId: "web-4", reason: "already at 2.1.0" }];

const ev = {
  requested: (requestHash = HASH): DeploymentEventBody => ({ type: "DeploymentRequested", data: requestData(requestHash) }),
  planned: (b: Batch[] = batches, s: SkippedHost[] = skipped): DeploymentEventBody => ({
    type: "DeploymentPlanned",
    data: { deploymentId: D, packages, batches: b, skipped: s },
  }),
  started: (index: number): DeploymentEventBody => ({ type: "BatchStarted", data: { deploymentId: D, index } }),
  completed: (index: number, succeeded: number, failed = 0): DeploymentEventBody => ({
    type: "BatchCompleted",
    data: { deploymentId: D, index, succeeded, failed },
  }),
  paused: (): DeploymentEventBody => ({ type: "DeploymentPaused", data: { deploymentId: D, reason: "looking" } }),
  resumed: (): DeploymentEventBody => ({ type: "DeploymentResumed", data: { deploymentId: D } }),
  braked: (): DeploymentEventBody => ({ type: "DeploymentBraked", data: { deploymentId: D, failed: 1, finished: 1, threshold: 0.1 } }),
  awaiting: (index: number): DeploymentEventBody => ({ type: "CanaryAwaitingApproval", data: { deploymentId: D, index } }),
  approved: (): DeploymentEventBody => ({ type: "CanaryApproved", data: { deploymentId: D } }),
  cancelled: (): DeploymentEventBody => ({ type: "DeploymentCancelled", data: { deploymentId: D, reason: "operator" } }),
  done: (succeeded: number, failed: number, skippedCount: number): DeploymentEventBody => ({
    type: "DeploymentCompleted",
    data: { deploymentId: D, succeeded, failed, skipped: skippedCount },
  }),
  failed: (): DeploymentEventBody => ({
    type: "DeploymentFailed",
    data: { deploymentId: D, reason: "braked", succeeded: 0, failed: 1 },
  }),
};

const cmd = {
  request: (requestHash = HASH): DeploymentCommand => ({ type: "RequestDeployment", data: requestData(requestHash) }),
  plan: (b: Batch[] = batches, s: SkippedHost[] = skipped): DeploymentCommand => ({ type: "PlanDeployment", data: { packages, batches: b, skipped: s } }),
  start: (index: number): DeploymentCommand => ({ type: "StartBatch", data: { index } }),
  complete: (index: number, succeeded: number, failed = 0): DeploymentCommand => ({
    type: "CompleteBatch",
    data: { index, succeeded, failed },
  }),
  cancel: (): DeploymentCommand => ({ type: "CancelDeployment", data: { reason: "operator" } }),
  pause: (): DeploymentCommand => ({ type: "PauseDeployment", data: { reason: "looking" } }),
  resume: (): DeploymentCommand => ({ type: "ResumeDeployment", data: {} }),
};

const deployment = given(deploymentDecider);
const fold = (events: readonly DeploymentEventBody[]) => events.reduce(evolveDeployment, initialDeploymentState());
const planned = [ev.requested(), ev.planned()];
const canaryRunning = [...planned, ev.started(0)];
const canaryDone = [...canaryRunning, ev.completed(0, 1)];
const lastRunning = [...canaryDone, ev.started(1)];

describe("deployment: RequestDeployment", () => {
  it("[spine] a new request records DeploymentRequested", () => {
    deployment([]).when(cmd.request()).then([ev.requested()]);
    expect(fold([ev.requested()])).toMatchObject({ status: "requested", deploymentId: D, requestHash: HASH, idempotencyKey: "key-1" });
  });

  it("[spine] the same request replayed is a no-op, so the caller answers with the original", () => {
    deployment([ev.requested()]).when(cmd.request()).then([]);
    deployment(lastRunning).when(cmd.request()).then([]);
  });

  it("[spine] the same idempotency key with a different body throws IdempotencyMismatchError (422)", () => {
    deployment([ev.requested()]).when(cmd.request("c".repeat(64))).thenThrows(IdempotencyMismatchError);
    expect(() => decideDeployment(cmd.request("c".repeat(64)), fold([ev.requested()]))).toThrow(
      expect.objectContaining({ code: "idempotency_mismatch", deploymentId: D }),
    );
  });
});

describe("deployment: PlanDeployment", () => {
  it("[spine] planning a requested deployment records DeploymentPlanned", () => {
    deployment([ev.requested()]).when(cmd.plan()).then([ev.planned()]);
    expect(fold(planned)).toMatchObject({ status: "planned", planned: true, batches, skipped });
  });

  it("[spine] a plan where every host is skipped completes the deployment in the same decision", () => {
    const allSkipped: SkippedHost[] = ["web-1", "web-2", "web-3", "web-4"].map((hostId) => ({ hostId, reason: "offline" }));
    deployment([ev.requested()]).when(cmd.plan([], allSkipped)).then([ev.planned([], allSkipped), ev.done(0, 0, 4)]);
    const empty: Batch[] = [{ index: 0, kind: "canary", hosts: [] }];
    deployment([ev.requested()]).when(cmd.plan(empty, allSkipped)).then([ev.planned(empty, allSkipped), ev.done(0, 0, 4)]);
    expect(fold([ev.requested(), ev.planned([], allSkipped), ev.done(0, 0, 4)]).status).toBe("completed");
  });

  it("[spine] planning again once planned or beyond is a no-op", () => {
    deployment(planned).when(cmd.plan()).then([]);
    deployment(lastRunning).when(cmd.plan()).then([]);
    deployment([...planned, ev.cancelled()]).when(cmd.plan()).then([]);
  });

  it("[spine] planning a deployment that does not exist throws NotFoundError", () => {
    deployment([]).when(cmd.plan()).thenThrows(NotFoundError);
  });

  it("[spine] planning a deployment cancelled before its plan throws IllegalStateError", () => {
    deployment([ev.requested(), ev.cancelled()]).when(cmd.plan()).thenThrows(IllegalStateError);
  });

  it("[spine] a deployment paused before its plan can be planned and resumes as planned", () => {
    deployment([ev.requested(), ev.paused()]).when(cmd.plan()).then([ev.planned()]);
    const state = fold([ev.requested(), ev.paused(), ev.planned(), ev.resumed()]);
    expect(state.status).toBe("planned");
    expect(nextBatchToStart(state)).toBe(0);
  });
});

describe("deployment: StartBatch", () => {
  it("[spine] the first batch of a planned deployment starts", () => {
    deployment(planned).when(cmd.start(0)).then([ev.started(0)]);
    expect(fold(canaryRunning)).toMatchObject({ status: "running", startedBatches: [0] });
  });

  it("[spine] starting a batch already started is a no-op", () => {
    deployment(canaryRunning).when(cmd.start(0)).then([]);
    deployment([...canaryDone, ev.cancelled()]).when(cmd.start(0)).then([]);
  });

  it("[spine] a batch does not start before every previous batch has completed", () => {
    deployment(canaryRunning).when(cmd.start(1)).thenThrows(IllegalStateError, /batch 0 has not completed/);
    deployment(planned).when(cmd.start(1)).thenThrows(IllegalStateError);
  });

  it("[spine] the next batch starts once the previous one has completed", () => {
    deployment(canaryDone).when(cmd.start(1)).then([ev.started(1)]);
  });

  it("[spine] starting a batch that is not in the plan throws ValidationError", () => {
    deployment(planned).when(cmd.start(7)).thenThrows(ValidationError);
  });

  it("[spine] no batch starts before the plan, while paused, or after the end", () => {
    deployment([ev.requested()]).when(cmd.start(0)).thenThrows(IllegalStateError);
    deployment([...planned, ev.paused()]).when(cmd.start(0)).thenThrows(IllegalStateError, /paused/);
    deployment([...canaryDone, ev.cancelled()]).when(cmd.start(1)).thenThrows(IllegalStateError, /cancelled/);
    deployment([]).when(cmd.start(0)).thenThrows(NotFoundError);
  });

  it("[spine] a canary awaiting approval holds back later batches until approved", () => {
    deployment([...canaryDone, ev.awaiting(0)]).when(cmd.start(1)).thenThrows(IllegalStateError, /awaits approval/);
    deployment([...canaryDone, ev.awaiting(0), ev.approved()]).when(cmd.start(1)).then([ev.started(1)]);
  });

  it("[spine] a braked deployment starts no more batches", () => {
    deployment([...canaryDone, ev.braked()]).when(cmd.start(1)).thenThrows(IllegalStateError, /braked/);
  });
});

describe("deployment: CompleteBatch", () => {
  it("[spine] a started batch completes", () => {
    deployment(canaryRunning).when(cmd.complete(0, 1)).then([ev.completed(0, 1)]);
  });

  it("[spine] completing the last batch completes the deployment with totals in the same decision", () => {
    deployment(lastRunning).when(cmd.complete(1, 1, 1)).then([ev.completed(1, 1, 1), ev.done(2, 1, 1)]);
    expect(fold([...lastRunning, ev.completed(1, 1, 1), ev.done(2, 1, 1)]).status).toBe("completed");
  });

  it("[spine] a one-batch deployment completes with its only batch", () => {
    const one: Batch[] = [{ index: 0, kind: "canary", hosts: [host("web-1")] }];
    deployment([ev.requested(), ev.planned(one, []), ev.started(0)])
      .when(cmd.complete(0, 0, 1))
      .then([ev.completed(0, 0, 1), ev.done(0, 1, 0)]);
  });

  it("[spine] completing a batch already completed is a no-op", () => {
    deployment(canaryDone).when(cmd.complete(0, 1)).then([]);
    deployment([...lastRunning, ev.completed(1, 2), ev.done(3, 0, 1)]).when(cmd.complete(1, 2)).then([]);
  });

  it("[spine] completing a batch that has not started throws IllegalStateError", () => {
    deployment(planned).when(cmd.complete(0, 1)).thenThrows(IllegalStateError);
    deployment([]).when(cmd.complete(0, 1)).thenThrows(NotFoundError);
  });

  it("[spine] after a cancel the in-flight batch still completes, but the deployment stays cancelled", () => {
    deployment([...lastRunning, ev.cancelled()]).when(cmd.complete(1, 2)).then([ev.completed(1, 2)]);
  });

  it("[spine] the last batch finishing while paused still completes the deployment", () => {
    deployment([...lastRunning, ev.paused()]).when(cmd.complete(1, 2)).then([ev.completed(1, 2), ev.done(3, 0, 1)]);
  });
});

describe("deployment: FailDeployment", () => {
  it("[spine] a deployment that cannot go on fails with the reason and the totals so far", () => {
    deployment(canaryDone)
      .when({ type: "FailDeployment", data: { reason: "plan too large" } })
      .then([{ type: "DeploymentFailed", data: { deploymentId: D, reason: "plan too large", succeeded: 1, failed: 0 } }]);
    expect(fold([...canaryDone, { type: "DeploymentFailed", data: { deploymentId: D, reason: "x", succeeded: 1, failed: 0 } }]).status).toBe("failed");
  });

  it("[spine] failing a finished deployment is a no-op", () => {
    deployment([...lastRunning, ev.completed(1, 2), ev.done(3, 0, 1)]).when({ type: "FailDeployment", data: { reason: "late" } }).then([]);
  });
});

describe("deployment: cancel, pause, resume", () => {
  it("[spine] a live deployment is cancelled; cancelling again is a no-op; a finished one cannot be", () => {
    deployment(canaryRunning).when(cmd.cancel()).then([ev.cancelled()]);
    deployment([ev.requested()]).when(cmd.cancel()).then([ev.cancelled()]);
    deployment([...canaryRunning, ev.cancelled()]).when(cmd.cancel()).then([]);
    deployment([...canaryRunning, ev.failed()]).when(cmd.cancel()).thenThrows(IllegalStateError);
    deployment([]).when(cmd.cancel()).thenThrows(NotFoundError);
  });

  it("[spine] a live deployment is paused; pausing again is a no-op; a finished one cannot be", () => {
    deployment(canaryRunning).when(cmd.pause()).then([ev.paused()]);
    deployment([...canaryRunning, ev.paused()]).when(cmd.pause()).then([]);
    deployment([...canaryRunning, ev.cancelled()]).when(cmd.pause()).thenThrows(IllegalStateError);
  });

  it("[spine] a paused deployment resumes where it was; resuming a live one is a no-op; a finished one cannot be", () => {
    deployment([...canaryRunning, ev.paused()]).when(cmd.resume()).then([ev.resumed()]);
    expect(fold([...canaryRunning, ev.paused(), ev.resumed()]).status).toBe("running");
    expect(fold([...planned, ev.paused(), ev.resumed()]).status).toBe("planned");
    deployment(canaryRunning).when(cmd.resume()).then([]);
    deployment([...canaryRunning, ev.cancelled()]).when(cmd.resume()).thenThrows(IllegalStateError);
  });
});

describe("deployment: queries and state", () => {
  it("[spine] nextBatchToStart names the batch the roll engine may start now", () => {
    expect(nextBatchToStart(initialDeploymentState())).toBeUndefined();
    expect(nextBatchToStart(fold([ev.requested()]))).toBeUndefined();
    expect(nextBatchToStart(fold(planned))).toBe(0);
    expect(nextBatchToStart(fold(canaryRunning))).toBeUndefined();
    expect(nextBatchToStart(fold(canaryDone))).toBe(1);
    expect(nextBatchToStart(fold([...canaryDone, ev.paused()]))).toBeUndefined();
    expect(nextBatchToStart(fold([...canaryDone, ev.awaiting(0)]))).toBeUndefined();
    expect(nextBatchToStart(fold([...canaryDone, ev.awaiting(0), ev.approved()]))).toBe(1);
    expect(nextBatchToStart(fold([...canaryDone, ev.braked()]))).toBeUndefined();
    expect(nextBatchToStart(fold(lastRunning))).toBeUndefined();
    expect(nextBatchToStart(fold([...canaryDone, ev.cancelled()]))).toBeUndefined();
  });

  it("[spine] isTerminal holds for completed, failed and cancelled only", () => {
    expect(isTerminal(fold(lastRunning))).toBe(false);
    expect(isTerminal(fold([...lastRunning, ev.paused()]))).toBe(false);
    expect(isTerminal(fold([...lastRunning, ev.completed(1, 2), ev.done(3, 0, 1)]))).toBe(true);
    expect(isTerminal(fold([...lastRunning, ev.failed()]))).toBe(true);
    expect(isTerminal(fold([...lastRunning, ev.cancelled()]))).toBe(true);
  });

  it("[spine] evolve records batches, brakes and approvals", () => {
    const state = fold([...lastRunning, ev.braked(), ev.completed(1, 1, 1), ev.awaiting(0), ev.approved()]);
    expect(state).toMatchObject({
      status: "running",
      startedBatches: [0, 1],
      completedBatches: [
        { index: 0, succeeded: 1, failed: 0 },
        { index: 1, succeeded: 1, failed: 1 },
      ],
      braked: { failed: 1, finished: 1, threshold: 0.1 },
      awaitingApproval: null,
    });
    expect(fold([...lastRunning, ev.failed()]).status).toBe("failed");
  });

  it("[spine] every event the deployment decides is a valid contracts DeploymentEvent", () => {
    const bodies = [...lastRunning, ev.paused(), ev.resumed(), ev.braked(), ev.awaiting(0), ev.approved(), ev.cancelled()];
    const envelopes: DeploymentEvent[] = toEnvelopes(bodies, { now: "2025-03-01T10:00:00.000Z", actor: "op", correlationId: "c" }, "k");
    for (const e of envelopes) expect(DeploymentEvent.parse(e)).toEqual(e);
    expect(fold(envelopes)).toEqual(fold(bodies));
  });
});
