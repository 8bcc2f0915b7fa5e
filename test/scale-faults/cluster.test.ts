import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { jetstream } from "@nats-io/jetstream";
import { STREAM_EVENTS } from "@molt/contracts";
import { startNatsCluster, waitFor, type NatsCluster } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { COMPONENT, history, operatorApi, simIds, startScenario, type Scenario } from "../roll-engine/harness.js";
import { projectorViews } from "../views/compare.js";

/**
 * Faults on a real 3-node cluster (the shipped example: TLS, credentials, R3 streams and buckets,
 * `sync_interval: always`) under a 300-host simulated rollout: the node that leads the event
 * stream killed with SIGKILL and started again; frozen with SIGSTOP for longer than the clients'
 * timeouts; the whole bus down. Every service and agent is given all three URLs; after the last,
 * the views (fed through all three) equal a rebuild.
 */
const OPERATOR = "operator-token-cluster-0001";
const ADMIN = "admin-token-cluster-000001";
const HOSTS = simIds("c-", 300);
// Heartbeats every 2 s, not 1: 300 hosts' heartbeats are each a presence write at R3 with
// `sync_interval: always` on three nodes, the suite's steadiest load, and nothing here waits on one
// (presence matters when a deployment is planned, within the 30 s grace).
const TIMINGS = { MOLT_HEARTBEAT_MS: "2000", MOLT_POLL_MS: "1000", MOLT_RETRY_DELAY_MS: "100", MOLT_ACK_WAIT_MS: "3000" };
/** How long the leader stays frozen: longer than nats.js' 5 s request and publish timeouts. */
const FREEZE_MS = 8_000;
/** How long the whole bus stays down (the 30 s; shorter only to try the test by hand). */
const BUS_DOWN_MS = Number(process.env["MOLT_TEST_BUS_DOWN_MS"] ?? 30_000);

let cluster: NatsCluster;
let s: Scenario;
const op = operatorApi(() => s.system, OPERATOR);
const { settled, views, rebuild } = projectorViews(operatorApi(() => s.system, ADMIN), HOSTS, () => s.store);
const h = () => history(s.store);

beforeAll(async () => {
  if (!run) return;
  cluster = await startNatsCluster();
  s = await startScenario({
    name: "cluster",
    operator: OPERATOR,
    admin: ADMIN,
    prefix: "c-",
    hosts: HOSTS,
    allocatorReplicas: 2,
    stepDelayMs: 40,
    nats: cluster,
    env: { ...TIMINGS, MOLT_STREAM_REPLICAS: "3", MOLT_ACK_LOG: join(cluster.dir, "acks.log") },
  });
  for (const v of ["2.0.0", "3.0.0", "4.0.0"]) await op.upload(v);
}, 240_000);

// The bed stops the cluster with itself; a set-up that never finished leaves the three nodes to stop here.
afterAll(async () => (s ? s.stop([]) : cluster?.stop()));

/** Every commit in the event stream, read once from the start: seq → commit id, and the events. */
async function readStream() {
  const js = jetstream(s.nc);
  const consumer = await js.consumers.get(STREAM_EVENTS);
  const last = (await consumer.info()).num_pending;
  const bySeq = new Map<number, { subject: string; commitId: string; events: Array<{ type: string; data: Record<string, unknown> }> }>();
  if (last === 0) return bySeq;
  const messages = await consumer.consume();
  for await (const m of messages) {
    const commit = m.json<{ commitId: string; events: Array<{ type: string; data: Record<string, unknown> }> }>();
    bySeq.set(m.seq, { subject: m.subject, commitId: commit.commitId, events: commit.events });
    if (m.info.pending === 0) break;
  }
  await messages.close();
  return bySeq;
}

/**
 * What must hold after any fault: every append a service was acknowledged for is in the stream
 * at the acknowledged sequence; each host got one allocation per attempt of the deployment; no
 * step report became two events.
 */
async function expectNothingLostOrDoubled(deploymentId: string) {
  const stream = await readStream();
  const acks = (await readFile(join(cluster.dir, "acks.log"), "utf8")).trim().split("\n").map((l) => l.split(" "));
  expect(acks.length).toBeGreaterThan(1000);
  const missing = acks.filter(([seq, subject, commitId]) => stream.get(Number(seq))?.commitId !== commitId || stream.get(Number(seq))?.subject !== subject);
  expect(missing.slice(0, 5), `${missing.length} of ${acks.length} acknowledged appends are not in the stream as acknowledged`).toEqual([]);

  const allocations = new Map<string, number>();
  const steps = new Map<string, number>();
  for (const c of stream.values())
    for (const e of c.events) {
      if (e.type === "TaskAllocated" && e.data["deploymentId"] === deploymentId) {
        const key = `${String(e.data["hostId"])}#${String(e.data["attempt"])}`;
        allocations.set(key, (allocations.get(key) ?? 0) + 1);
      }
      if (e.type.startsWith("TaskStep") || e.type === "TaskSucceeded" || e.type === "TaskFailed" || e.type === "TaskAccepted") {
        const key = `${String(e.data["taskId"])}#${String(e.data["seq"])}`;
        steps.set(key, (steps.get(key) ?? 0) + 1);
      }
    }
  expect(allocations.size).toBe(HOSTS.length);
  expect([...allocations].filter(([, n]) => n !== 1)).toEqual([]);
  expect([...steps].filter(([, n]) => n !== 1)).toEqual([]);
}

