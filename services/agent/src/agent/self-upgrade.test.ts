import { spawn } from "node:child_process";
import { mkdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { type DesiredState, desiredKey, type Heartbeat, KV_DESIRED, StepReport, subjects } from "@molt/contracts";
import { type NatsServer, startNatsServer, waitFor } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pidAlive } from "../client/lock.js";
import { isTerminal } from "../host/task-files.js";
import { buildPackage, type BuiltPackage, desiredTask, type PackageServer, startPackageServer, tempDir } from "../testing/fixtures.js";

/**
 * The agent as a versioned component: a launcher that sets the version the agent reports and runs
 * the real agent (its sources, with tsx). MODE makes a version exit at once or stop heartbeating.
 */
const LAUNCHER = `
import { readFileSync } from "node:fs";
const here = (f) => readFileSync(new URL(f, import.meta.url), "utf8").trim();
process.env.MOLT_AGENT_VERSION = here("./VERSION");
const mode = here("./MODE");
if (mode === "exit") process.exit(1);
if (mode === "silent") process.env.MOLT_HEARTBEAT_MS = "600000";
const { main } = await import(process.env.MOLT_AGENT_ENTRY);
await main([], process.env);
`;

const SELF = "molt-agent";
const tsx = import.meta.resolve("tsx");
const agentEntry = fileURLToPath(new URL("../index.ts", import.meta.url));
let nats: NatsServer;
let nc: NatsConnection;
let server: PackageServer;
const packages = new Map<string, BuiltPackage>();
const reports: StepReport[] = [];
const heartbeats: Heartbeat[] = [];
const roots: string[] = [];
const agentPids = new Set<number>();

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
  server = await startPackageServer();
  for (const [version, mode] of [["2.0.0", "ok"], ["2.0.1", "exit"], ["2.0.2", "silent"]] as const)
    packages.set(version, await buildPackage({ VERSION: `${version}\n`, MODE: `${mode}\n`, "agent.mjs": LAUNCHER }));
  nc.subscribe("molt.feedback.report.>", {
    callback: (_e, msg) => {
      reports.push(StepReport.parse(msg.json()));
      msg.respond(JSON.stringify({ status: "accepted" }));
    },
  });
  nc.subscribe("molt.feedback.heartbeat.>", {
    callback: (_e, msg) => {
      heartbeats.push(msg.json<Heartbeat>());
      msg.respond(JSON.stringify({ status: "ok" }));
    },
  });
  await new Kvm(nc).create(KV_DESIRED);
});
afterAll(async () => {
  for (const pid of agentPids) if (pidAlive(pid)) process.kill(pid, "SIGKILL");
  await nc?.close();
  await nats?.stop();
  await server?.close();
  await Promise.all(roots.map((r) => rm(r, { recursive: true, force: true })));
});

/** A host whose agent 1.0.0 runs as a real process, configured by a file, managing itself. */
async function hostRunning100(hostId: string) {
  const root = await tempDir("self");
  roots.push(root);
  const dir = join(root, "components", SELF);
  await mkdir(join(dir, "versions", "1.0.0"), { recursive: true });
  await writeFile(join(dir, "versions", "1.0.0", "VERSION"), "1.0.0\n");
  await writeFile(join(dir, "versions", "1.0.0", "MODE"), "ok\n");
  await writeFile(join(dir, "versions", "1.0.0", "agent.mjs"), LAUNCHER);
  await symlink(join("versions", "1.0.0"), join(dir, "current"));
  const config = join(root, "agent.json");
  await writeFile(
    config,
    JSON.stringify({
      hostId,
      root,
      nats: { urls: [nats.url] },
      components: [
        {
          name: SELF,
          kind: "self",
          start: { command: `exec "${process.execPath}" --import "${tsx}" agent.mjs` },
          stop: { graceMs: 3_000 },
          pidFile: join(root, "agent", "agent.pid"),
          health: { watchMs: 1_500, intervalMs: 100, startTimeoutMs: 20_000, heartbeatStaleMs: 1_000 },
        },
      ],
    }),
  );
  const agent = spawn(process.execPath, ["--import", tsx, "agent.mjs"], {
    cwd: join(dir, "current"),
    detached: true,
    stdio: "ignore",
    env: {
      ...process.env,
      MOLT_CONFIG: config,
      MOLT_AGENT_ENTRY: agentEntry,
      MOLT_HEARTBEAT_MS: "200",
      MOLT_REPORT_RETRY_MS: "100",
      MOLT_LOG_LEVEL: "error",
    },
  });
  agent.unref();
  agentPids.add(agent.pid!);
  await waitFor("agent 1.0.0 heartbeating", () => heartbeats.find((h) => h.hostId === hostId && h.agentVersion === "1.0.0"), { timeoutMs: 20_000 });
  return { root, oldPid: agent.pid! };
}

