import { DeploymentEvent, Strategy, type PlannedHost, type StrategyInput } from "@molt/contracts";
import { describe, expect, it } from "vitest";
import { toEnvelopes } from "../decider.js";
import { ConflictError, IdempotencyMismatchError, IllegalStateError, NotFoundError, ValidationError } from "../errors.js";
import { given } from "../spec.js";
import { decideDeployment, deploymentDecider, type DeploymentCommand, type RequestDeployment } from "./decide.js";
import { nextCommands } from "./next.js";
import { evolveDeployment, inFlightHosts, initialDeploymentState, isTerminal, type DeploymentEventBody, type SkippedHost } from "./state.js";

const D = "d1";
const HASH = "b".repeat(64);
const T0 = "2026-12-01T10:00:00.000Z";
const at = (ms: number) => new Date(Date.parse(T0) + ms).toISOString();
const pkg = { platform: "linux-amd64", sha256: "a".repeat(64), size: 4096, url: "https://repo.example.com/p/metrics-agent" };
const host = (hostId: string): PlannedHost => ({ hostId, fromVersion: "2.0.0", platform: pkg.platform });
const packages = { [pkg.platform]: pkg };

const requestData = (strategy: StrategyInput = {}, requestHash = HASH): RequestDeployment["data"] => ({
  deploymentId: D,
  component: "metrics-agent",
  version: "2.1.0",
  hosts: ["web-1", "web-2", "web-3", "web-4", "web-5"],
  idempotencyKey: "key-1",
  requestHash,
  taskTimeoutMs: 600_000,
  strategy: Strategy.parse(strategy),
});
/** canary web-1, batch 1: web-2 web-3, batch 2: web-4; web-5 skipped. */
const plan = { 0: ["web-1"], 1: ["web-2", "web-3"], 2: ["web-4"] } as const;
const skipped: SkippedHost[] = [{ hostId: "web-5", reason: "already at 2.1.0" }];

const ev = {
  requested: (strategy: StrategyInput = {}, requestHash = HASH): DeploymentEventBody => ({ type: "DeploymentRequested", data: requestData(strategy, requestHash) }),
  part: (part = 0, planId = "p1"): DeploymentEventBody => ({
    type: "PlanPartRecorded",
    data: { deploymentId: D, planId, part, batches: Object.entries(plan).map(([i, hs]) => ({ index: Number(i), hosts: hs.map(host) })), skipped },
  }),
  planned: (planId = "p1"): DeploymentEventBody => ({
    type: "DeploymentPlanned",
    data: {
      deploymentId: D,
      planId,
      parts: 1,
      packages,
      batches: [
        { index: 0, kind: "canary", size: 1 },
        { index: 1, kind: "batch", size: 2 },
        { index: 2, kind: "batch", size: 1 },
      ],
      skipped: 1,
    },
  }),
  started: (index: number): DeploymentEventBody => ({ type: "BatchStarted", data: { deploymentId: D, index } }),
  assigned: (batch: number, hosts: string[], attempt = 1): DeploymentEventBody => ({ type: "HostsAssigned", data: { deploymentId: D, attempt, batch, hosts } }),
  outcome: (hostId: string, outcome: "succeeded" | "failed" | "busy" | "timed-out" | "skipped" | "cancelled", attempt = 1): DeploymentEventBody => ({
    type: "HostOutcomeRecorded",
    data: { deploymentId: D, hostId, attempt, outcome },
  }),
  completed: (index: number, succeeded: number, failed = 0, when = at(0)): DeploymentEventBody => ({
    type: "BatchCompleted",
    data: { deploymentId: D, index, succeeded, failed, at: when },
  }),
  paused: (): DeploymentEventBody => ({ type: "DeploymentPaused", data: { deploymentId: D, reason: "looking" } }),
  resumed: (): DeploymentEventBody => ({ type: "DeploymentResumed", data: { deploymentId: D } }),
  braked: (failed = 1, finished = 1): DeploymentEventBody => ({ type: "DeploymentBraked", data: { deploymentId: D, failed, finished, threshold: 0.1 } }),
  awaiting: (index: number): DeploymentEventBody => ({ type: "CanaryAwaitingApproval", data: { deploymentId: D, index } }),
  approved: (): DeploymentEventBody => ({ type: "CanaryApproved", data: { deploymentId: D } }),
  cancelled: (): DeploymentEventBody => ({ type: "DeploymentCancelled", data: { deploymentId: D, reason: "operator" } }),
  retried: (attempt: number, index: number, hosts: number): DeploymentEventBody => ({ type: "DeploymentRetried", data: { deploymentId: D, attempt, index, hosts } }),
};

