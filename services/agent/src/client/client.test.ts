import { spawn } from "node:child_process";
import { lstat, readdir, readFile, readlink, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { DesiredState, JournalEntry } from "@molt/contracts";
import { createServer } from "node:http";
import { freePort, waitFor } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { componentPaths, seedComponent } from "../host/layout.js";
import { readJournal, recordLaunch, taskPaths } from "../host/task-files.js";
import { archivePath } from "./staging.js";
import { silentLog } from "../log.js";
import { buildPackage, type BuiltPackage, desiredTask, type PackageServer, startPackageServer, tempDir } from "../testing/fixtures.js";
import { testRunner } from "../testing/runner.js";

const HOST = "web-1.example.com";
const runner = testRunner({ log: silentLog() });

let server: PackageServer;
let pkg: BuiltPackage;
const roots: string[] = [];

beforeAll(async () => {
  server = await startPackageServer();
  pkg = await buildPackage({ VERSION: "2.0.0\n", "bin/run.sh": { content: "#!/bin/sh\necho 2.0.0\n", mode: 0o755 } });
});
afterAll(async () => {
  await server.close();
  await Promise.all(roots.map((r) => rm(r, { recursive: true, force: true })));
});

async function seededRoot(): Promise<string> {
  const root = await tempDir("host");
  roots.push(root);
  await seedComponent(root, { component: "metrics-agent", version: "1.0.0" });
  return root;
}

function taskFor(path: string, body: Buffer, over: Partial<DesiredState> = {}): DesiredState {
  const url = server.serve(path, { body });
  return desiredTask({ hostId: HOST, package: { platform: "linux-amd64", sha256: pkg.sha256, size: pkg.size, url }, ...over });
}

/** Launches the real client process as the agent does: task.json first, then the process. */
async function runClient(root: string, task: DesiredState) {
  await recordLaunch(root, task);
  const run = runner.start(root, task, () => undefined);
  return { run, journal: () => journalOf(root, task.taskId) };
}

async function journalOf(root: string, taskId: string): Promise<JournalEntry[]> {
  return (await readJournal(taskPaths(root, taskId).journal, 0)).entries;
}

const shape = (entries: JournalEntry[]) =>
  entries.map((e) => ("step" in e && e.kind !== "failed" ? `${e.kind}:${e.step}` : e.kind));

describe("upgrade client process", () => {
  it("[spine] upgrades a seeded 1.0.0 host to 2.0.0 from HTTP, journaling every step in order", async () => {
    const root = await seededRoot();
    const task = taskFor("/ok.tar.gz", pkg.bytes);
    const { run, journal } = await runClient(root, task);
    expect(await run.exited).toEqual({ code: 0, signal: null });
    const entries = await journal();
    expect(shape(entries)).toEqual([
      "accepted",
      "step-started:begin",
      "step-succeeded:begin",
      "step-started:backup",
      "step-succeeded:backup",
      "step-started:download",
      "step-succeeded:download",
      "step-started:override",
      "step-succeeded:override",
      "step-started:end-action",
      "step-succeeded:end-action",
      "succeeded",
    ]);
    expect(entries.map((e) => e.seq)).toEqual(entries.map((_, i) => i + 1));
    expect(entries.at(-1)).toMatchObject({ kind: "succeeded", version: "2.0.0" });
    for (const e of entries) if (e.kind === "step-succeeded") expect(e.durationMs).toBeGreaterThanOrEqual(0);

    const paths = componentPaths(root, "metrics-agent");
    expect(await readlink(paths.current)).toBe(join("versions", "2.0.0"));
    expect(await readFile(join(paths.current, "VERSION"), "utf8")).toBe("2.0.0\n");
    expect((await lstat(join(paths.current, "bin/run.sh"))).mode & 0o777).toBe(0o755);
    expect(await readFile(join(paths.version("1.0.0"), "VERSION"), "utf8")).toBe("1.0.0\n");
    expect(await readdir(paths.staging)).toEqual([]);
    await expect(lstat(paths.lock)).rejects.toThrow(/ENOENT/);
  });

  it("[spine] refuses tampered bytes: failed with a sha256 reason, current stays 1.0.0, nothing left behind", async () => {
    const root = await seededRoot();
    const tampered = Buffer.from(pkg.bytes);
    tampered[tampered.length - 10] = tampered[tampered.length - 10]! ^ 0xff;
    const task = taskFor("/tampered.tar.gz", tampered);
    const { run, journal } = await runClient(root, task);
    expect((await run.exited).code).toBe(0);
    const entries = await journal();
    const verdict = entries.at(-1);
    expect(verdict).toMatchObject({ kind: "failed", step: "download" });
    expect(verdict?.kind === "failed" && verdict.reason).toMatch(/sha256 mismatch: expected [0-9a-f]{64}, got [0-9a-f]{64}/);
    expect(shape(entries)).toContain("step-succeeded:end-action");
    const paths = componentPaths(root, "metrics-agent");
    expect(await readlink(paths.current)).toBe(join("versions", "1.0.0"));
    expect(await readdir(paths.versions)).toEqual(["1.0.0"]);
    expect(await readdir(paths.staging)).toEqual([]);
    await expect(lstat(paths.lock)).rejects.toThrow(/ENOENT/);
  });

  it("[spine] a second client for the same component while the first holds the lock ends at once, rejected, touching nothing", async () => {
    const root = await seededRoot();
    let release!: () => void;
    const hold = new Promise<void>((r) => (release = r));
    const url = server.serve("/slow.tar.gz", { body: pkg.bytes, hold });
    const first = desiredTask({ hostId: HOST, package: { platform: "linux-amd64", sha256: pkg.sha256, size: pkg.size, url } });
    const a = await runClient(root, first);
    await waitFor("first client downloading", async () =>
      shape(await a.journal()).includes("step-started:download") ? true : undefined,
    );
    const paths = componentPaths(root, "metrics-agent");
    const stagingBefore = await readdir(paths.staging);

    const second = taskFor("/ok2.tar.gz", pkg.bytes);
    const b = await runClient(root, second);
    expect((await b.run.exited).code).toBe(0);
    const bEntries = await b.journal();
    expect(shape(bEntries)).toEqual(["accepted", "step-started:begin", "step-failed:begin", "rejected"]);
    expect(bEntries.at(-1)?.kind === "rejected" && bEntries.at(-1)).toMatchObject({ reason: expect.stringMatching(/lock busy.*task t-/) as unknown });
    expect(server.requests.some((r) => r.path === "/ok2.tar.gz")).toBe(false);
    expect(await readdir(paths.staging)).toEqual(stagingBefore);
    expect(await readlink(paths.current)).toBe(join("versions", "1.0.0"));

    release();
    expect((await a.run.exited).code).toBe(0);
    expect((await a.journal()).at(-1)).toMatchObject({ kind: "succeeded", version: "2.0.0" });
  });

  it("[spine] never runs a task twice: a second client for the same task id exits without touching the journal", async () => {
    const root = await seededRoot();
    const task = taskFor("/once.tar.gz", pkg.bytes);
    const { run, journal } = await runClient(root, task);
    await run.exited;
    const before = await journal();
    const again = runner.start(root, task, () => undefined);
    expect((await again.exited).code).toBe(3);
    expect(await journal()).toEqual(before);
  });

  it("[spine] downloads through the host's mirror when one is configured", async () => {
    const root = await seededRoot();
    server.serve("/v1/packages/mirrored.tar.gz", { body: pkg.bytes });
    // The origin in the task is unreachable: only the mirror can serve it.
    const task = desiredTask({
      hostId: HOST,
      package: { platform: "linux-amd64", sha256: pkg.sha256, size: pkg.size, url: "http://127.0.0.1:9/v1/packages/mirrored.tar.gz" },
    });
    await recordLaunch(root, task);
    const run = testRunner({ log: silentLog(), mirror: server.base }).start(root, task, () => undefined);
    expect((await run.exited).code).toBe(0);
    const entries = await journalOf(root, task.taskId);
    expect(entries.at(-1)).toMatchObject({ kind: "succeeded", version: "2.0.0" });
    expect(entries.find((e) => e.kind === "step-succeeded" && e.step === "download")).toMatchObject({ detail: expect.stringContaining("via") as unknown });
  });

  it("[scale-faults] tries the host's mirrors in order, then the origin: a mirror that is down or serves other bytes is skipped, and the origin's verified bytes are installed", async () => {
    const root = await seededRoot();
    const bad = await startPackageServer();
    try {
      const path = "/v1/packages/fallback.tar.gz";
      // Same size, other bytes: only the sha256 check can tell.
      const forged = Buffer.from(pkg.bytes);
      forged.writeUInt8(forged.readUInt8(forged.length - 1) ^ 0xff, forged.length - 1);
      bad.serve(path, { body: forged });
      const task = taskFor(path, pkg.bytes);
      await recordLaunch(root, task);
      const run = testRunner({ log: silentLog(), mirror: `http://127.0.0.1:9,${bad.base}` }).start(root, task, () => undefined);
      expect((await run.exited).code).toBe(0);
      const entries = await journalOf(root, task.taskId);
      expect(entries.at(-1)).toMatchObject({ kind: "succeeded", version: "2.0.0" });
      const detail = (entries.find((e) => e.kind === "step-succeeded" && e.step === "download") as { detail: string }).detail;
      expect(detail).not.toContain(" via ");
      expect(detail).toContain("http://127.0.0.1:9 failed");
      expect(detail).toMatch(new RegExp(`${bad.base} failed \\(sha256 mismatch`));
      expect(bad.requests.filter((r) => r.path === path)).toHaveLength(1);
      expect(server.requests.filter((r) => r.path === path)).toHaveLength(1);
      expect(await readFile(join(componentPaths(root, "metrics-agent").current, "VERSION"), "utf8")).toBe("2.0.0\n");
    } finally {
      await bad.close();
    }
  });

  it("[scale-faults] a mirror that serves the package is used and the origin is not asked", async () => {
    const root = await seededRoot();
    const mirror = await startPackageServer();
    try {
      const path = "/v1/packages/from-mirror.tar.gz";
      mirror.serve(path, { body: pkg.bytes });
      const task = taskFor(path, pkg.bytes);
      await recordLaunch(root, task);
      const run = testRunner({ log: silentLog(), mirror: `${mirror.base}, http://127.0.0.1:9` }).start(root, task, () => undefined);
      expect((await run.exited).code).toBe(0);
      const entries = await journalOf(root, task.taskId);
      expect(entries.find((e) => e.kind === "step-succeeded" && e.step === "download")).toMatchObject({ detail: expect.stringContaining(`via ${mirror.base}`) as unknown });
      expect(mirror.requests.filter((r) => r.path === path)).toHaveLength(1);
      expect(server.requests.filter((r) => r.path === path)).toHaveLength(0);
    } finally {
      await mirror.close();
    }
  });

  it("[upgrade-client] the client outlives its agent: killing the agent's whole process group leaves the client running to its verdict", async () => {
    const root = await seededRoot();
    let release!: () => void;
    const hold = new Promise<void>((r) => (release = r));
    const url = server.serve("/outlive.tar.gz", { body: pkg.bytes, hold });
    const task = desiredTask({ hostId: HOST, package: { platform: "linux-amd64", sha256: pkg.sha256, size: pkg.size, url } });
    await recordLaunch(root, task);
    const launcher = fileURLToPath(new URL("../testing/launch-client.ts", import.meta.url));
    // The stand-in agent gets its own process group, as a service manager or a shell would give it.
    const agent = spawn(process.execPath, ["--import", import.meta.resolve("tsx"), launcher, root, task.taskId], {
      detached: true,
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    agent.stdout.on("data", (d: Buffer) => (out += d.toString()));
    await waitFor("the client launched", () => (/launched \d+/.test(out) ? true : undefined), { timeoutMs: 15_000 });
    await waitFor("the client downloading", async () =>
      shape(await journalOf(root, task.taskId)).includes("step-started:download") ? true : undefined,
    { timeoutMs: 15_000 });
    // What a terminal's Ctrl-C or a service manager's group kill does to the agent.
    process.kill(-agent.pid!, "SIGKILL");
    await new Promise((r) => agent.once("exit", r));
    release();
    const verdict = await waitFor("the client's verdict", async () => (await journalOf(root, task.taskId)).find((e) => e.kind === "succeeded" || e.kind === "failed"), { timeoutMs: 15_000 });
    expect(verdict).toMatchObject({ kind: "succeeded", version: "2.0.0" });
  });

  it("[upgrade-client] a download cut by a client crash resumes with Range in the next attempt (BEGIN keeps the partial file)", async () => {
    const root = await seededRoot();
    const half = Math.floor(pkg.size / 2);
    const cutUrl = server.serve("/cut.tar.gz", { body: pkg.bytes, cutAfter: half });
    const first = desiredTask({ hostId: HOST, package: { platform: "linux-amd64", sha256: pkg.sha256, size: pkg.size, url: cutUrl } });
    const a = await runClient(root, first);
    const paths = componentPaths(root, "metrics-agent");
    await waitFor("half the package on disk", async () => {
      for (const name of await readdir(paths.staging).catch(() => [])) if ((await stat(join(paths.staging, name))).size >= half) return true;
      return undefined;
    }, { timeoutMs: 15_000 });
    process.kill(a.run.pid!, "SIGKILL");
    await a.run.exited;
    // The retry is a new attempt (a new task id) for the same package; the repository is whole again.
    const url = server.serve("/cut-retry.tar.gz", { body: pkg.bytes });
    const second = desiredTask({ hostId: HOST, attempt: 2, package: { platform: "linux-amd64", sha256: pkg.sha256, size: pkg.size, url } });
    const b = await runClient(root, second);
    expect((await b.run.exited).code).toBe(0);
    expect((await b.journal()).at(-1)).toMatchObject({ kind: "succeeded", version: "2.0.0" });
    expect(server.requests.filter((r) => r.path === "/cut-retry.tar.gz").map((r) => r.range)).toEqual([`bytes=${half}-`]);
  });

  it("[upgrade-client] the deadline stops OVERRIDE before the switch: no switch after the deadline, the old version stays", async () => {
    const root = await seededRoot();
    let release!: () => void;
    const hold = new Promise<void>((r) => (release = r));
    const url = server.serve("/late.tar.gz", { body: pkg.bytes, hold });
    const deadline = Date.now() + 8_000;
    const task = desiredTask({
      hostId: HOST,
      deadline: new Date(deadline).toISOString(),
      package: { platform: "linux-amd64", sha256: pkg.sha256, size: pkg.size, url },
    });
    await recordLaunch(root, task);
    // Every step pauses 800 ms; the download is let through just before the deadline, so the
    // deadline falls while OVERRIDE is under way.
    const run = testRunner({ log: silentLog(), stepDelayMs: 800 }).start(root, task, () => undefined);
    await waitFor("the download requested", () => (server.requests.some((r) => r.path === "/late.tar.gz") ? true : undefined), { timeoutMs: 7_500 });
    await waitFor("just before the deadline", () => (Date.now() >= deadline - 400 ? true : undefined), { timeoutMs: 9_000, intervalMs: 10 });
    release();
    expect((await run.exited).code).toBe(0);
    const entries = await journalOf(root, task.taskId);
    expect(shape(entries)).toContain("step-started:override");
    expect(entries.at(-1)).toMatchObject({ kind: "failed", reason: expect.stringMatching(/deadline .* reached/) as unknown });
    const paths = componentPaths(root, "metrics-agent");
    expect(await readlink(paths.current)).toBe(join("versions", "1.0.0"));
    expect(await readdir(paths.versions)).toEqual(["1.0.0"]);
  });

  it("[upgrade-client] a download cut half way resumes with Range in the same run (the server sees the Range request)", async () => {
    const root = await seededRoot();
    const half = Math.floor(pkg.size / 2);
    const partial = archivePath(componentPaths(root, "metrics-agent"), pkg.sha256);
    const onDisk = () => waitFor("the first half on the client's disk", async () => ((await stat(partial).catch(() => null))?.size === half ? true : undefined));
    const url = server.serve("/dropped.tar.gz", { body: pkg.bytes, dropFirstAfter: half, dropWhen: onDisk });
    const task = desiredTask({ hostId: HOST, package: { platform: "linux-amd64", sha256: pkg.sha256, size: pkg.size, url } });
    await recordLaunch(root, task);
    const run = testRunner({ log: silentLog(), env: { MOLT_DOWNLOAD_RETRY_MS: "20" } }).start(root, task, () => undefined);
    expect((await run.exited).code).toBe(0);
    const entries = await journalOf(root, task.taskId);
    expect(entries.at(-1)).toMatchObject({ kind: "succeeded", version: "2.0.0" });
    expect(server.requests.filter((r) => r.path === "/dropped.tar.gz").map((r) => r.range)).toEqual([undefined, `bytes=${half}-`]);
    expect(entries.find((e) => e.kind === "step-succeeded" && e.step === "download")).toMatchObject({ detail: expect.stringContaining(`resumed ${half} bytes, 2 tries`) as unknown });
  });

  it("[upgrade-client] the repository down for a while, then back: the download retries and the task succeeds", async () => {
    const root = await seededRoot();
    const port = await freePort();
    const task = desiredTask({ hostId: HOST, package: { platform: "linux-amd64", sha256: pkg.sha256, size: pkg.size, url: `http://127.0.0.1:${port}/late/pkg.tar.gz` } });
    await recordLaunch(root, task);
    const run = testRunner({ log: silentLog(), env: { MOLT_DOWNLOAD_RETRY_MS: "100", MOLT_DOWNLOAD_ATTEMPTS: "10" } }).start(root, task, () => undefined);
    await waitFor("the client downloading", async () => (shape(await journalOf(root, task.taskId)).includes("step-started:download") ? true : undefined), { timeoutMs: 10_000 });
    // Nothing listens on the repository's port for a while (connections refused); then it comes up.
    await new Promise((r) => setTimeout(r, 500));
    let served = 0;
    const repo = createServer((_req, res) => {
      served++;
      res.writeHead(200, { "content-length": pkg.size }).end(pkg.bytes);
    });
    await new Promise<void>((r) => repo.listen(port, "127.0.0.1", r));
    try {
      expect((await run.exited).code).toBe(0);
    } finally {
      repo.closeAllConnections();
      await new Promise((r) => repo.close(r));
    }
    const entries = await journalOf(root, task.taskId);
    expect(entries.at(-1)).toMatchObject({ kind: "succeeded", version: "2.0.0" });
    expect(served).toBe(1);
    expect(entries.find((e) => e.kind === "step-succeeded" && e.step === "download")).toMatchObject({ detail: expect.stringMatching(/, \d+ tries/) as unknown });
  });

  it("[upgrade-client] two real clients started together for one component: one runs, the other is rejected and touches nothing", async () => {
    const root = await seededRoot();
    // Whoever wins holds the lock in DOWNLOAD until the other has its verdict, however their starts interleave.
    let release!: () => void;
    const hold = new Promise<void>((r) => (release = r));
    const [a, b] = ["/race-a.tar.gz", "/race-b.tar.gz"].map((path) =>
      desiredTask({ hostId: HOST, package: { platform: "linux-amd64", sha256: pkg.sha256, size: pkg.size, url: server.serve(path, { body: pkg.bytes, hold }) } }),
    ) as [DesiredState, DesiredState];
    await recordLaunch(root, a);
    await recordLaunch(root, b);
    const runs = [runner.start(root, a, () => undefined), runner.start(root, b, () => undefined)];
    await waitFor("one client rejected", async () => {
      for (const t of [a, b]) if ((await journalOf(root, t.taskId)).at(-1)?.kind === "rejected") return true;
      return undefined;
    }, { timeoutMs: 15_000 });
    release();
    expect((await Promise.all(runs.map((r) => r.exited))).map((e) => e.code)).toEqual([0, 0]);
    const verdicts = await Promise.all([a, b].map(async (t) => (await journalOf(root, t.taskId)).at(-1)));
    expect(verdicts.map((v) => v?.kind).sort()).toEqual(["rejected", "succeeded"]);
    const loser = verdicts[0]?.kind === "rejected" ? a : b;
    const loserEntries = await journalOf(root, loser.taskId);
    expect(shape(loserEntries)).toEqual(["accepted", "step-started:begin", "step-failed:begin", "rejected"]);
    // The loser never downloaded; the winner's upgrade is what the host runs.
    expect(server.requests.some((r) => r.path === (loser === a ? "/race-a.tar.gz" : "/race-b.tar.gz"))).toBe(false);
    expect(await readlink(componentPaths(root, "metrics-agent").current)).toBe(join("versions", "2.0.0"));
  });
});
