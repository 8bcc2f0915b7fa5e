import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { subjects, type MoltEvent } from "@molt/contracts";
import { createEventStore, type EventStore } from "@molt/event-store";
import { startNatsServer, startProcess, startSystem, waitFor, type SecureNatsServer, type RunningProcess, type System } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { COMPONENT, doubleActive, downloadRequests, history, maxInFlight, operatorApi, simIds, teardown } from "./harness.js";

/**
 * The roll engine end to end: every service a process, 60 simulated hosts in two processes
 * (40 labelled cluster=eu-1, 20 cluster=us-1), each step taking at least STEP_MS.
 */
const OPERATOR = "operator-token-roll-00001";
const STEP_MS = 120;
const EU = simIds("eu-", 40);
const US = simIds("us-", 20);
const ALL = [...EU, ...US];

let nats: SecureNatsServer;
let nc: NatsConnection;
let store: EventStore;
let system: System;
let dataDir: string;
let faultFile: string;
let usSim: RunningProcess | undefined;
const op = operatorApi(() => system, OPERATOR);
let h: ReturnType<typeof history>;

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "molt-roll-"));
  faultFile = join(dataDir, "fault.json");
  nats = await startNatsServer({ secure: true });
  nc = await nats.bus.connect("admin");
  store = createEventStore(nc);
  h = history(store);
  const timings = { MOLT_HEARTBEAT_MS: "500", MOLT_POLL_MS: "1000", MOLT_RETRY_DELAY_MS: "100", MOLT_ACK_WAIT_MS: "3000", MOLT_SIM_FAULT_FILE: faultFile };
  system = await startSystem({
    nats,
    dataDir,
    tokens: { [OPERATOR]: { actor: "otto", role: "operator" } },
    allocatorReplicas: 2,
    sim: { count: 40, prefix: "eu-", seed: `${COMPONENT}@1.0.0`, stepDelayMs: STEP_MS },
    env: { ...timings, MOLT_LABELS: "cluster=eu-1" },
  });
  // A second simulator process, so the two clusters carry different labels.
  usSim = await startProcess(
    "agent-sim-us",
    "agent",
    { ...(await nats.bus.env("sim")), ...timings, MOLT_SIM: "20", MOLT_SIM_PREFIX: "us-", MOLT_SEED: `${COMPONENT}@1.0.0`, MOLT_SIM_STEP_DELAY_MS: String(STEP_MS), MOLT_LABELS: "cluster=us-1", MOLT_ROOT: join(dataDir, "sim-us") },
    join(dataDir, "logs"),
    /simulated hosts started/,
  );
  await waitFor("60 hosts registered", async () => {
    for (const id of ALL) if (!(await store.readLast(subjects.hostMeta(id)))) return undefined;
    return true;
  }, { timeoutMs: 60_000 });
  for (const v of ["2.0.0", "3.0.0", "4.0.0", "5.0.0", "6.0.0"]) await op.upload(v);
}, 180_000);

afterAll(() => teardown({ extra: usSim ? [usSim] : [], system, nc, nats, dataDir }));

