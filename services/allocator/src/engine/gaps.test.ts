import { Kvm } from "@nats-io/kv";
import { deploymentRepository, slotRepository } from "@molt/aggregates";
import { Strategy, subjects, type PlannedHost } from "@molt/contracts";
import type { CommandMeta } from "@molt/domain";
import { concerns, type EventStore } from "@molt/event-store";
import { ensureBucket } from "@molt/runtime";
import { maxInFlight, waitFor } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fleetLeases, KV_LEASES, type FleetLeases } from "../dispatch/leases.js";
import { fleetIndex, type FleetIndex } from "../planning/fleet-index.js";
import { fleetReader } from "../planning/resolve.js";
import { C, now, testBed, type TestBed } from "./testbed.js";

// The roll engine's last gaps (issue 5): each a test that failed before its fix.

const wide = { strategy: Strategy.parse({ maxUnavailable: { hosts: 10 } }) };
const operator = (d: string): CommandMeta => ({ now: now(), actor: "otto", correlationId: d });

describe("roll engine: retry", () => {
  let bed: TestBed;
  beforeAll(async () => {
    bed = await testBed("allocator-retry");
    await bed.publish("2.0.0");
    await bed.startReplica("a");
    await bed.startReplica("b");
  });
  afterAll(() => bed?.stop());

  it("[roll-engine] a retry skips a failed host that another deployment has since brought to the target, recorded as a skip with the reason", async () => {
    const d = bed.id("d-retry-skip");
    const [ok, bad] = [bed.id("ok"), bed.id("bad")];
    await bed.register(ok);
    await bed.register(bad);
    await bed.request(d, [ok, bad], wide);
    await bed.finish(ok, (await bed.dispatchedTask(ok)).taskId, true);
    await bed.finish(bad, (await bed.dispatchedTask(bad)).taskId, false);
    await waitFor("completed with a failure", () => bed.findEvent(d, "DeploymentCompleted"));
    // Meanwhile another deployment upgrades the failed host.
    const other = bed.id("d-other");
    await bed.request(other, [bad]);
    await bed.finish(bad, (await bed.dispatchedTask(bad)).taskId, true);
    await waitFor("the other deployment completed", () => bed.findEvent(other, "DeploymentCompleted"));

    await deploymentRepository(bed.store).handle(d, { type: "RetryDeployment", data: {} }, operator(d), `${d}:retry`);
    const skip = await waitFor("the retried host's outcome", async () =>
      (await bed.deploymentEvents(d)).find((e) => e.type === "HostOutcomeRecorded" && e.data.hostId === bad && e.data.attempt === 2),
    );
    expect(skip.type === "HostOutcomeRecorded" && skip.data).toMatchObject({ outcome: "skipped" });
    expect(skip.type === "HostOutcomeRecorded" && skip.data.reason).toContain("already at metrics-agent 2.0.0");
    const allocated = (await bed.slotEvents(bad)).filter((e) => e.type === "TaskAllocated" && e.data.deploymentId === d);
    expect(allocated.map((e) => e.type === "TaskAllocated" && e.data.attempt)).toEqual([1]);
    const completions = await waitFor("completed again", async () => {
      const done = (await bed.deploymentEvents(d)).filter((e) => e.type === "DeploymentCompleted");
      return done.length === 2 ? done : undefined;
    });
    expect(completions[1]?.type === "DeploymentCompleted" && completions[1].data).toMatchObject({ succeeded: 1, failed: 0, skipped: 1 });
  });
});