/** Deploys `version` to every host and returns once `atProgress` hosts have an outcome (the fault goes in then). */
async function deployUntil(version: string, atProgress: number): Promise<string> {
  const id = await op.deploy({ version, hosts: HOSTS, strategy: { maxUnavailable: { percent: 25 } } }, `cluster-${version}`);
  await waitFor(`${atProgress} hosts finished on ${id}`, async () => ((await h().events(id)).filter(({ e }) => e.type === "HostOutcomeRecorded").length >= atProgress ? true : undefined), { timeoutMs: 120_000, intervalMs: 200 });
  return id;
}

async function expectCompleted(id: string) {
  const done = await h().waitFor(id, "DeploymentCompleted", 240_000);
  expect(done.e.type === "DeploymentCompleted" && done.e.data).toMatchObject({ succeeded: HOSTS.length, failed: 0 });
}

/** The projector's views, fed through every fault so far, equal a rebuild from the start. */
async function expectViewsEqualRebuild(version: string) {
  await settled(version, HOSTS.length, 120_000);
  const live = await views();
  await rebuild();
  expect(await views()).toEqual(live);
}

/**
 * ~5 minutes on 2 cores, so a plain `vitest run` skips it: `MOLT_CLUSTER_FAULTS=1 scripts/check.sh`
 * runs it as a stage of its own (off in CI by default, which it would take past its 20 minutes).
 * By hand: `MOLT_CLUSTER_FAULTS=1 .tools/bin/pnpm vitest run --project scenario test/scale-faults/cluster.test.ts`.
 */
const run = process.env["MOLT_CLUSTER_FAULTS"] === "1";

describe.skipIf(!run)("a 3-node cluster under faults mid-rollout (MOLT_CLUSTER_FAULTS=1)", () => {
  it("[scale-faults] the event stream's leader is SIGKILLed mid-rollout and started again: the rollout completes, nothing acknowledged is lost, nothing doubled", async () => {
    const id = await deployUntil("2.0.0", 40);
    const leader = await cluster.leaderOf(STREAM_EVENTS);
    const outcomesBefore = (await h().events(id)).filter(({ e }) => e.type === "HostOutcomeRecorded").length;
    await cluster.nodes[leader]!.kill();
    // A new leader is elected among the two others; the rollout goes on without the dead node.
    await waitFor("a new leader of the event stream", async () => ((await cluster.leaderOf(STREAM_EVENTS)) !== leader ? true : undefined), { timeoutMs: 30_000, intervalMs: 250 });
    await waitFor("progress without the killed node", async () => ((await h().events(id)).filter(({ e }) => e.type === "HostOutcomeRecorded").length > outcomesBefore + 20 ? true : undefined), { timeoutMs: 120_000, intervalMs: 250 });
    await cluster.nodes[leader]!.start();
    await expectCompleted(id);
    expect(outcomesBefore, "the kill landed mid-rollout").toBeLessThan(HOSTS.length);
    await expectNothingLostOrDoubled(id);
  }, 420_000);

  it("[scale-faults] the event stream's leader frozen with SIGSTOP for longer than the client timeouts, then resumed: the rollout completes, nothing lost or doubled", async () => {
    const id = await deployUntil("3.0.0", 40);
    const leader = await cluster.leaderOf(STREAM_EVENTS);
    cluster.nodes[leader]!.freeze();
    try {
      // nats.js requests and JetStream publishes time out after 5 s; the node stays frozen for longer.
      await new Promise((r) => setTimeout(r, FREEZE_MS));
    } finally {
      cluster.nodes[leader]!.thaw();
    }
    await expectCompleted(id);
    await expectNothingLostOrDoubled(id);
  }, 420_000);

  it(`[scale-faults] the whole bus down (every node stopped) for ${BUS_DOWN_MS / 1000} s mid-rollout: services and agents reconnect by themselves, the rollout completes, nothing lost or doubled`, async () => {
    const id = await deployUntil("4.0.0", 40);
    await Promise.all(cluster.nodes.map((n) => n.stop()));
    await new Promise((r) => setTimeout(r, BUS_DOWN_MS));
    await Promise.all(cluster.nodes.map((n) => n.start()));
    await expectCompleted(id);
    // Once, after the last fault: the views went through all three (a rebuild replays 300 hosts × 3 rollouts).
    await expectViewsEqualRebuild("4.0.0");
    await expectNothingLostOrDoubled(id);
    // Every simulated host runs the new version (read from the hosts' own files).
    const versions = await Promise.all(HOSTS.map((host) => readFile(join(s.system.hostRoot(host), "components", COMPONENT, "current", "VERSION"), "utf8").catch(() => "")));
    expect(versions.filter((v) => v !== "4.0.0\n")).toEqual([]);
  }, 480_000);
});