describe("roll engine with 60 simulated hosts", () => {
  it("[roll-engine] a selector picks exactly its hosts; the canary of 1 waits for approval; in flight never exceeds maxUnavailable or the cap; pause holds the batch; resume completes", async () => {
    const strategy = { canary: { size: { hosts: 1 }, approval: true }, maxUnavailable: { hosts: 8 }, concurrency: 5 };
    const id = await op.deploy({ version: "2.0.0", selector: { cluster: "eu-1" }, strategy }, "sel-1");

    const awaiting = await h.waitFor(id, "CanaryAwaitingApproval");
    const early = await h.events(id);
    const planned = early.flatMap(({ e }) => (e.type === "PlanPartRecorded" ? e.data.batches.flatMap((b) => b.hosts.map((x) => x.hostId)) : []));
    expect(planned.sort()).toEqual([...EU].sort());
    expect(early.filter(({ e }) => e.type === "HostsAssigned").flatMap(({ e }) => (e.type === "HostsAssigned" ? e.data.hosts : []))).toHaveLength(1);
    expect(early.some(({ e }) => e.type === "BatchStarted" && e.data.index === 1)).toBe(false);
    expect(awaiting.e.type === "CanaryAwaitingApproval" && awaiting.e.data.index).toBe(0);

    await op.command(id, "approve");
    // Pause once a few hosts of the first batch have finished: the batch must hold still.
    await waitFor("three hosts of batch 1 finished", async () => ((await h.events(id)).filter(({ e }) => e.type === "HostOutcomeRecorded").length >= 4 ? true : undefined), { timeoutMs: 30_000 });
    await op.command(id, "pause");
    const paused = await h.waitFor(id, "DeploymentPaused");
    await waitFor("in-flight hosts finished while paused", async () => {
      const ev = await h.events(id);
      const assigned = ev.flatMap(({ e }) => (e.type === "HostsAssigned" ? e.data.hosts : [])).length;
      const done = ev.filter(({ e }) => e.type === "HostOutcomeRecorded").length;
      return assigned === done ? true : undefined;
    }, { timeoutMs: 30_000 });
    const whilePaused = await h.events(id);
    expect(whilePaused.filter(({ seq, e }) => e.type === "HostsAssigned" && seq > paused.seq)).toEqual([]);
    expect(whilePaused.some(({ e }) => e.type === "DeploymentCompleted")).toBe(false);

    await op.command(id, "resume");
    const done = await h.waitFor(id, "DeploymentCompleted", 60_000);
    expect(done.e.type === "DeploymentCompleted" && done.e.data).toMatchObject({ succeeded: 40, failed: 0 });

    const commits = await h.slotCommits();
    expect(maxInFlight(commits, id)).toBeLessThanOrEqual(5);
    expect(maxInFlight(commits, id)).toBeGreaterThan(1);
    for (const host of EU) expect((await h.slot(host))?.version).toBe("2.0.0");
    for (const host of US) expect((await h.slot(host))?.version ?? null).toBeNull();
  }, 120_000);

  it("[roll-engine] cancel acts within the batch: nothing assigned after it, tasks not yet running withdrawn, the deployment ends cancelled", async () => {
    const id = await op.deploy({ version: "3.0.0", hosts: ALL, strategy: { maxUnavailable: { hosts: 12 } } }, "cancel-1");
    await waitFor("a few hosts finished", async () => ((await h.events(id)).filter(({ e }) => e.type === "HostOutcomeRecorded").length >= 3 ? true : undefined), { timeoutMs: 30_000 });
    await op.command(id, "cancel");
    const cancelled = await h.waitFor(id, "DeploymentCancelled");
    const assigned = new Set<string>();
    await waitFor("every assigned host finished or was withdrawn", async () => {
      const ev = await h.events(id);
      assigned.clear();
      for (const { e } of ev) if (e.type === "HostsAssigned") for (const x of e.data.hosts) assigned.add(x);
      for (const host of assigned) if ((await h.slot(host))?.active?.deploymentId === id) return undefined;
      return true;
    }, { timeoutMs: 30_000 });
    const ev = await h.events(id);
    expect(ev.filter(({ seq, e }) => e.type === "HostsAssigned" && seq > cancelled.seq)).toEqual([]);
    expect(assigned.size).toBeLessThan(ALL.length);
    expect(ev.some(({ e }) => e.type === "DeploymentCompleted")).toBe(false);
    const view = await op.api<{ deployment: { state: string } }>("GET", `/v1/deployments/${id}`);
    expect(view.body.deployment.state).toBe("cancelled");
    // A running client whose key was withdrawn before OVERRIDE was stopped by its agent: its task
    // failed as cancelled and never started OVERRIDE; none of the stopped ones switched files.
    const tasks = new Map<string, MoltEvent[]>();
    for (const c of await h.slotCommits())
      for (const e of c.commit.events) {
        const taskId = "taskId" in e.data ? e.data.taskId : undefined;
        if (e.type === "TaskAllocated" && e.data.deploymentId === id) tasks.set(e.data.taskId, []);
        if (taskId !== undefined && tasks.has(taskId)) tasks.get(taskId)!.push(e);
      }
    const stopped = [...tasks.values()].filter((es) => es.some((e) => e.type === "TaskFailed" && /cancel|withdrawn/i.test(e.data.reason)));
    const notStarted = [...tasks.values()].filter((es) => es.some((e) => e.type === "TaskCancelled"));
    // Which of the two a task in flight gets depends on where it was at the cancel (timing).
    expect(stopped.length + notStarted.length, "tasks in flight withdrawn by the cancel").toBeGreaterThan(0);
    for (const es of stopped) expect(es.some((e) => e.type === "TaskStepStarted" && e.data.step === "override")).toBe(false);
  }, 90_000);

  it("[roll-engine] brake at 30 % DOWNLOAD failures (threshold 10 %): nothing assigned after the brake, in-flight finish; retry after the fault is cleared completes; rollback returns each host to its own version with no download", async () => {
    const failing = US.slice(0, 6);
    await writeFile(faultFile, JSON.stringify({ hosts: failing, step: "download", message: "injected: mirror down" }));
    const before = new Map(await Promise.all(US.map(async (x) => [x, (await h.slot(x))?.version ?? "1.0.0"] as const)));
    const id = await op.deploy({ version: "4.0.0", hosts: US, strategy: { maxUnavailable: { hosts: 4 }, brake: { threshold: 0.1, minFinished: 3 } } }, "brake-1");
    const braked = await h.waitFor(id, "DeploymentBraked");
    await waitFor("in-flight hosts finished after the brake", async () => {
      const ev = await h.events(id);
      const assigned = ev.flatMap(({ e }) => (e.type === "HostsAssigned" ? e.data.hosts : [])).length;
      return assigned === ev.filter(({ e }) => e.type === "HostOutcomeRecorded").length ? ev : undefined;
    }, { timeoutMs: 30_000 });
    const ev = await h.events(id);
    expect(ev.filter(({ seq, e }) => e.type === "HostsAssigned" && seq > braked.seq)).toEqual([]);
    const assignedBefore = new Set(ev.flatMap(({ seq, e }) => (e.type === "HostsAssigned" && seq < braked.seq ? e.data.hosts : [])));
    expect(assignedBefore.size).toBeLessThan(US.length);
    // A task allocated after the brake event can only be one whose host was assigned before it.
    const commits = await h.slotCommits();
    const lateAllocations = commits.filter((c) => c.seq > braked.seq).flatMap((c) => c.commit.events).filter((e) => e.type === "TaskAllocated" && e.data.deploymentId === id);
    for (const e of lateAllocations) expect(e.type === "TaskAllocated" && assignedBefore.has(e.data.hostId)).toBe(true);
    expect(ev.some(({ e }) => e.type === "HostOutcomeRecorded" && e.data.outcome === "failed")).toBe(true);

    await rm(faultFile);
    await op.command(id, "retry");
    const done = await h.waitFor(id, "DeploymentCompleted", 60_000);
    expect(done.e.type === "DeploymentCompleted" && done.e.data.failed).toBe(0);
    for (const host of US) expect((await h.slot(host))?.version).toBe("4.0.0");
    const attempts = (await h.slotCommits()).flatMap((c) => c.commit.events).filter((e) => e.type === "TaskAllocated" && e.data.deploymentId === id);
    expect(attempts.some((e) => e.type === "TaskAllocated" && e.data.attempt === 2)).toBe(true);

    const repo = system.processes.find((p) => p.name === "package-repo")!;
    const downloadsBefore = await downloadRequests(repo.logFile);
    expect(downloadsBefore).toBeGreaterThan(0);
    const rollback = (await op.command(id, "rollback", "rb-1")).deploymentId;
    await h.waitFor(rollback, "DeploymentCompleted", 60_000);
    const rolled = await h.events(rollback);
    const why = (host: string) => JSON.stringify(rolled.filter(({ e }) => JSON.stringify(e.data).includes(`"${host}"`)).map(({ e }) => [e.type, "outcome" in e.data ? e.data : undefined]));
    for (const host of US) expect((await h.slot(host))?.version, `${host}: ${why(host)}`).toBe(before.get(host));
    const rollbackTasks = (await h.slotCommits()).flatMap((c) => c.commit.events).filter((e) => e.type === "TaskAllocated" && e.data.deploymentId === rollback);
    expect(rollbackTasks).toHaveLength(US.length);
    for (const e of rollbackTasks) expect(e.type === "TaskAllocated" && [e.data.kind, e.data.package]).toEqual(["rollback", undefined]);
    expect(await downloadRequests(repo.logFile)).toBe(downloadsBefore);
  }, 150_000);

  it("[roll-engine] two deployments racing for the same hosts never give a slot two active tasks", async () => {
    const strategy = { maxUnavailable: { hosts: 10 } };
    const [a, b] = await Promise.all([op.deploy({ version: "5.0.0", hosts: EU, strategy }, "race-a"), op.deploy({ version: "6.0.0", hosts: EU, strategy }, "race-b")]);
    await Promise.all([h.waitFor(a, "DeploymentCompleted", 60_000), h.waitFor(b, "DeploymentCompleted", 60_000)]);
    expect(doubleActive(await h.slotCommits())).toEqual([]);
    const outcomes = [...(await h.events(a)), ...(await h.events(b))].flatMap(({ e }) => (e.type === "HostOutcomeRecorded" ? [e.data.outcome] : []));
    expect(outcomes.filter((o) => o === "busy").length).toBeGreaterThan(0);
  }, 90_000);

  it("[roll-engine] plan preview: dryRun answers the plan and records nothing; an all-skipped plan is 422 with the reasons unless allowEmpty; a quarantined host is skipped until cleared", async () => {
    const before = await store.lastSequence();
    const dry = await op.api<{ dryRun: boolean; plan: { planned: number; batches: Array<{ kind: string; size: number }>; skipped: number } }>(
      "POST",
      "/v1/deployments?dryRun=true",
      { component: COMPONENT, version: "7.0.0", selector: { cluster: "us-1" }, strategy: { canary: { size: { hosts: 2 } }, maxUnavailable: { percent: 25 } } },
    );
    expect(dry.status, JSON.stringify(dry.body)).toBe(200);
    // 7.0.0 is not published: every host is skipped for want of a package.
    expect(dry.body.plan).toMatchObject({ planned: 0, skipped: 20 });
    await op.upload("7.0.0");
    const dry2 = await op.api<{ plan: { planned: number; batches: Array<{ kind: string; size: number }> } }>("POST", "/v1/deployments?dryRun=true", {
      component: COMPONENT,
      version: "7.0.0",
      selector: { cluster: "us-1" },
      strategy: { canary: { size: { hosts: 2 } }, maxUnavailable: { percent: 25 } },
    });
    expect(dry2.body.plan.planned).toBe(20);
    expect(dry2.body.plan.batches[0]).toMatchObject({ kind: "canary", size: 2 });
    expect(dry2.body.plan.batches.reduce((n, b) => n + b.size, 0)).toBe(20);
    // Only the upload above was recorded: a dry run appends nothing to the event store.
    const events = (await store.read("molt.es.deployment.>", { fromSeq: before + 1 })).length;
    expect(events).toBe(0);

    const empty = await op.api<{ error: { code: string; message: string } }>("POST", "/v1/deployments", { component: COMPONENT, version: "7.0.0", hosts: ["nobody.example.com"] }, { "idempotency-key": "empty-1" });
    expect(empty.status).toBe(422);
    expect(empty.body.error.code).toBe("empty_plan");
    expect(empty.body.error.message).toContain("nobody.example.com: not registered");
    const allowed = await op.deploy({ version: "7.0.0", hosts: ["nobody.example.com"], allowEmpty: true }, "empty-2");
    await h.waitFor(allowed, "DeploymentCompleted");

    const drained = US[0]!;
    const q = await op.api<{ quarantined: boolean }>("POST", `/v1/hosts/${drained}/quarantine`, { component: COMPONENT, reason: "disk replaced" });
    expect(q.status, JSON.stringify(q.body)).toBe(200);
    expect(q.body.quarantined).toBe(true);
    const plan = await op.api<{ plan: { skips: Array<{ hostId: string; reason: string }> } }>("POST", "/v1/deployments?dryRun=true", { component: COMPONENT, version: "7.0.0", hosts: [drained, US[1]!] });
    expect(plan.body.plan.skips).toEqual([{ hostId: drained, reason: "quarantined: disk replaced" }]);
    expect((await op.api("POST", `/v1/hosts/${drained}/clear`, { component: COMPONENT })).status).toBe(200);
    const cleared = await op.api<{ plan: { planned: number } }>("POST", "/v1/deployments?dryRun=true", { component: COMPONENT, version: "7.0.0", hosts: [drained, US[1]!] });
    expect(cleared.body.plan.planned).toBe(2);
    expect((await op.api("POST", `/v1/hosts/${drained}/clear`, { component: COMPONENT })).status).toBe(409);
  }, 60_000);
});