async function deploy(hostId: string, version: string): Promise<DesiredState> {
  const pkg = packages.get(version)!;
  const url = server.serve(`/${hostId}-${version}.tar.gz`, { body: pkg.bytes });
  const task = desiredTask({ hostId, component: SELF, version, fromVersion: "1.0.0", package: { platform: "linux-amd64", sha256: pkg.sha256, size: pkg.size, url } });
  const kv = await new Kvm(nc).open(KV_DESIRED);
  await kv.put(desiredKey(hostId, SELF), JSON.stringify(task));
  nc.publish(subjects.nudge(hostId));
  return task;
}

const entriesOf = (taskId: string) => reports.filter((r) => r.taskId === taskId).flatMap((r) => r.entries);

async function finalEntries(taskId: string) {
  return waitFor("the task's final event reported", () => (entriesOf(taskId).some(isTerminal) ? entriesOf(taskId) : undefined), { timeoutMs: 60_000 });
}

async function trackPid(root: string) {
  const pid = Number((await readFile(join(root, "agent", "agent.pid"), "utf8")).trim());
  agentPids.add(pid);
  return pid;
}

describe("self-upgrade of the agent (real agent processes; the client outlives the agent it replaces)", () => {
  it("[upgrade-client] success: the client stops agent 1.0.0, starts 2.0.0, which heartbeats its version and reports the task", async () => {
    const hostId = "self-1.example.com";
    const { root, oldPid } = await hostRunning100(hostId);
    const task = await deploy(hostId, "2.0.0");
    const entries = await finalEntries(task.taskId);
    expect(entries.at(-1)).toMatchObject({ kind: "succeeded", version: "2.0.0" });
    expect(entries.find((e) => e.kind === "step-succeeded" && e.step === "verify")).toMatchObject({ detail: expect.stringContaining("version 2.0.0") as unknown });
    await waitFor("heartbeats from agent 2.0.0", () => heartbeats.find((h) => h.hostId === hostId && h.agentVersion === "2.0.0"));
    expect(pidAlive(oldPid)).toBe(false);
    expect(await trackPid(root)).not.toBe(oldPid);
  }, 90_000);

  it.each([
    ["2.0.1", "exits at once", /the new version exited right after START|not healthy/],
    ["2.0.2", "stops heartbeating", /the agent stopped heartbeating/],
  ])("[upgrade-client] rollback by the watcher when the new agent (%s) %s: agent 1.0.0 runs again and reports it", async (version, _how, reason) => {
    const hostId = `self-${version.replaceAll(".", "-")}.example.com`;
    const { root } = await hostRunning100(hostId);
    const task = await deploy(hostId, version);
    const entries = await finalEntries(task.taskId);
    expect(entries.at(-1)).toMatchObject({ kind: "failed", reason: expect.stringMatching(reason) as unknown });
    expect(entries.find((e) => e.kind === "rolled-back")).toBeDefined();
    expect(entries.find((e) => e.kind === "step-succeeded" && e.step === "rollback")).toMatchObject({ detail: expect.stringContaining("version 1.0.0") as unknown });
    const since = heartbeats.length;
    await waitFor("agent 1.0.0 heartbeating again", () => heartbeats.slice(since).find((h) => h.hostId === hostId && h.agentVersion === "1.0.0"), { timeoutMs: 20_000 });
    await trackPid(root);
  }, 90_000);
});
