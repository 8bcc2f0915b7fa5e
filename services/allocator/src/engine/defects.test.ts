import { deploymentRepository, slotRepository } from "@molt/aggregates";
import { desiredKey, Strategy, STREAM_EVENTS, subjects } from "@molt/contracts";
import { waitFor } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runConsumer } from "./consumer.js";
import * as rules from "./rules.js";
import { C, now, testBed, type TestBed } from "./testbed.js";

// Each "Found by reading today's allocator" defect of the roll-engine issue, as a test that
// failed on the spine's allocator and passes now.

let bed: TestBed;
let uniq = 0;
const id = (p: string) => `${bed.id(p)}-${++uniq}`;
const register = (...a: Parameters<TestBed["register"]>) => bed.register(...a);
const registerMany = (hosts: readonly string[]) => bed.registerMany(hosts);
const request = (...a: Parameters<TestBed["request"]>) => bed.request(...a);
const dispatchedTask = (h: string) => bed.dispatchedTask(h);
const finish = (h: string, taskId: string, ok: boolean) => bed.finish(h, taskId, ok);
const deploymentEvents = (d: string) => bed.deploymentEvents(d);
const slotEvents = (h: string) => bed.slotEvents(h);
const findEvent = (...a: Parameters<TestBed["findEvent"]>) => bed.findEvent(...a);

/** Both hosts in flight at once (the default, 25 %, would take two hosts one at a time). */
const wide = { strategy: Strategy.parse({ maxUnavailable: { hosts: 10 } }) };

beforeAll(async () => {
  bed = await testBed("allocator-defects");
  await bed.publish("2.0.0");
  await bed.startReplica("a");
  await bed.startReplica("b");
});
afterAll(() => bed?.stop());