describe("roll engine: the brake", () => {
  let bed: TestBed;
  beforeAll(async () => {
    bed = await testBed("allocator-brake");
    await bed.publish("2.0.0");
  });
  afterAll(() => bed?.stop());

  it("[roll-engine] hosts assigned just before the brake are not allocated after it: replayed in stream order, no TaskAllocated of the deployment follows DeploymentBraked", async () => {
    const d = bed.id("d-brake-race");
    const hosts = [bed.id("x"), bed.id("y"), bed.id("z")];
    for (const h of hosts) await bed.register(h);
    // The deployment's commits up to the brake, as the engine would have written them, land
    // before any allocator handles the assignments (the race, made certain).
    const repo = deploymentRepository(bed.store);
    const m = operator(d);
    const planned: PlannedHost[] = hosts.map((hostId) => ({ hostId, fromVersion: "1.0.0", platform: "linux-amd64" }));
    const pkg = { platform: "linux-amd64", sha256: "b".repeat(64), size: 100, url: "http://127.0.0.1:9/x" };
    await bed.request(d, hosts, { strategy: Strategy.parse({ maxUnavailable: { hosts: 3 }, brake: { threshold: 0.1, minFinished: 1 } }) });
    await repo.handle(d, { type: "RecordPlanPart", data: { planId: "p", part: 0, batches: [{ index: 0, hosts: planned }], skipped: [] } }, m, `${d}:part`);
    await repo.handle(d, { type: "SealPlan", data: { planId: "p", parts: 1, packages: { "linux-amd64": pkg }, batches: [{ index: 0, kind: "batch", size: 3 }], skipped: 0 } }, m, `${d}:planned`);
    await repo.handle(d, { type: "StartBatch", data: { index: 0 } }, m, `${d}:start`);
    await repo.handle(d, { type: "AssignHosts", data: { batch: 0, from: 0, hosts: [hosts[0]!] } }, m, `${d}:assign-0`);
    await repo.handle(d, { type: "RecordHostOutcome", data: { outcomes: [{ hostId: hosts[0]!, attempt: 1, outcome: "failed", reason: "boom" }] } }, m, `${d}:outcome-0`);
    await repo.handle(d, { type: "AssignHosts", data: { batch: 0, from: 1, hosts: hosts.slice(1) } }, m, `${d}:assign-1`);
    await repo.handle(d, { type: "BrakeDeployment", data: { failed: 1, finished: 1, threshold: 0.1 } }, m, `${d}:braked`);

    await bed.startReplica("a");
    const outcomes = await waitFor("the assigned hosts' outcomes", async () => {
      const found = (await bed.deploymentEvents(d)).filter((e) => e.type === "HostOutcomeRecorded" && e.data.hostId !== hosts[0]);
      return found.length === 2 ? found : undefined;
    });
    for (const o of outcomes) {
      expect(o.type === "HostOutcomeRecorded" && o.data.outcome).toBe("cancelled");
      expect(o.type === "HostOutcomeRecorded" && o.data.reason).toContain("braked");
    }
    const braked = (await bed.store.read(subjects.deployment(d))).find((c) => c.commit.events.some((e) => e.type === "DeploymentBraked"))!;
    const late = (await bed.store.read(`molt.es.host.*.task.${C}`)).filter(
      (c) => c.seq > braked.seq && c.commit.events.some((e) => e.type === "TaskAllocated" && e.data.deploymentId === d),
    );
    expect(late).toEqual([]);
  });
});

