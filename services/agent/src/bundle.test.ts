import { type ChildProcess, execFile, spawn } from "node:child_process";
import { copyFile, mkdir, readdir, readlink, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { desiredKey, KV_DESIRED, subjects } from "@molt/contracts";
import { buildAgentBundle, type FeedbackStandIn, type NatsServer, startFeedbackStandIn, startNatsServer, waitFor } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { componentPaths } from "./host/layout.js";
import { buildPackage, desiredTask, type PackageServer, startPackageServer, tempDir } from "./testing/fixtures.js";

/**
 * The agent as it ships: `pnpm build:agent` makes one file; that file, copied ALONE into a
 * directory with no node_modules above it, runs the agent and (as `node <bundle> client …`) the
 * upgrade client of a real upgrade, against a real nats-server and a real HTTP package server.
 */
const VERSION = "9.9.9-bundle";
const run = promisify(execFile);

let nats: NatsServer;
let nc: NatsConnection;
let http: PackageServer;
let work: string;
let bundle: string;
let feedback: FeedbackStandIn;
const children: ChildProcess[] = [];

/** Only what a host's service manager would set: no NODE_OPTIONS, no loaders, no repository paths. */
function hostEnv(extra: Record<string, string>): Record<string, string> {
  return { PATH: process.env["PATH"] ?? "/usr/bin:/bin", MOLT_LOG_LEVEL: "warn", ...extra };
}

beforeAll(async () => {
  work = await tempDir("bundle");
  const built = join(work, "build", "molt-agent.mjs");
  expect(await buildAgentBundle(built, { version: VERSION })).toMatchObject({ outfile: built, version: VERSION });
  // The host: one directory holding the bundle and nothing else.
  const host = join(work, "host");
  await mkdir(host);
  bundle = join(host, "molt-agent.mjs");
  await copyFile(built, bundle);

  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
  http = await startPackageServer();
  feedback = await startFeedbackStandIn(nc);
}, 120_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await nc?.close();
  await nats?.stop();
  await http?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

describe("the bundled agent", () => {
  it("[upgrade-client] is one file that needs no node_modules: its directory and every parent hold none", async () => {
    expect(await readdir(dirname(bundle))).toEqual(["molt-agent.mjs"]);
    for (let dir = dirname(bundle); dir !== dirname(dir); dir = dirname(dir)) {
      await expect(stat(join(dir, "node_modules")), dir).rejects.toMatchObject({ code: "ENOENT" });
    }
    // The client half answers on its own: bad arguments → its usage and exit 2.
    const client = await run(process.execPath, [bundle, "client"], { cwd: dirname(bundle), env: hostEnv({}) }).catch((e: unknown) => e as { code: number; stderr: string });
    expect(client).toMatchObject({ code: 2, stderr: expect.stringContaining("usage: main.ts --root <root> --task <taskId>") as string });
    // The agent half validates its configuration with a clear message.
    const agent = await run(process.execPath, [bundle], { cwd: dirname(bundle), env: hostEnv({ MOLT_ROOT: join(work, "nowhere") }) }).catch((e: unknown) => e as { code: number; stderr: string });
    expect(agent).toMatchObject({ code: 1, stderr: expect.stringContaining("MOLT_HOST_ID is required") as string });
  });

  it("[upgrade-client] runs a real upgrade: the agent starts `node <bundle> client …`, which downloads, switches and reports", async () => {
    const hostId = "bundle-1.eu-1.example.com";
    const root = join(work, "root");
    const agent = spawn(process.execPath, [bundle], {
      cwd: dirname(bundle),
      env: hostEnv({ MOLT_HOST_ID: hostId, MOLT_ROOT: root, MOLT_NATS_URL: nats.url, MOLT_SEED: "metrics-agent@1.0.0", MOLT_HEARTBEAT_MS: "200", MOLT_REPORT_RETRY_MS: "100" }),
      stdio: ["ignore", "pipe", "pipe"],
    });
    children.push(agent);
    let output = "";
    agent.stdout.on("data", (d: Buffer) => (output += d.toString()));
    agent.stderr.on("data", (d: Buffer) => (output += d.toString()));
    const exited = new Promise<number | null>((r) => agent.once("exit", (code) => r(code)));

    // The version written into the bundle at build time is what the agent reports.
    const first = await waitFor("a heartbeat from the bundled agent, or its exit", () =>
      agent.exitCode !== null
        ? { exited: agent.exitCode }
        : feedback.heartbeats.find((h) => h.hostId === hostId && h.agentVersion === VERSION && h.components["metrics-agent"] === "1.0.0"),
    { timeoutMs: 20_000 });
    expect(first, output).not.toHaveProperty("exited");

    const pkg = await buildPackage({ VERSION: "2.0.0\n", "bin/run.sh": { content: "#!/bin/sh\necho 2.0.0\n", mode: 0o755 } });
    const url = http.serve("/bundle/metrics-agent-2.0.0.tar.gz", { body: pkg.bytes });
    const task = desiredTask({ hostId, package: { platform: "linux-amd64", sha256: pkg.sha256, size: pkg.size, url } });
    const kv = await new Kvm(nc).create(KV_DESIRED);
    await kv.put(desiredKey(hostId, task.component), JSON.stringify(task));
    nc.publish(subjects.nudge(hostId));

    const entries = () => feedback.entriesOf(task.taskId);
    const verdict = await waitFor(
      "the client's verdict reported",
      () => entries().find((e) => e.kind === "succeeded" || e.kind === "failed" || e.kind === "rejected"),
      { timeoutMs: 30_000 },
    );
    expect(verdict, JSON.stringify(entries())).toMatchObject({ kind: "succeeded", version: "2.0.0" });
    expect(entries().map((e) => e.seq)).toEqual(entries().map((_, i) => i + 1));
    expect(http.requests.filter((r) => r.path === "/bundle/metrics-agent-2.0.0.tar.gz").length).toBeGreaterThan(0);
    expect(await readlink(componentPaths(root, "metrics-agent").current)).toBe(join("versions", "2.0.0"));
    await waitFor("a heartbeat showing 2.0.0", () => feedback.heartbeats.find((h) => h.hostId === hostId && h.components["metrics-agent"] === "2.0.0"));

    agent.kill("SIGTERM");
    expect(await exited).toBe(0);
  });
});
