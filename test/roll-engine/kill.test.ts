import { join } from "node:path";
import { startProcess, waitFor, type RunningProcess } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { history, operatorApi, simIds, startScenario, type Scenario } from "./harness.js";

/**
 * Exactly once under kill -9: three allocator replicas on one durable consumer, 300 simulated
 * hosts, a replica SIGKILLed every KILL_EVERY_MS and started again while the rollout runs.
 */
const OPERATOR = "operator-token-kill-00001";
const HOSTS = simIds("k-", 300);
const KILL_EVERY_MS = 1500;
/** Enough kills to land several with tasks in flight; then the rollout is left to finish. */
const KILLS = 8;
const TIMINGS = { MOLT_HEARTBEAT_MS: "1000", MOLT_POLL_MS: "1000", MOLT_RETRY_DELAY_MS: "100", MOLT_ACK_WAIT_MS: "1500" };

let s: Scenario;
const op = operatorApi(() => s.system, OPERATOR);
/** Replicas started again after a kill: not part of `system`, stopped here. */
const restartedReplicas: RunningProcess[] = [];

beforeAll(async () => {
  s = await startScenario({ name: "kill", operator: OPERATOR, prefix: "k-", hosts: HOSTS, allocatorReplicas: 3, stepDelayMs: 80, env: TIMINGS });
  await op.upload("2.0.0");
}, 180_000);

afterAll(() => s?.stop(restartedReplicas));

describe("roll engine under kill -9", () => {
  it("[roll-engine] 3 replicas, 300 hosts, a replica SIGKILLed every 1.5 s (8 times) and restarted: one allocation per host and attempt, none skipped, completed", async () => {
    const h = history(s.store);
    const replicas = new Map<string, Promise<RunningProcess>>(s.system.processes.filter((p) => p.name.startsWith("allocator-")).map((p) => [p.name, Promise.resolve(p)]));
    const id = await op.deploy({ version: "2.0.0", hosts: HOSTS, strategy: { maxUnavailable: { percent: 20 } } }, "kill-1");
    let killsInFlight = 0;
    let kills = 0;
    let round = 0;
    for (;;) {
      const ev = await h.events(id);
      if (ev.some(({ e }) => e.type === "DeploymentCompleted" || e.type === "DeploymentFailed")) break;
      if (kills >= KILLS) {
        await waitFor("completed after the last kill", async () => ((await h.first(id, "DeploymentCompleted")) ?? (await h.first(id, "DeploymentFailed"))), { timeoutMs: 60_000 });
        break;
      }
      round++;
      // Pacing of the fault injection (not a wait for an outcome): the rollout runs between kills.
      await new Promise((r) => setTimeout(r, KILL_EVERY_MS));
      const name = `allocator-${1 + (round % 3)}`;
      const assigned = ev.flatMap(({ e }) => (e.type === "HostsAssigned" ? e.data.hosts : [])).length;
      const finished = ev.filter(({ e }) => e.type === "HostOutcomeRecorded").length;
      // The replica killed this round is the one started longest ago (it is up by now).
      await (await replicas.get(name))!.kill();
      kills++;
      if (assigned > finished) killsInFlight++;
      // Started again in the background: the rollout and the next kill do not wait for it.
      const restarted = startProcess(
        `${name}-r${round}`,
        "allocator",
        { ...(await s.nats.bus.env("allocator")), MOLT_PACKAGE_BASE_URL: s.system.gatewayUrl, MOLT_REPLICA_ID: `${name}-r${round}`, ...TIMINGS },
        join(s.dataDir, "logs"),
        /allocator running/,
      );
      void restarted.then((p) => restartedReplicas.push(p));
      replicas.set(name, restarted);
    }
    await Promise.all(replicas.values());
    const done = await h.first(id, "DeploymentCompleted");
    expect(done?.e.type === "DeploymentCompleted" && done.e.data).toMatchObject({ succeeded: 300, failed: 0, skipped: 0 });
    expect(kills).toBeGreaterThanOrEqual(3);
    expect(killsInFlight, `${killsInFlight} of ${kills} kills landed with tasks in flight`).toBeGreaterThanOrEqual(3);

    const allocations = new Map<string, number>();
    for (const c of await h.slotCommits())
      for (const e of c.commit.events)
        if (e.type === "TaskAllocated" && e.data.deploymentId === id) allocations.set(`${e.data.hostId}#${e.data.attempt}`, (allocations.get(`${e.data.hostId}#${e.data.attempt}`) ?? 0) + 1);
    expect(allocations.size).toBe(300);
    expect([...allocations.values()].every((n) => n === 1)).toBe(true);
  }, 150_000);
});
