import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { subjects } from "@molt/contracts";
import { createEventStore, type StoredCommit, type EventStore } from "@molt/event-store";
import { startNatsServer, startProcess, startSystem, waitFor, type SecureNatsServer, type RunningProcess, type System } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { COMPONENT, history, operatorApi, simIds, teardown } from "./harness.js";

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

let nats: SecureNatsServer;
let nc: NatsConnection;
let store: EventStore;
let system: System;
let dataDir: string;
const op = operatorApi(() => system, OPERATOR);
const restarted: RunningProcess[] = [];

/** Tasks in flight across all deployments after each slot commit, replayed in stream order: the maximum. */
function maxInFlight(commits: StoredCommit[]): number {
  const open = new Set<string>();
  let max = 0;
  for (const c of commits)
    for (const e of c.commit.events) {
      if (e.type === "TaskAllocated") open.add(e.data.taskId);
      else if (e.type === "TaskSucceeded" || e.type === "TaskFailed" || e.type === "TaskRejected" || e.type === "TaskTimedOut" || e.type === "TaskCancelled") open.delete(e.data.taskId);
      max = Math.max(max, open.size);
    }
  return max;
}

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "molt-cap-"));
  nats = await startNatsServer({ secure: true });
  nc = await nats.bus.connect("admin");
  store = createEventStore(nc);
  system = await startSystem({
    nats,
    dataDir,
    tokens: { [OPERATOR]: { actor: "otto", role: "operator" } },
    allocatorReplicas: 2,
    sim: { count: HOSTS.length, prefix: "c-", seed: `${COMPONENT}@1.0.0`, stepDelayMs: 60 },
    env: TIMINGS,
  });
  await waitFor("30 hosts registered", async () => {
    for (const id of HOSTS) if (!(await store.readLast(subjects.hostMeta(id)))) return undefined;
    return true;
  }, { timeoutMs: 60_000 });
  await op.upload("2.0.0");
}, 180_000);

afterAll(() => teardown({ extra: restarted, system, nc, nats, dataDir }));

describe("fleet-wide cap", () => {
  it("[roll-engine] cap 4 across two deployments of maxUnavailable 6 each: in flight never exceeds 4 (replayed from the events); after a replica's SIGKILL both complete and no lease is left", async () => {
    const h = history(store);
    const strategy = { maxUnavailable: { hosts: 6 } };
    const [a, b] = await Promise.all([op.deploy({ version: "2.0.0", hosts: HOSTS.slice(0, 15), strategy }, "cap-a"), op.deploy({ version: "2.0.0", hosts: HOSTS.slice(15), strategy }, "cap-b")]);
    await waitFor("tasks in flight", async () => {
      const ev = [...(await h.events(a)), ...(await h.events(b))];
      const assigned = ev.flatMap(({ e }) => (e.type === "HostsAssigned" ? e.data.hosts : [])).length;
      const finished = ev.filter(({ e }) => e.type === "HostOutcomeRecorded").length;
      return assigned > finished && finished >= 2 ? true : undefined;
    }, { timeoutMs: 30_000, intervalMs: 50 });
    const victim = system.processes.find((p) => p.name === "allocator-1")!;
    await victim.kill();
    restarted.push(
      await startProcess("allocator-1-r", "allocator", { ...(await nats.bus.env("allocator")), MOLT_PACKAGE_BASE_URL: system.gatewayUrl, MOLT_REPLICA_ID: "allocator-1-r", ...TIMINGS }, join(dataDir, "logs"), /allocator running/),
    );
    for (const d of [a, b]) {
      const done = await h.waitFor(d, "DeploymentCompleted", 90_000);
      expect(done.e.type === "DeploymentCompleted" && done.e.data).toMatchObject({ succeeded: 15, failed: 0 });
    }
    const commits = await h.slotCommits();
    expect(maxInFlight(commits)).toBeLessThanOrEqual(CAP);
    expect(maxInFlight(commits)).toBe(CAP);
    const kv = await new Kvm(nc).open(LEASES_BUCKET);
    await waitFor("every lease given back", async () => {
      for await (const k of await kv.keys()) if ((await kv.get(k))?.operation === "PUT") return undefined;
      return true;
    }, { timeoutMs: 15_000 });
  }, 150_000);
});