describe("roll engine: the fleet-wide cap", () => {
  const CAP = 3;
  let bed: TestBed;
  const leases: FleetLeases[] = [];
  beforeAll(async () => {
    bed = await testBed("allocator-cap");
    await bed.publish("2.0.0");
    for (const name of ["a", "b"])
      await bed.startReplica(name, async (nc, deps) => {
        const l = await fleetLeases(
          await ensureBucket(nc, KV_LEASES, { history: 1 }),
          CAP,
          async (x) => (await deps.slots.load(x.hostId, x.component)).state.active?.taskId === x.taskId,
          bed.logger,
        );
        leases.push(l);
        return { leases: l, leaseRetryMs: 20 };
      });
  });
  afterAll(async () => {
    for (const l of leases) await l.stop();
    await bed?.stop();
  });

  it("[roll-engine] two deployments at once, cap 3 below their limits (4 + 4): in flight across both, replayed from the events, never exceeds the cap; every lease is given back", async () => {
    const hosts = Array.from({ length: 12 }, (_, i) => bed.id(`cap-${i}`));
    for (const h of hosts) await bed.register(h);
    const [d1, d2] = [bed.id("d-cap-1"), bed.id("d-cap-2")];
    const strategy = { strategy: Strategy.parse({ maxUnavailable: { hosts: 4 } }) };
    // The hosts: each dispatched task succeeds a little later (so tasks overlap).
    let running = true;
    const answered = new Set<string>();
    const hostsAnswer = (async () => {
      while (running) {
        await Promise.all(
          hosts.map(async (h) => {
            const a = (await slotRepository(bed.store).load(h, C)).state.active;
            if (a?.status !== "dispatched" || answered.has(a.taskId)) return;
            answered.add(a.taskId);
            await new Promise((r) => setTimeout(r, 100));
            await bed.finish(h, a.taskId, true);
          }),
        );
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    await Promise.all([bed.request(d1, hosts.slice(0, 6), strategy), bed.request(d2, hosts.slice(6), strategy)]);
    await waitFor("both completed", async () => ((await bed.findEvent(d1, "DeploymentCompleted")) && (await bed.findEvent(d2, "DeploymentCompleted")) ? true : undefined), { timeoutMs: 30_000 });
    running = false;
    await hostsAnswer;
    const commits = await bed.store.read(`molt.es.host.*.task.${C}`);
    expect(maxInFlight(commits)).toBeLessThanOrEqual(CAP);
    expect(maxInFlight(commits)).toBe(CAP);
    for (const d of [d1, d2]) expect((await bed.findEvent(d, "DeploymentCompleted"))?.data).toMatchObject({ succeeded: 6, failed: 0 });
    const kv = await new Kvm(bed.nc).open(KV_LEASES);
    await waitFor("every lease given back", async () => {
      for await (const k of await kv.keys()) if ((await kv.get(k))?.operation === "PUT") return undefined;
      return true;
    });
  });
});

describe("roll engine: fleet leases", () => {
  let bed: TestBed;
  beforeAll(async () => {
    bed = await testBed("allocator-leases");
  });
  afterAll(() => bed?.stop());

  it("[roll-engine] a task given two leases by two replicas deciding at once gives back both; the bucket never holds more than the cap", async () => {
    const notActive = () => Promise.resolve(false);
    const kvs = [await ensureBucket(bed.nc, KV_LEASES, { history: 1 }), await ensureBucket(bed.nc, KV_LEASES, { history: 1 })];
    const [a, b] = [await fleetLeases(kvs[0]!, 3, notActive, bed.logger), await fleetLeases(kvs[1]!, 3, notActive, bed.logger)];
    const t = { taskId: "t-twice", deploymentId: "d", hostId: "h", component: C, deadline: new Date(Date.now() + 60_000).toISOString() };
    // Both views are empty when they decide, so the second cannot know of the first's key.
    const held = await Promise.all([a.acquire([t], new Date()), b.acquire([t], new Date())]);
    expect(held).toEqual([1, 1]);
    const others = ["t-x", "t-y", "t-z"].map((taskId) => ({ ...t, taskId }));
    expect(await a.acquire(others, new Date())).toBeLessThanOrEqual(2);
    await waitFor("both views caught up", () => (a.held() === b.held() ? true : undefined));
    await a.release("t-twice");
    for (const x of others) await a.release(x.taskId);
    await waitFor("every key given back", async () => {
      for await (const k of await kvs[0]!.keys()) if ((await kvs[0]!.get(k))?.operation === "PUT") return undefined;
      return true;
    }, { timeoutMs: 5_000 });
    await a.stop();
    await b.stop();
  });
});

describe("roll engine: the fleet index", () => {
  let bed: TestBed;
  let metaReads = 0;
  let index: FleetIndex;
  beforeAll(async () => {
    bed = await testBed("allocator-index");
    await bed.publish("2.0.0");
    await bed.startReplica("idx", async (nc, deps) => {
      index = await fleetIndex(nc, deps.store, bed.logger);
      // The same store, counting the reads of host meta subjects a plan makes.
      const counting: EventStore = {
        ...deps.store,
        readLast: (subject, opts) => {
          if (subject.endsWith(".meta")) metaReads++;
          return deps.store.readLast(subject, opts);
        },
      };
      return { store: counting, fleet: fleetReader(nc, "molt_presence_not_here", index) };
    });
  });
  afterAll(async () => {
    await index?.stop();
    await bed?.stop();
  });

  const plannedHosts = async (d: string) => (await bed.deploymentEvents(d)).flatMap((e) => (e.type === "PlanPartRecorded" ? e.data.batches.flatMap((b) => b.hosts.map((h) => h.hostId)) : []));

  it("[roll-engine] plans resolve named hosts and selectors from the index kept from the host events: no host meta read at plan time, and a host registered just before the request is in the plan", async () => {
    const cluster = bed.id("eu");
    const hosts = Array.from({ length: 20 }, (_, i) => bed.id(`idx-${i}`));
    for (const h of hosts) await bed.register(h, "1.0.0", undefined, { cluster });
    const cancel = (d: string) => deploymentRepository(bed.store).handle(d, { type: "CancelDeployment", data: { reason: "test over" } }, operator(d), `${d}:cancel`);

    const named = bed.id("d-named");
    await bed.request(named, hosts);
    await waitFor("planned", () => bed.findEvent(named, "DeploymentPlanned"));
    await cancel(named);
    expect((await plannedHosts(named)).sort()).toEqual([...hosts].sort());
    expect(metaReads).toBe(0);

    // Registered and targeted at once: the plan waits for the index to reach the request's view.
    const late = bed.id("idx-late");
    await bed.register(late, "1.0.0", undefined, { cluster });
    const selected = bed.id("d-selector");
    await bed.request(selected, [], { selector: { cluster } });
    await waitFor("planned", () => bed.findEvent(selected, "DeploymentPlanned"));
    await cancel(selected);
    expect((await plannedHosts(selected)).sort()).toEqual([...hosts, late].sort());
    expect(metaReads).toBe(0);
    expect(index.select({ cluster, version: "1.0.0" }, C)).toHaveLength(21);
    expect(index.select({ cluster: "nowhere" }, C)).toEqual([]);
  });
});

describe("roll engine: the consumers' pre-filter", () => {
  const bytes = (o: unknown) => new TextEncoder().encode(JSON.stringify(o));
  it("[roll-engine] a commit with none of the handled event types is acked unread; one with any of them, or with no readable type, is decoded", () => {
    const types = new Set(["TaskAllocated"]);
    expect(concerns(bytes({ commitId: "x", events: [{ id: "a", type: "TaskStepStarted", data: {} }], state: { active: null } }), types)).toBe(false);
    expect(concerns(bytes({ commitId: "x", events: [{ id: "a", type: "TaskStepStarted" }, { id: "b", type: "TaskAllocated" }] }), types)).toBe(true);
    expect(concerns(new TextEncoder().encode('{ "events": [ { "type": "TaskStepStarted" } ] }'), types)).toBe(true);
    expect(concerns(new TextEncoder().encode("not json"), types)).toBe(true);
  });
});