const cmd = {
  request: (strategy: StrategyInput = {}, requestHash = HASH): DeploymentCommand => ({ type: "RequestDeployment", data: requestData(strategy, requestHash) }),
  part: (part = 0, planId = "p1"): DeploymentCommand => {
    const { deploymentId: _d, ...data } = (ev.part(part, planId) as Extract<DeploymentEventBody, { type: "PlanPartRecorded" }>).data;
    return { type: "RecordPlanPart", data };
  },
  seal: (planId = "p1", parts = 1): DeploymentCommand => {
    const { deploymentId: _d, ...data } = (ev.planned(planId) as Extract<DeploymentEventBody, { type: "DeploymentPlanned" }>).data;
    return { type: "SealPlan", data: { ...data, parts } };
  },
  start: (index: number): DeploymentCommand => ({ type: "StartBatch", data: { index } }),
  assign: (batch: number, from: number, hosts: string[]): DeploymentCommand => ({ type: "AssignHosts", data: { batch, from, hosts } }),
  outcome: (hostId: string, outcome: "succeeded" | "failed", attempt = 1): DeploymentCommand => ({ type: "RecordHostOutcome", data: { outcomes: [{ hostId, attempt, outcome }] } }),
  complete: (index: number): DeploymentCommand => ({ type: "CompleteBatch", data: { index, at: at(0) } }),
  cancel: (commandKey?: string): DeploymentCommand => ({ type: "CancelDeployment", data: { reason: "operator", ...(commandKey ? { commandKey } : {}) } }),
  pause: (commandKey?: string): DeploymentCommand => ({ type: "PauseDeployment", data: { reason: "looking", ...(commandKey ? { commandKey } : {}) } }),
  resume: (): DeploymentCommand => ({ type: "ResumeDeployment", data: {} }),
  approve: (): DeploymentCommand => ({ type: "ApproveCanary", data: {} }),
  retry: (): DeploymentCommand => ({ type: "RetryDeployment", data: {} }),
};

const deployment = given(deploymentDecider);
const fold = (events: readonly DeploymentEventBody[]) => events.reduce(evolveDeployment, initialDeploymentState());
const planned = (strategy: StrategyInput = {}) => [ev.requested(strategy), ev.part(), ev.planned()];
const canaryRunning = (strategy: StrategyInput = {}) => [...planned(strategy), ev.started(0), ev.assigned(0, ["web-1"])];
const canaryDone = (strategy: StrategyInput = {}) => [...canaryRunning(strategy), ev.outcome("web-1", "succeeded"), ev.completed(0, 1)];
const next = (events: DeploymentEventBody[], now = at(0)) => {
  const s = fold(events);
  return nextCommands(s, s.strategy, now);
};

describe("deployment decider: request and plan [roll-engine]", () => {
  it("[roll-engine] a new request records DeploymentRequested; the same again is a no-op; another body with the key is 422", () => {
    deployment([]).when(cmd.request()).then([ev.requested()]);
    deployment([ev.requested()]).when(cmd.request()).then([]);
    deployment([ev.requested()]).when(cmd.request({}, "c".repeat(64))).thenThrows(IdempotencyMismatchError);
  });

  it("[roll-engine] plan parts are recorded once per plan id and part; planning before a request throws NotFoundError", () => {
    deployment([ev.requested()]).when(cmd.part()).then([ev.part()]);
    deployment([ev.requested(), ev.part()]).when(cmd.part()).then([]);
    deployment([]).when(cmd.part()).thenThrows(NotFoundError);
  });

  it("[roll-engine] the seal needs every part of its plan id; a re-plan's parts replace an older plan's", () => {
    deployment([ev.requested(), ev.part()]).when(cmd.seal()).then([ev.planned()]);
    deployment([ev.requested(), ev.part()]).when(cmd.seal("p1", 2)).thenThrows(ConflictError);
    deployment([ev.requested(), ev.part(0, "p1"), ev.part(0, "p2")]).when(cmd.seal("p1")).thenThrows(ConflictError);
    const s = fold([ev.requested(), ev.part(0, "p1"), ev.part(0, "p2"), ev.planned("p2")]);
    expect(s.hostIndex.size).toBe(4);
    expect(s.skipped).toEqual(skipped);
    deployment([...planned()]).when(cmd.seal()).then([]);
  });

  it("[roll-engine] a plan with every host skipped fails with the reasons unless the request allows an empty plan", () => {
    const empty = (allowEmpty: boolean): DeploymentEventBody[] => [
      { type: "DeploymentRequested", data: { ...requestData(), allowEmpty } },
      { type: "PlanPartRecorded", data: { deploymentId: D, planId: "e", part: 0, batches: [], skipped } },
    ];
    const seal: DeploymentCommand = { type: "SealPlan", data: { planId: "e", parts: 1, packages: {}, batches: [], skipped: 1 } };
    const decided = decideDeployment(seal, fold(empty(false)));
    expect(decided.map((e) => e.type)).toEqual(["DeploymentPlanned", "DeploymentFailed"]);
    expect(decided[1]?.type === "DeploymentFailed" && decided[1].data.reason).toContain("web-5: already at 2.1.0");
    expect(decideDeployment(seal, fold(empty(true))).map((e) => e.type)).toEqual(["DeploymentPlanned", "DeploymentCompleted"]);
  });

  it("[roll-engine] planning a cancelled deployment throws IllegalStateError", () => {
    deployment([ev.requested(), ev.cancelled()]).when(cmd.part()).thenThrows(IllegalStateError);
  });
});

