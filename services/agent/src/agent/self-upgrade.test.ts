import { spawn } from "node:child_process";
import { mkdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { type DesiredState, desiredKey, type Heartbeat, KV_DESIRED, StepReport, subjects } from "@molt/contracts";
import { buildAgentBundle, type NatsServer, startNatsServer, waitFor } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pidAlive } from "../client/lock.js";
import { isTerminal } from "../host/task-files.js";
import { buildPackage, type BuiltPackage, desiredTask, type PackageServer, startPackageServer, tempDir } from "../testing/fixtures.js";

/**
 * The agent as a versioned component, shipped as what hosts run: the real one-file bundle
 * (`pnpm build:agent --version V`), with the release's `agent.env` sourced by the start command.
 * 2.0.1 is a broken artifact (a truncated bundle: it exits at once); 2.0.2 is a real bundle whose
 * release env stops its heartbeats.
 */
const SELF = "molt-agent";
let bundle100: string;
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
  const builds = await tempDir("bundles");
  roots.push(builds);
  const bundleOf = async (version: string) => readFile((await buildAgentBundle(join(builds, `${version}.mjs`), { version })).outfile, "utf8");
  bundle100 = await bundleOf("1.0.0");
  const bundle200 = await bundleOf("2.0.0");
  packages.set("2.0.0", await buildPackage({ "molt-agent.mjs": bundle200, "agent.env": "" }));
  packages.set("2.0.1", await buildPackage({ "molt-agent.mjs": bundle200.slice(0, Math.floor(bundle200.length / 2)), "agent.env": "" }));
  packages.set("2.0.2", await buildPackage({ "molt-agent.mjs": await bundleOf("2.0.2"), "agent.env": "export MOLT_HEARTBEAT_MS=600000\n" }));
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
  await writeFile(join(dir, "versions", "1.0.0", "molt-agent.mjs"), bundle100);
  await writeFile(join(dir, "versions", "1.0.0", "agent.env"), "");
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
          start: { command: `. ./agent.env; exec "${process.execPath}" molt-agent.mjs` },
          stop: { graceMs: 3_000 },
          pidFile: join(root, "agent", "agent.pid"),
          health: { watchMs: 1_500, intervalMs: 100, startTimeoutMs: 20_000, heartbeatStaleMs: 1_000 },
        },
      ],
    }),
  );
  const agent = spawn(process.execPath, ["molt-agent.mjs"], {
    cwd: join(dir, "current"),
    detached: true,
    stdio: "ignore",
    env: {
      ...process.env,
      MOLT_CONFIG: config,
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

describe("self-upgrade with the real bundle (real agent processes; the client outlives the agent it replaces)", () => {
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
