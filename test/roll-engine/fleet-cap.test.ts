import { join } from "node:path";
import { Kvm } from "@nats-io/kv";
import { startProcess, waitFor, type RunningProcess } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { history, maxInFlight, operatorApi, simIds, startScenario, type Scenario } from "./harness.js";

/**
 * The fleet-wide cap (KV leases) end to end: two allocator replicas with MOLT_FLEET_CAP=4, 30
 * simulated hosts, two deployments at once whose own limits add up to 12; a replica is killed
 * with SIGKILL while tasks are in flight and started again.
 */
const OPERATOR = "operator-token-cap-000001";
const CAP = 4;
const HOSTS = simIds("c-", 30);
const TIMINGS = { MOLT_HEARTBEAT_MS: "1000", MOLT_POLL_MS: "1000", MOLT_RETRY_DELAY_MS: "100", MOLT_ACK_WAIT_MS: "1500", MOLT_FLEET_CAP: String(CAP), MOLT_LEASE_RETRY_MS: "50" };
const LEASES_BUCKET = "molt_fleet_leases";

let s: Scenario;
const op = operatorApi(() => s.system, OPERATOR);
const restarted: RunningProcess[] = [];

beforeAll(async () => {
  s = await startScenario({ name: "cap", operator: OPERATOR, prefix: "c-", hosts: HOSTS, allocatorReplicas: 2, stepDelayMs: 60, env: TIMINGS });
  await op.upload("2.0.0");
}, 180_000);

afterAll(() => s?.stop(restarted));

describe("fleet-wide cap", () => {
  it("[roll-engine] cap 4 across two deployments of maxUnavailable 6 each: in flight never exceeds 4 (replayed from the events); after a replica's SIGKILL both complete and no lease is left", async () => {
    const h = history(s.store);
    const strategy = { maxUnavailable: { hosts: 6 } };
    const [a, b] = await Promise.all([op.deploy({ version: "2.0.0", hosts: HOSTS.slice(0, 15), strategy }, "cap-a"), op.deploy({ version: "2.0.0", hosts: HOSTS.slice(15), strategy }, "cap-b")]);
    await waitFor("tasks in flight", async () => {
      const ev = [...(await h.events(a)), ...(await h.events(b))];
      const assigned = ev.flatMap(({ e }) => (e.type === "HostsAssigned" ? e.data.hosts : [])).length;
      const finished = ev.filter(({ e }) => e.type === "HostOutcomeRecorded").length;
      return assigned > finished && finished >= 2 ? true : undefined;
    }, { timeoutMs: 30_000, intervalMs: 50 });
    const victim = s.system.processes.find((p) => p.name === "allocator-1")!;
    await victim.kill();
    restarted.push(
      await startProcess("allocator-1-r", "allocator", { ...(await s.nats.bus.env("allocator")), MOLT_PACKAGE_BASE_URL: s.system.gatewayUrl, MOLT_REPLICA_ID: "allocator-1-r", ...TIMINGS }, join(s.dataDir, "logs"), /allocator running/),
    );
    for (const d of [a, b]) {
      const done = await h.waitFor(d, "DeploymentCompleted", 90_000);
      expect(done.e.type === "DeploymentCompleted" && done.e.data).toMatchObject({ succeeded: 15, failed: 0 });
    }
    const commits = await h.slotCommits();
    expect(maxInFlight(commits)).toBeLessThanOrEqual(CAP);
    expect(maxInFlight(commits)).toBe(CAP);
    const kv = await new Kvm(s.nc).open(LEASES_BUCKET);
    await waitFor("every lease given back", async () => {
      for await (const k of await kv.keys()) if ((await kv.get(k))?.operation === "PUT") return undefined;
      return true;
    }, { timeoutMs: 15_000 });
  }, 150_000);
});