describe("deployment decider: batches, assignments and outcomes [roll-engine]", () => {
  it("[roll-engine] the first batch starts; again is a no-op; an unknown batch is a ValidationError", () => {
    deployment(planned()).when(cmd.start(0)).then([ev.started(0)]);
    deployment([...planned(), ev.started(0)]).when(cmd.start(0)).then([]);
    deployment(planned()).when(cmd.start(9)).thenThrows(ValidationError);
  });

  it("[roll-engine] a batch does not start before the previous one completed, nor while paused or braked", () => {
    deployment(canaryRunning()).when(cmd.start(1)).thenThrows(IllegalStateError, /batch 0 has not completed/);
    deployment([...planned(), ev.paused()]).when(cmd.start(0)).thenThrows(IllegalStateError);
    deployment([...canaryDone(), ev.braked()]).when(cmd.start(1)).thenThrows(IllegalStateError, /braked/);
  });

  it("[roll-engine] hosts are assigned from the batch's cursor; the same decision again is a no-op", () => {
    deployment([...planned(), ev.started(0)]).when(cmd.assign(0, 0, ["web-1"])).then([ev.assigned(0, ["web-1"])]);
    deployment(canaryRunning()).when(cmd.assign(0, 0, ["web-1"])).then([]);
    deployment([...planned(), ev.started(0)]).when(cmd.assign(0, 0, ["web-2"])).thenThrows(ValidationError);
  });

  it("[roll-engine] an outcome is recorded once per host and attempt; late news of another attempt changes nothing", () => {
    deployment(canaryRunning()).when(cmd.outcome("web-1", "succeeded")).then([ev.outcome("web-1", "succeeded")]);
    deployment([...canaryRunning(), ev.outcome("web-1", "succeeded")]).when(cmd.outcome("web-1", "failed")).then([]);
    deployment(canaryRunning()).when(cmd.outcome("web-1", "failed", 2)).then([]);
    deployment(canaryRunning()).when(cmd.outcome("web-9", "failed")).then([]);
    const twice: DeploymentCommand = { type: "RecordHostOutcome", data: { outcomes: [{ hostId: "web-1", attempt: 1, outcome: "succeeded" }, { hostId: "web-1", attempt: 1, outcome: "failed" }] } };
    deployment(canaryRunning()).when(twice).then([ev.outcome("web-1", "succeeded")]);
  });

  it("[roll-engine] a batch completes from its counters, with them; not while a host is unfinished", () => {
    deployment([...canaryRunning(), ev.outcome("web-1", "failed")]).when(cmd.complete(0)).then([ev.completed(0, 0, 1)]);
    deployment(canaryRunning()).when(cmd.complete(0)).thenThrows(IllegalStateError, /not finished/);
    deployment(canaryDone()).when(cmd.complete(0)).then([]);
  });

  it("[roll-engine] the in-flight count follows assignments and outcomes; inFlightHosts names them with their attempt", () => {
    const s = fold([...canaryDone(), ev.started(1), ev.assigned(1, ["web-2", "web-3"]), ev.outcome("web-2", "succeeded")]);
    expect(s.inFlight).toBe(1);
    expect(inFlightHosts(s)).toEqual([{ hostId: "web-3", attempt: 1 }]);
  });
});