describe("roll engine: defects found by reading the spine's allocator", () => {
  it("[roll-engine] a batch completes although a finished host's slot has since seen 20 newer tasks", async () => {
    const d = id("d-recent");
    const [a, b] = [id("slow"), id("busy")];
    await register(a);
    await register(b);
    await request(d, [a, b], wide);
    const ta = await dispatchedTask(a);
    const tb = await dispatchedTask(b);
    await finish(b, tb.taskId, true);
    await waitFor("b's key withdrawn", async () => ((await bed.kv.get(desiredKey(b, C)))?.operation === "PUT" ? undefined : true));
    // 21 other tasks come and go on b's slot, pushing b's task out of the slot's last-20 list.
    const slots = slotRepository(bed.store);
    for (let i = 0; i < 21; i++) {
      const taskId = `t-other-${uniq}-${i}`;
      const deadline = new Date(Date.now() + 60_000).toISOString();
      const pkg = { platform: "linux-amd64", sha256: "b".repeat(64), size: 1, url: "http://127.0.0.1:9/x" };
      const m = { now: now(), actor: "test", correlationId: taskId };
      await slots.handle(b, C, { type: "AllocateTask", data: { taskId, deploymentId: "d-elsewhere", hostId: b, component: C, version: "3.0.0", fromVersion: "2.0.0", attempt: 1, deadline, package: pkg } }, m, `${taskId}:a`);
      await slots.handle(b, C, { type: "CancelTask", data: { taskId, reason: "test" } }, m, `${taskId}:c`);
    }
    await finish(a, ta.taskId, true);
    const done = await waitFor("deployment completed", () => findEvent(d, "DeploymentCompleted"), { timeoutMs: 10_000 });
    expect(done.type === "DeploymentCompleted" && done.data).toMatchObject({ succeeded: 2, failed: 0 });
  });

  it("[roll-engine] a plan for 10,000 hosts with FQDN ids is stored in parts instead of failing the deployment", async () => {
    const d = id("d-big");
    const hosts = Array.from({ length: 10_000 }, (_, i) => `web-${String(i).padStart(5, "0")}.${d}.rack-a.eu-west-1.example.com`);
    await registerMany(hosts);
    await request(d, hosts, { strategy: Strategy.parse({ maxUnavailable: { hosts: 2 } }) });
    const planned = await waitFor("planned or failed", async () => (await findEvent(d, "DeploymentPlanned")) ?? (await findEvent(d, "DeploymentFailed")), { timeoutMs: 60_000 });
    expect(planned.type).toBe("DeploymentPlanned");
    const commits = await bed.store.read(subjects.deployment(d));
    const planHosts = commits.flatMap((c) => c.commit.events).flatMap((e) => (e.type === "PlanPartRecorded" ? e.data.batches.flatMap((b) => b.hosts.map((h) => h.hostId)) : []));
    expect(planHosts.length).toBe(10_000);
    expect(new Set(planHosts).size).toBe(10_000);
    // Every commit of the plan stays well below the 1 MiB message limit.
    expect(commits.filter((c) => c.commit.events.some((e) => e.type === "PlanPartRecorded")).length).toBeGreaterThan(1);
    await deploymentRepository(bed.store).handle(d, { type: "CancelDeployment", data: { reason: "test over" } }, { now: now(), actor: "test", correlationId: d }, `${d}:cancel`);
  }, 120_000);

  it("[roll-engine] a message handled for longer than ack_wait is kept in progress, not handed to a second handler", async () => {
    const nc = bed.nc;
    const subject = subjects.deployment(id("d-slow"));
    const seen: number[] = [];
    const c = await runConsumer(
      nc,
      { stream: STREAM_EVENTS, durable: id("slow-consumer"), filter: subject, concurrency: 4, retryDelayMs: 50, ackWaitMs: 300 },
      async (x) => {
        seen.push(x.seq);
        // A long allocation loop: five ack_waits of work inside one message.
        await new Promise((r) => setTimeout(r, 1500));
      },
      bed.logger,
    );
    await request(subject.split(".").pop()!, ["nobody"]);
    await waitFor("handled once", () => (seen.length > 0 ? true : undefined));
    await new Promise((r) => setTimeout(r, 2000));
    await c.stop();
    // Each commit on the subject (the request and what the engine appended to it) handled once.
    expect(seen.length).toBeGreaterThan(0);
    expect(new Set(seen).size).toBe(seen.length);
  });

  it("[roll-engine] one busy slot does not hold the batch: the host is recorded busy with the holder, the rest completes", async () => {
    const d = id("d-busy");
    const [x, y] = [id("held"), id("free")];
    await register(x);
    await register(y);
    const holder = `t-holder-${uniq}`;
    const pkg = { platform: "linux-amd64", sha256: "b".repeat(64), size: 1, url: "http://127.0.0.1:9/x" };
    await slotRepository(bed.store).handle(
      x,
      C,
      { type: "AllocateTask", data: { taskId: holder, deploymentId: "d-holder", hostId: x, component: C, version: "9.0.0", fromVersion: "1.0.0", attempt: 1, deadline: new Date(Date.now() + 600_000).toISOString(), package: pkg } },
      { now: now(), actor: "test", correlationId: holder },
      `${holder}:a`,
    );
    await request(d, [x, y]);
    const ty = await dispatchedTask(y);
    await finish(y, ty.taskId, true);
    const done = await waitFor("completed while x stays busy", () => findEvent(d, "DeploymentCompleted"), { timeoutMs: 10_000 });
    expect(done.type === "DeploymentCompleted" && done.data).toMatchObject({ succeeded: 1, failed: 1 });
    const busy = (await deploymentEvents(d)).find((e) => e.type === "HostOutcomeRecorded" && e.data.hostId === x);
    expect(busy?.type === "HostOutcomeRecorded" && busy.data).toMatchObject({ outcome: "busy" });
    expect(busy?.type === "HostOutcomeRecorded" && busy.data.reason).toContain(holder);
    expect((await slotEvents(y)).filter((e) => e.type === "TaskAllocated")).toHaveLength(1);
  });

  it("[roll-engine] the deployment cache is bounded: loading many deployments keeps at most the configured number", async () => {
    const repo = deploymentRepository(bed.store, { cacheSize: 2 });
    for (let i = 0; i < 5; i++) {
      const d = id("d-cache");
      await request(d, ["h-none"]);
      await repo.load(d);
    }
    expect(repo.cached()).toBeLessThanOrEqual(2);
  });

  it("[roll-engine] a silent task times out from the deadline index, with no tick walking the desired keys", async () => {
    const d = id("d-silent");
    const h = id("silent");
    await register(h);
    await request(d, [h], { taskTimeoutMs: 300 });
    await dispatchedTask(h);
    await waitFor("timed out", async () => ((await slotEvents(h)).some((e) => e.type === "TaskTimedOut") ? true : undefined), { timeoutMs: 10_000 });
    const outcome = await waitFor("outcome recorded", async () => (await deploymentEvents(d)).find((e) => e.type === "HostOutcomeRecorded"));
    expect(outcome.type === "HostOutcomeRecorded" && outcome.data.outcome).toBe("timed-out");
    await waitFor("key withdrawn", async () => ((await bed.kv.get(desiredKey(h, C)))?.operation === "PUT" ? undefined : true));
  });

  it("[roll-engine] a host whose stored state cannot be read is skipped with the reason; the others still get their task", async () => {
    const d = id("d-badstate");
    const [bad, good] = [id("bad-state"), id("good")];
    await register(bad, "1.0.0", { hostId: bad, platform: "not a platform" });
    await register(good);
    await request(d, [bad, good]);
    await dispatchedTask(good);
    const parts = (await deploymentEvents(d)).flatMap((e) => (e.type === "PlanPartRecorded" ? e.data.skipped : []));
    expect(parts.find((s) => s.hostId === bad)?.reason).toMatch(/cannot be read/);
  });

  it("[roll-engine] a task's deadline counts from the event that assigned it, not from the allocator's clock", async () => {
    const d = id("d-clock");
    const h = id("clock");
    await register(h);
    const at = new Date(Date.now() - 5_000).toISOString();
    await request(d, [h], { taskTimeoutMs: 3_600_000 }, at);
    const task = await dispatchedTask(h);
    expect(task.deadline).toBe(new Date(Date.parse(at) + 3_600_000).toISOString());
  });

  it("[roll-engine] cancelling withdraws the tasks in flight (CancelTask, the desired key deleted)", async () => {
    const d = id("d-cancel");
    const [p, q] = [id("p"), id("q")];
    await register(p);
    await register(q);
    await request(d, [p, q], wide);
    await dispatchedTask(p);
    await dispatchedTask(q);
    await deploymentRepository(bed.store).handle(d, { type: "CancelDeployment", data: { reason: "operator" } }, { now: now(), actor: "otto", correlationId: d }, `${d}:cancel`);
    for (const h of [p, q]) {
      await waitFor(`${h} cancelled`, async () => ((await slotEvents(h)).some((e) => e.type === "TaskCancelled") ? true : undefined), { timeoutMs: 10_000 });
      await waitFor(`${h} key withdrawn`, async () => ((await bed.kv.get(desiredKey(h, C)))?.operation === "PUT" ? undefined : true));
    }
  });

  it("[roll-engine] retry runs the failed hosts again as attempt 2 (attempt is real)", async () => {
    const d = id("d-retry");
    const [ok, bad] = [id("ok"), id("bad")];
    await register(ok);
    await register(bad);
    await request(d, [ok, bad], wide);
    await finish(ok, (await dispatchedTask(ok)).taskId, true);
    await finish(bad, (await dispatchedTask(bad)).taskId, false);
    await waitFor("completed with a failure", () => findEvent(d, "DeploymentCompleted"));
    await deploymentRepository(bed.store).handle(d, { type: "RetryDeployment", data: {} }, { now: now(), actor: "otto", correlationId: d }, `${d}:retry`);
    const second = await waitFor("attempt 2 allocated", async () => (await slotEvents(bad)).filter((e) => e.type === "TaskAllocated").find((e) => e.type === "TaskAllocated" && e.data.attempt === 2));
    expect(second.type === "TaskAllocated" && second.data.taskId).toBe(rules.taskIdFor(d, bad, 2));
    expect((await slotEvents(ok)).filter((e) => e.type === "TaskAllocated")).toHaveLength(1);
  });

  it("[roll-engine] a slot whose last N tasks failed is quarantined (an event), and later plans skip it with the reason", async () => {
    const host = id("flaky");
    await register(host);
    for (let n = 0; n < 3; n++) {
      const d = id("d-flaky");
      await request(d, [host]);
      await finish(host, (await dispatchedTask(host)).taskId, false);
      await waitFor(`${d} completed`, () => findEvent(d, "DeploymentCompleted"));
    }
    await waitFor("quarantined", async () => ((await slotEvents(host)).some((e) => e.type === "HostQuarantined") ? true : undefined));
    const d = id("d-after");
    await request(d, [host], { allowEmpty: true });
    await waitFor("planned", () => findEvent(d, "DeploymentPlanned"));
    const skips = (await deploymentEvents(d)).flatMap((e) => (e.type === "PlanPartRecorded" ? e.data.skipped : []));
    expect(skips).toEqual([{ hostId: host, reason: "quarantined: its last 3 tasks failed" }]);
  });
});
