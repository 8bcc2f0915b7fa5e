import { spawn } from "node:child_process";
import { mkdir, readdir, readFile, readlink, rm } from "node:fs/promises";
import { join } from "node:path";
import { Kvm, type KV } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { type DesiredState, desiredKey, type Heartbeat, type JournalEntry, KV_DESIRED, StepReport, subjects } from "@molt/contracts";
import { createLogger } from "@molt/runtime";
import { type NatsServer, startNatsServer, waitFor } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { componentPaths } from "../host/layout.js";
import { claimTask, openJournal, readForwarded, readJournal, recordLaunch, taskPaths, writeForwarded } from "../host/task-files.js";
import { type Log, silentLog } from "../log.js";
import { startSim } from "../sim/sim.js";
import { buildPackage, type BuiltPackage, desiredTask, type PackageServer, startPackageServer, tempDir } from "../testing/fixtures.js";
import { simHostIds } from "./config.js";
import { kvDesiredSource } from "./desired.js";
import { createHostAgent, type HostAgent } from "./host-agent.js";
import { inProcessRunner, type TaskRunner } from "./runners.js";
import { testRunner } from "../testing/runner.js";

const log: Log = process.env["MOLT_TEST_LOG"] ? createLogger("agent-test") : silentLog();
const timing = { pollMs: 60_000, heartbeatMs: 300, reportRetryMs: 100, reportTimeoutMs: 250, journalPollMs: 50 };

let nats: NatsServer;
let nc: NatsConnection;
let http: PackageServer;
let pkg: BuiltPackage;
const roots: string[] = [];

/** What a feedback stand-in received, and how it answered. */
const reports: StepReport[] = [];
const heartbeats: Heartbeat[] = [];
/** Report requests per host to leave unanswered (proves the agent retries). */
const silentFor = new Map<string, number>();
/** Hosts whose reports feedback refuses (a withdrawn or timed-out task). */
const refuseFor = new Set<string>();

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
  http = await startPackageServer();
  pkg = await buildPackage({ VERSION: "2.0.0\n", "bin/run.sh": { content: "#!/bin/sh\n", mode: 0o755 } });
  nc.subscribe("molt.feedback.report.>", {
    callback: (_err, msg) => {
      const report = StepReport.parse(msg.json());
      const silent = silentFor.get(report.hostId) ?? 0;
      if (silent > 0) {
        silentFor.set(report.hostId, silent - 1);
        return;
      }
      reports.push(report);
      msg.respond(JSON.stringify(refuseFor.has(report.hostId) ? { status: "refused", reason: "task withdrawn" } : { status: "accepted" }));
    },
  });
  nc.subscribe("molt.feedback.heartbeat.>", {
    callback: (_err, msg) => {
      heartbeats.push(msg.json<Heartbeat>());
      msg.respond(JSON.stringify({ status: "ok" }));
    },
  });
  await nc.flush();
});

afterAll(async () => {
  await nc?.close();
  await nats?.stop();
  await http?.close();
  await Promise.all(roots.map((r) => rm(r, { recursive: true, force: true })));
});

async function newRoot(): Promise<string> {
  const root = await tempDir("agent");
  roots.push(root);
  return root;
}

function makeAgent(root: string, hostId: string, runner: TaskRunner = testRunner({ log })): HostAgent {
  return createHostAgent({
    nc,
    desired: kvDesiredSource(nc),
    runner,
    log: log.child({ hostId }),
    hostId,
    root,
    components: ["metrics-agent"],
    labels: { cluster: "eu-1" },
    seeds: [{ component: "metrics-agent", version: "1.0.0" }],
    agentVersion: "0.1.0-test",
    timing,
  });
}

function taskFor(hostId: string, over: Partial<DesiredState> = {}): DesiredState {
  const url = http.serve(`/${hostId}.tar.gz`, { body: pkg.bytes });
  return desiredTask({ hostId, package: { platform: "linux-amd64", sha256: pkg.sha256, size: pkg.size, url }, ...over });
}