describe("nextCommands: the roll engine's rules [roll-engine]", () => {
  it("[roll-engine] a planned deployment starts its first batch, then assigns its hosts", () => {
    expect(next(planned()).command).toEqual({ type: "StartBatch", data: { index: 0 } });
    expect(next([...planned(), ev.started(0)]).command).toEqual({ type: "AssignHosts", data: { batch: 0, from: 0, hosts: ["web-1"] } });
  });

  it("[roll-engine] never more than maxUnavailable in flight: 25 % of 4 hosts is one at a time", () => {
    const running = [...canaryDone(), ev.started(1), ev.assigned(1, ["web-2"])];
    expect(next(running).command).toBeNull();
    expect(next([...running, ev.outcome("web-2", "succeeded")]).command).toEqual({ type: "AssignHosts", data: { batch: 1, from: 1, hosts: ["web-3"] } });
  });

  it("[roll-engine] maxUnavailable in hosts, and the per-deployment cap on top of it", () => {
    const wide = { maxUnavailable: { hosts: 2 } };
    expect(next([...canaryDone(wide), ev.started(1)]).command).toMatchObject({ type: "AssignHosts", data: { hosts: ["web-2", "web-3"] } });
    const capped = { maxUnavailable: { hosts: 2 }, concurrency: 1 };
    expect(next([...canaryDone(capped), ev.started(1)]).command).toMatchObject({ type: "AssignHosts", data: { hosts: ["web-2"] } });
  });

  it("[roll-engine] a batch whose hosts all finished completes, stamped with the time of the event handled", () => {
    expect(next([...canaryRunning(), ev.outcome("web-1", "succeeded")], at(5)).command).toEqual({ type: "CompleteBatch", data: { index: 0, at: at(5) } });
  });

  it("[roll-engine] a canary with approval waits: AwaitApproval once, nothing more until approved, then the next batch", () => {
    const approval = { canary: { size: { hosts: 1 }, approval: true } };
    expect(next(canaryDone(approval)).command).toEqual({ type: "AwaitApproval", data: { index: 0 } });
    expect(next([...canaryDone(approval), ev.awaiting(0)]).command).toBeNull();
    expect(next([...canaryDone(approval), ev.awaiting(0), ev.approved()]).command).toEqual({ type: "StartBatch", data: { index: 1 } });
    expect(next(canaryDone()).command).toEqual({ type: "StartBatch", data: { index: 1 } });
  });

  it("[roll-engine] the pause between batches: wake at its end, start once it passed; shorter from the third batch on", () => {
    const paused = { pauseMs: 60_000, pauseFromThirdMs: 10_000 };
    const step = next(canaryDone(paused), at(1_000));
    expect(step).toEqual({ command: null, wakeAt: at(60_000) });
    expect(next(canaryDone(paused), at(60_000)).command).toEqual({ type: "StartBatch", data: { index: 1 } });
    const secondDone = [...canaryDone(paused), ev.started(1), ev.assigned(1, ["web-2", "web-3"]), ev.outcome("web-2", "succeeded"), ev.outcome("web-3", "succeeded"), ev.completed(1, 2, 0, at(100_000))];
    expect(next(secondDone, at(101_000))).toEqual({ command: null, wakeAt: at(110_000) });
  });

  it("[roll-engine] the brake: failed / finished above the threshold once the minimum finished, then nothing is assigned", () => {
    const brake = { maxUnavailable: { hosts: 1 }, brake: { threshold: 0.1, minFinished: 2 } };
    const oneFailed = [...canaryRunning(brake), ev.outcome("web-1", "failed")];
    expect(next(oneFailed).command?.type).toBe("CompleteBatch");
    const twoFinished = [...oneFailed, ev.completed(0, 0, 1), ev.started(1), ev.assigned(1, ["web-2"]), ev.outcome("web-2", "succeeded")];
    expect(next(twoFinished).command).toEqual({ type: "BrakeDeployment", data: { failed: 1, finished: 2, threshold: 0.1 } });
    expect(next([...twoFinished, ev.braked(1, 2)]).command).toBeNull();
  });

  it("[roll-engine] a braked batch whose in-flight hosts finish still completes", () => {
    const brake = { maxUnavailable: { hosts: 2 }, brake: { threshold: 0.1, minFinished: 1 } };
    const s = [...canaryDone(brake), ev.started(1), ev.assigned(1, ["web-2", "web-3"]), ev.outcome("web-2", "failed"), ev.braked(1, 2), ev.outcome("web-3", "succeeded")];
    expect(next(s).command?.type).toBe("CompleteBatch");
  });

  it("[roll-engine] nothing is decided while paused, cancelled or finished; after the last batch the deployment completes", () => {
    expect(next([...planned(), ev.paused()]).command).toBeNull();
    expect(next([...planned(), ev.cancelled()]).command).toBeNull();
    const all = [
      ...canaryDone({ maxUnavailable: { hosts: 2 } }),
      ev.started(1),
      ev.assigned(1, ["web-2", "web-3"]),
      ev.outcome("web-2", "succeeded"),
      ev.outcome("web-3", "failed"),
      ev.completed(1, 1, 1),
      ev.started(2),
      ev.assigned(2, ["web-4"]),
      ev.outcome("web-4", "succeeded"),
      ev.completed(2, 1),
    ];
    expect(next(all).command).toEqual({ type: "CompleteDeployment", data: {} });
    expect(decideDeployment({ type: "CompleteDeployment", data: {} }, fold(all))).toEqual([
      { type: "DeploymentCompleted", data: { deploymentId: D, succeeded: 3, failed: 1, skipped: 1 } },
    ]);
  });
});