async function putDesired(task: DesiredState): Promise<KV> {
  const kv = await new Kvm(nc).create(KV_DESIRED);
  await kv.put(desiredKey(task.hostId, task.component), JSON.stringify(task));
  nc.publish(subjects.nudge(task.hostId));
  return kv;
}

/**
 * A task's entries as feedback keeps them: one per sequence number. Reports are at-least-once (an
 * answer slower than reportTimeoutMs, as under load, makes the agent send the same entries again),
 * and the real feedback stores each (task, seq) once.
 */
const entriesOf = (taskId: string): JournalEntry[] => {
  const seen = new Set<number>();
  return reports.filter((r) => r.taskId === taskId).flatMap((r) => r.entries).filter((e) => !seen.has(e.seq) && seen.add(e.seq));
};
const terminalReported = (taskId: string) =>
  entriesOf(taskId).some((e) => e.kind === "succeeded" || e.kind === "failed" || e.kind === "rejected") ? true : undefined;

describe("host agent", () => {
  it("[spine] reads desired state on a nudge (waiting for the bucket), runs the client once, forwards every entry in order, retrying unanswered reports", async () => {
    const hostId = "web-7.eu-1.example.com";
    const root = await newRoot();
    silentFor.set(hostId, 2);
    const agent = makeAgent(root, hostId);
    // Started before the allocator's bucket exists: the agent must keep retrying its reads.
    await agent.start();
    const task = taskFor(hostId);
    await putDesired(task);

    await waitFor("the verdict reported", () => terminalReported(task.taskId), { timeoutMs: 15_000 });
    const got = entriesOf(task.taskId);
    expect(got.map((e) => e.seq)).toEqual(got.map((_, i) => i + 1));
    expect(got[0]?.kind).toBe("accepted");
    expect(got.at(-1)).toMatchObject({ kind: "succeeded", version: "2.0.0" });
    expect(silentFor.get(hostId)).toBe(0);
    expect(reports.filter((r) => r.taskId === task.taskId).every((r) => r.hostId === hostId && r.component === "metrics-agent")).toBe(true);
    await waitFor("forwarded recorded", async () => ((await readForwarded(root, task.taskId)) === got.length ? true : undefined));
    expect(await readlink(componentPaths(root, "metrics-agent").current)).toBe(join("versions", "2.0.0"));
    const hb = await waitFor("a heartbeat showing 2.0.0", () =>
      heartbeats.find((h) => h.hostId === hostId && h.components["metrics-agent"] === "2.0.0"),
    );
    expect(hb).toMatchObject({ os: process.platform, arch: process.arch, labels: { cluster: "eu-1" }, agentVersion: "0.1.0-test" });
    await waitFor("task closed", () => (agent.openTasks().length === 0 ? true : undefined));
    await agent.stop();

    // Restart on the same root with the same desired state: the task is never started again.
    const downloads = http.requests.filter((r) => r.path === `/${hostId}.tar.gz`).length;
    const reported = reports.length;
    const again = makeAgent(root, hostId);
    await again.start();
    nc.publish(subjects.nudge(hostId));
    await again.readDesired();
    expect(again.openTasks()).toEqual([]);
    await again.stop();
    expect(http.requests.filter((r) => r.path === `/${hostId}.tar.gz`)).toHaveLength(downloads);
    expect(downloads).toBe(1);
    const journal = (await readJournal(taskPaths(root, task.taskId).journal, 0)).entries;
    expect(journal.filter((e) => e.kind === "accepted")).toHaveLength(1);
    expect(reports.length).toBe(reported);
  });

  it("[spine] never starts a task whose deadline has passed", async () => {
    const hostId = "10.0.0.8";
    const root = await newRoot();
    const task = taskFor(hostId, { deadline: new Date(Date.now() - 1_000).toISOString() });
    await putDesired(task);
    const agent = makeAgent(root, hostId);
    await agent.start();
    await agent.readDesired();
    await agent.stop();
    expect(await readdir(join(root, "agent", "tasks"))).toEqual([]);
    expect(http.requests.filter((r) => r.path === `/${hostId}.tar.gz`)).toHaveLength(0);
    expect(reports.filter((r) => r.hostId === hostId)).toHaveLength(0);
  });

  it("[spine] journals `failed` for a client that died without a verdict, once, and forwards it", async () => {
    const hostId = "i-0abc_dead";
    const root = await newRoot();
    // A client that journals two entries and dies with code 7.
    const crashing: TaskRunner = {
      start(r, task) {
        const exited = (async () => {
          await claimTask(r, task.taskId, { owner: "client", pid: process.pid });
          const j = await openJournal(taskPaths(r, task.taskId).journal);
          await j.append({ kind: "accepted" });
          await j.append({ kind: "step-started", step: "begin" });
          await j.close();
          return { code: 7, signal: null };
        })();
        return { pid: undefined, exited, stop: () => undefined };
      },
    };
    const agent = makeAgent(root, hostId, crashing);
    await agent.start();
    const task = taskFor(hostId);
    await putDesired(task);
    await waitFor("the agent's verdict reported", () => terminalReported(task.taskId), { timeoutMs: 10_000 });
    await waitFor("task closed", () => (agent.openTasks().length === 0 ? true : undefined));
    await agent.stop();
    const got = entriesOf(task.taskId);
    // The open step is closed first, so feedback sees legal transitions.
    expect(got.map((e) => `${e.seq}:${e.kind}`)).toEqual(["1:accepted", "2:step-started", "3:step-failed", "4:failed"]);
    expect(got[2]).toMatchObject({ step: "begin", error: "upgrade client exited with code 7" });
    expect(got[3]).toMatchObject({ reason: "upgrade client exited with code 7", step: "begin" });
  });

  it("[spine] a refused report is final: the agent stops sending that task's entries and closes it", async () => {
    const hostId = "web-9.eu-1.example.com";
    const root = await newRoot();
    refuseFor.add(hostId);
    const agent = makeAgent(root, hostId);
    await agent.start();
    const task = taskFor(hostId);
    await putDesired(task);
    await waitFor("task closed", async () => {
      const journal = (await readJournal(taskPaths(root, task.taskId).journal, 0)).entries;
      const done = journal.at(-1)?.kind === "succeeded" && (await readForwarded(root, task.taskId)) === journal.length;
      return done && agent.openTasks().length === 0 ? true : undefined;
    });
    await agent.stop();
    expect(reports.filter((r) => r.taskId === task.taskId)).toHaveLength(1);
  });

  it("[spine] after a restart, resumes forwarding and ends a task whose client is gone", async () => {
    const hostId = "fe80::7";
    const root = await newRoot();
    const task = taskFor(hostId);
    // The state a killed agent and a killed client leave: launched, claimed by a now dead pid, one entry journaled.
    const dead = spawn(process.execPath, ["-e", ""]);
    const deadPid = dead.pid!;
    await new Promise((r) => dead.once("exit", r));
    await mkdir(join(root, "agent", "tasks"), { recursive: true });
    await recordLaunch(root, task);
    await claimTask(root, task.taskId, { owner: "client", pid: deadPid });
    const j = await openJournal(taskPaths(root, task.taskId).journal);
    await j.append({ kind: "accepted" });
    await j.close();

    const agent = makeAgent(root, hostId);
    await agent.start();
    await waitFor("the verdict reported", () => terminalReported(task.taskId), { timeoutMs: 10_000 });
    await agent.stop();
    const got = entriesOf(task.taskId);
    expect(got.map((e) => `${e.seq}:${e.kind}`)).toEqual(["1:accepted", "2:failed"]);
    expect(got[1]).toMatchObject({ reason: `upgrade client (pid ${deadPid}) exited without a verdict` });
    expect(http.requests.filter((r) => r.path === `/${hostId}.tar.gz`)).toHaveLength(0);
  });

  it("[spine] an agent restarted while its client runs waits for that client and forwards the rest; no second run", async () => {
    const hostId = "db-3.eu-1.example.com";
    const root = await newRoot();
    let release!: () => void;
    const hold = new Promise<void>((r) => (release = r));
    const url = http.serve(`/${hostId}.tar.gz`, { body: pkg.bytes, hold });
    const task = desiredTask({ hostId, package: { platform: "linux-amd64", sha256: pkg.sha256, size: pkg.size, url } });
    const first = makeAgent(root, hostId);
    await first.start();
    await putDesired(task);
    await waitFor("the client downloading", () =>
      entriesOf(task.taskId).some((e) => e.kind === "step-started" && e.step === "download") ? true : undefined,
    );
    await first.stop();

    const second = makeAgent(root, hostId);
    await second.start();
    expect(second.openTasks()).toEqual([task.taskId]);
    release();
    await waitFor("the verdict reported", () => terminalReported(task.taskId), { timeoutMs: 10_000 });
    await waitFor("task closed", () => (second.openTasks().length === 0 ? true : undefined));
    await second.stop();
    const journal = (await readJournal(taskPaths(root, task.taskId).journal, 0)).entries;
    expect(journal.at(-1)).toMatchObject({ kind: "succeeded" });
    expect(journal.filter((e) => e.kind === "accepted")).toHaveLength(1);
    // Every seq reached feedback, in order (a resend after the restart would be a harmless duplicate).
    const seqs = [...new Set(entriesOf(task.taskId).map((e) => e.seq))];
    expect(seqs).toEqual(journal.map((e) => e.seq));
    expect(await readForwarded(root, task.taskId)).toBe(journal.length);
    expect(http.requests.filter((r) => r.path === `/${hostId}.tar.gz`)).toHaveLength(1);
  });

  it("[upgrade-client] a withdrawn task stops a client that has not reached OVERRIDE: journaled as cancelled, nothing touched", async () => {
    const hostId = "web-21.eu-1.example.com";
    const root = await newRoot();
    const hold = new Promise<void>(() => undefined); // the download never completes by itself
    const url = http.serve(`/${hostId}.tar.gz`, { body: pkg.bytes, hold });
    const task = desiredTask({ hostId, package: { platform: "linux-amd64", sha256: pkg.sha256, size: pkg.size, url } });
    const agent = makeAgent(root, hostId);
    await agent.start();
    const kv = await putDesired(task);
    await waitFor("the client downloading", () =>
      entriesOf(task.taskId).some((e) => e.kind === "step-started" && e.step === "download") ? true : undefined,
    );
    await kv.delete(desiredKey(hostId, "metrics-agent"));
    nc.publish(subjects.nudge(hostId));
    await waitFor("the verdict reported", () => terminalReported(task.taskId), { timeoutMs: 10_000 });
    await agent.stop();
    const journal = (await readJournal(taskPaths(root, task.taskId).journal, 0)).entries;
    expect(journal.find((e) => e.kind === "step-failed")).toMatchObject({ step: "download", error: expect.stringMatching(/^cancelled: .*SIGTERM/) as unknown });
    expect(journal.at(-1)).toMatchObject({ kind: "failed", step: "download", reason: expect.stringMatching(/^cancelled/) as unknown });
    const paths = componentPaths(root, "metrics-agent");
    expect(await readlink(paths.current)).toBe(join("versions", "1.0.0"));
    expect(await readdir(paths.versions)).toEqual(["1.0.0"]);
    expect(await readdir(paths.staging)).toEqual([]);
  });

  it("[upgrade-client] a task withdrawn once its client is past OVERRIDE finishes: the host runs what the journal says", async () => {
    const hostId = "web-22.eu-1.example.com";
    const root = await newRoot();
    const task = taskFor(hostId);
    // Each step pauses, so the withdrawal lands while OVERRIDE is under way.
    const agent = makeAgent(root, hostId, testRunner({ log, stepDelayMs: 400 }));
    await agent.start();
    const kv = await putDesired(task);
    await waitFor("the client in OVERRIDE", () =>
      entriesOf(task.taskId).some((e) => e.kind === "step-started" && e.step === "override") ? true : undefined,
    { timeoutMs: 10_000 });
    await kv.purge(desiredKey(hostId, "metrics-agent"));
    nc.publish(subjects.nudge(hostId));
    await waitFor("the verdict reported", () => terminalReported(task.taskId), { timeoutMs: 10_000 });
    await agent.stop();
    expect(entriesOf(task.taskId).at(-1)).toMatchObject({ kind: "succeeded", version: "2.0.0" });
    expect(await readlink(componentPaths(root, "metrics-agent").current)).toBe(join("versions", "2.0.0"));
  });

  it("[upgrade-client] old task dirs are pruned: finished tasks past their deadline beyond the newest kept, never an open or live one", async () => {
    const hostId = "web-23.eu-1.example.com";
    const root = await newRoot();
    const finished = async (deadlineMs: number, terminal: boolean) => {
      const task = taskFor(hostId, { deadline: new Date(deadlineMs).toISOString() });
      await recordLaunch(root, task);
      await claimTask(root, task.taskId, { owner: "client", pid: 1 });
      const j = await openJournal(taskPaths(root, task.taskId).journal);
      await j.append({ kind: "accepted" });
      if (terminal) await j.append({ kind: "succeeded", version: "2.0.0" });
      await j.close();
      await writeForwarded(root, task.taskId, terminal ? 2 : 1);
      return task.taskId;
    };
    await finished(Date.now() - 30_000, true);
    await finished(Date.now() - 20_000, true);
    const newest = await finished(Date.now() - 10_000, true);
    const live = await finished(Date.now() + 60_000, true);
    const agent = createHostAgent({
      nc,
      desired: kvDesiredSource(nc),
      runner: testRunner({ log }),
      log,
      hostId,
      root,
      components: ["metrics-agent"],
      labels: {},
      seeds: [],
      agentVersion: "0.1.0-test",
      timing: { ...timing, keepTasks: 2 },
    });
    await agent.start();
    await agent.stop();
    // Kept: the two newest (one of them still before its deadline); gone: the older finished ones.
    expect((await readdir(join(root, "agent", "tasks"))).sort()).toEqual([live, newest].sort());
  });

  it("[upgrade-client] a component configured with its own root is installed there (linked from the host root)", async () => {
    const hostId = "web-24.eu-1.example.com";
    const root = await newRoot();
    const elsewhere = join(await newRoot(), "opt", "geo");
    const agent = createHostAgent({
      nc,
      desired: kvDesiredSource(nc),
      runner: testRunner({ log }),
      log,
      hostId,
      root,
      components: [],
      componentConfigs: [{ name: "geo-db", kind: "third-party", root: elsewhere }],
      labels: {},
      seeds: [],
      agentVersion: "0.1.0-test",
      timing,
    });
    await agent.start();
    expect(await agent.managedComponents()).toEqual(["geo-db"]);
    const task = taskFor(hostId, { component: "geo-db", kind: "install", fromVersion: null });
    await putDesired(task);
    await waitFor("the verdict reported", () => terminalReported(task.taskId), { timeoutMs: 15_000 });
    await agent.stop();
    expect(entriesOf(task.taskId).at(-1)).toMatchObject({ kind: "succeeded", version: "2.0.0" });
    expect(await readlink(join(elsewhere, "current"))).toBe(join("versions", "2.0.0"));
    expect(await readFile(join(elsewhere, "current", "VERSION"), "utf8")).toBe("2.0.0\n");
    expect(await readlink(join(root, "components", "geo-db"))).toBe(elsewhere);
  });

  it("[scale-faults] with rootScanMs the root is looked at once per interval, yet a task's own switch shows in the next heartbeat", async () => {
    const hostId = "scan-1.eu-1.example.com";
    const root = await newRoot();
    const agent = createHostAgent({
      nc,
      desired: kvDesiredSource(nc),
      runner: inProcessRunner(),
      log,
      hostId,
      root,
      components: [],
      labels: {},
      seeds: [{ component: "metrics-agent", version: "1.0.0" }],
      agentVersion: "0.1.0-test",
      timing: { ...timing, heartbeatMs: 100, rootScanMs: 60_000 },
    });
    await agent.start();
    await waitFor("a heartbeat at 1.0.0", () => heartbeats.find((h) => h.hostId === hostId && h.components["metrics-agent"] === "1.0.0"));
    // A component dir made by hand is not looked for again before the interval is over.
    await mkdir(join(root, "components", "by-hand", "versions", "0.1.0"), { recursive: true });
    const seen = heartbeats.length;
    await waitFor("three more heartbeats", () => (heartbeats.filter((h, i) => i >= seen && h.hostId === hostId).length >= 3 ? true : undefined));
    expect(heartbeats.filter((h, i) => i >= seen && h.hostId === hostId).every((h) => !("by-hand" in h.components))).toBe(true);
    // The agent's own task ends: what it changed (and the dir made by hand) shows at once.
    const task = taskFor(hostId);
    await putDesired(task);
    await waitFor("the verdict reported", () => terminalReported(task.taskId), { timeoutMs: 15_000 });
    await waitFor("task closed", () => (agent.openTasks().length === 0 ? true : undefined));
    const after = heartbeats.length;
    const hb = await waitFor("a heartbeat after the task", () => heartbeats.find((h, i) => i >= after && h.hostId === hostId));
    expect(hb.components).toEqual({ "metrics-agent": "2.0.0", "by-hand": null });
    await agent.stop();
  });

  it("[spine] --sim: many hosts on one connection, same step machine in-process", async () => {
    const rootBase = await newRoot();
    const hostIds = simHostIds("simt-", 1000);
    const started = Date.now();
    const sim = await startSim({
      nc,
      desired: kvDesiredSource(nc),
      log,
      hostIds,
      rootBase,
      components: [],
      labels: {},
      seeds: [{ component: "metrics-agent", version: "1.0.0" }],
      agentVersion: "0.1.0-test",
      // A linger longer than a task takes even on a loaded machine: its entries go out in one
      // report (the verdict ends the wait), however the steps are spaced.
      timing: { ...timing, heartbeatMs: 1_000, reportLingerMs: 5_000 },
      stepDelayMs: 0,
    });
    const startMs = Date.now() - started;
    const target = hostIds[41]!;
    const task = taskFor(target);
    await putDesired(task);
    await waitFor("the sim host's verdict", () => terminalReported(task.taskId), { timeoutMs: 10_000 });
    expect(entriesOf(task.taskId).at(-1)).toMatchObject({ kind: "succeeded", version: "2.0.0" });
    expect(await readFile(join(rootBase, target, "components/metrics-agent/current/VERSION"), "utf8")).toBe("2.0.0\n");
    // [roll-engine] every entry, in seq order, in few reports: a simulated host lingers for the
    // entries behind the first, so a report (one commit for every consumer) carries many; the
    // verdict is not held back.
    // A late answer makes the agent send the same report again (same first seq): counted once.
    const sent = new Set(reports.filter((r) => r.taskId === task.taskId).map((r) => r.entries[0]?.seq));
    const seqs = [...new Set(entriesOf(task.taskId).map((e) => e.seq))];
    expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => i + 1));
    expect(sent.size).toBeLessThanOrEqual(2);
    await waitFor(
      "a heartbeat from every simulated host",
      () => {
        const seen = new Set(heartbeats.map((h) => h.hostId));
        return hostIds.every((h) => seen.has(h)) ? true : undefined;
      },
      { timeoutMs: 10_000 },
    );
    await sim.stop();
    expect(startMs).toBeLessThan(10_000);
  });
});