describe("deployment decider: operator commands [roll-engine]", () => {
  it("[roll-engine] pause, resume and cancel; again is a no-op; a finished deployment cannot (409 with the state)", () => {
    deployment(planned()).when(cmd.pause()).then([ev.paused()]);
    deployment([...planned(), ev.paused()]).when(cmd.pause()).then([]);
    deployment([...planned(), ev.paused()]).when(cmd.resume()).then([ev.resumed()]);
    deployment(planned()).when(cmd.resume()).then([]);
    deployment(planned()).when(cmd.cancel()).then([ev.cancelled()]);
    deployment([...planned(), ev.cancelled()]).when(cmd.cancel()).then([]);
    deployment([...planned(), ev.cancelled()]).when(cmd.pause()).thenThrows(IllegalStateError, /is cancelled/);
    deployment([...planned(), ev.cancelled()]).when(cmd.resume()).thenThrows(IllegalStateError, /is cancelled/);
  });

  it("[roll-engine] approve only when a canary awaits approval; otherwise 409 naming the state", () => {
    const approval = { canary: { size: { hosts: 1 }, approval: true } };
    deployment([...canaryDone(approval), ev.awaiting(0)]).when(cmd.approve()).then([ev.approved()]);
    deployment(canaryDone()).when(cmd.approve()).thenThrows(IllegalStateError, /nothing awaits approval/);
    deployment([...canaryDone(approval), ev.awaiting(0), ev.approved()]).when(cmd.approve()).thenThrows(IllegalStateError);
  });

  it("[roll-engine] an idempotency key seen in the history replays as a no-op; the key for another command is a mismatch", () => {
    deployment([...planned(), { type: "DeploymentPaused", data: { deploymentId: D, reason: "looking", commandKey: "k1" } }, ev.resumed()])
      .when(cmd.pause("k1"))
      .then([]);
    deployment([...planned(), { type: "DeploymentPaused", data: { deploymentId: D, commandKey: "k1" } }]).when(cmd.cancel("k1")).thenThrows(IdempotencyMismatchError);
  });

  it("[roll-engine] retry: the failed (and busy) hosts become one more batch with the next attempt, and the brake is released", () => {
    const failed = [...canaryRunning(), ev.outcome("web-1", "failed"), ev.completed(0, 0, 1), ev.braked()];
    deployment(failed).when(cmd.retry()).then([ev.retried(2, 3, 1)]);
    const s = fold([...failed, ev.retried(2, 3, 1)]);
    expect(s.braked).toBeNull();
    expect(s.attempt).toBe(2);
    expect(s.batches.at(-1)).toMatchObject({ index: 3, kind: "retry", hosts: ["web-1"] });
    deployment(canaryDone()).when(cmd.retry()).thenThrows(IllegalStateError, /nothing to retry/);
    deployment([...failed, ev.cancelled()]).when(cmd.retry()).thenThrows(IllegalStateError);
  });

  it("[roll-engine] a retry is not braked again by the failures it runs again: the brake counts from the retry on", () => {
    const brake = { maxUnavailable: { hosts: 4 }, brake: { threshold: 0.1, minFinished: 1 } };
    const failed = [...canaryRunning(brake), ev.outcome("web-1", "failed"), ev.braked(1, 1), ev.completed(0, 0, 1)];
    expect(next(failed).command).toBeNull();
    expect(next([...failed, ev.retried(2, 3, 1)]).command).toEqual({ type: "StartBatch", data: { index: 1 } });
  });

  it("[roll-engine] a host a retry skips (at the target already) finishes its batch as neither succeeded nor failed, and counts as skipped", () => {
    const strategy = { maxUnavailable: { hosts: 4 } };
    const firstRun = [
      ...canaryRunning(strategy),
      ev.outcome("web-1", "failed"),
      ev.completed(0, 0, 1),
      ev.started(1),
      ev.assigned(1, ["web-2", "web-3"]),
      ev.outcome("web-2", "succeeded"),
      ev.outcome("web-3", "succeeded"),
      ev.completed(1, 2),
      ev.started(2),
      ev.assigned(2, ["web-4"]),
      ev.outcome("web-4", "succeeded"),
      ev.completed(2, 1),
    ];
    const skipped = [...firstRun, ev.retried(2, 3, 1), ev.started(3), ev.assigned(3, ["web-1"], 2), ev.outcome("web-1", "skipped", 2)];
    expect(next(skipped).command).toEqual({ type: "CompleteBatch", data: { index: 3, at: at(0) } });
    const done = [...skipped, ev.completed(3, 0, 0)];
    expect(next(done).command).toEqual({ type: "CompleteDeployment", data: {} });
    deployment(done)
      .when({ type: "CompleteDeployment", data: {} })
      .then([{ type: "DeploymentCompleted", data: { deploymentId: D, succeeded: 3, failed: 0, skipped: 2 } }]);
    // Nothing left to retry: a skip is not a failure.
    deployment(done).when(cmd.retry()).thenThrows(IllegalStateError, /nothing to retry/);
  });

  it("[roll-engine] hosts withdrawn before allocation (outcome cancelled, the deployment braked) are run again by a retry", () => {
    const braked = [...canaryRunning({ maxUnavailable: { hosts: 4 } }), ev.braked(), ev.outcome("web-1", "cancelled")];
    deployment(braked).when(cmd.retry()).then([ev.retried(2, 3, 1)]);
  });

  it("[roll-engine] a retried host is assigned with the new attempt; an old attempt's late outcome does not count", () => {
    const failed = [...canaryRunning({ maxUnavailable: { hosts: 4 } }), ev.outcome("web-1", "failed"), ev.completed(0, 0, 1)];
    const retried = [...failed, ev.retried(2, 3, 1)];
    // Batches 1 and 2 still come first, then the retry batch.
    expect(next(retried).command).toEqual({ type: "StartBatch", data: { index: 1 } });
    const s = fold(retried);
    expect(s.hostIndex.get("web-1")).toMatchObject({ batch: 3, attempt: 0, outcome: null });
    deployment(retried).when(cmd.outcome("web-1", "succeeded", 1)).then([]);
  });
});

describe("deployment state [roll-engine]", () => {
  it("[roll-engine] isTerminal holds for completed, failed and cancelled only", () => {
    expect(isTerminal(fold(planned()))).toBe(false);
    expect(isTerminal(fold([...planned(), ev.cancelled()]))).toBe(true);
  });

  it("[roll-engine] every event the deployment decides is a valid contracts DeploymentEvent", () => {
    const decided = [
      ...decideDeployment(cmd.request(), fold([])),
      ...decideDeployment(cmd.part(), fold([ev.requested()])),
      ...decideDeployment(cmd.seal(), fold([ev.requested(), ev.part()])),
      ...decideDeployment(cmd.assign(0, 0, ["web-1"]), fold([...planned(), ev.started(0)])),
      ...decideDeployment(cmd.outcome("web-1", "failed"), fold(canaryRunning())),
      ...decideDeployment(cmd.retry(), fold([...canaryRunning(), ev.outcome("web-1", "failed")])),
    ];
    const meta = { now: T0, actor: "test", correlationId: "c" };
    for (const e of toEnvelopes(decided, meta, "commit")) expect(DeploymentEvent.safeParse(e).success, e.type).toBe(true);
  });
});
