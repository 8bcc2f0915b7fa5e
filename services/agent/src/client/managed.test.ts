import { readdir, readFile, readlink, realpath, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { DesiredState, JournalEntry } from "@molt/contracts";
import { freePort, waitFor } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ComponentConfig } from "../agent/components.js";
import { verdictFor } from "../agent/forwarder.js";
import { recoverDeadRun } from "../agent/recover.js";
import { pidAlive } from "./lock.js";
import { findPid } from "./process.js";
import { componentPaths } from "../host/layout.js";
import { readJournal, recordLaunch, taskPaths } from "../host/task-files.js";
import { silentLog } from "../log.js";
import { appAnswers, appConfig, appPid, buildAppPackage } from "../testing/managed-app.js";
import { type BuiltPackage, desiredTask, type PackageServer, startPackageServer, tempDir } from "../testing/fixtures.js";
import { testRunner } from "../testing/runner.js";

const HOST = "app-1.example.com";
const COMPONENT = "web-app";
let server: PackageServer;
const packages = new Map<string, BuiltPackage>();
const roots: string[] = [];
const pids = new Set<number>();

beforeAll(async () => {
  server = await startPackageServer();
  for (const [version, mode] of [["1.0.0", "ok"], ["2.0.0", "ok"], ["2.0.1", "crash"], ["2.0.2", "sick"], ["3.0.0", "no-pid"], ["3.1.0", "no-pid"]] as const)
    packages.set(version, await buildAppPackage(version, mode));
});
afterAll(async () => {
  for (const pid of pids) if (pidAlive(pid)) process.kill(pid, "SIGKILL");
  await server.close();
  await Promise.all(roots.map((r) => rm(r, { recursive: true, force: true })));
});

const config = (port: number, over: Partial<ComponentConfig> = {}) => appConfig(COMPONENT, port, over);

function task(version: string, over: Partial<DesiredState> = {}): DesiredState {
  const pkg = packages.get(version)!;
  const url = server.serve(`/${COMPONENT}-${version}-${Math.random()}.tar.gz`, { body: pkg.bytes });
  return desiredTask({ hostId: HOST, component: COMPONENT, version, package: { platform: "linux-amd64", sha256: pkg.sha256, size: pkg.size, url }, ...over });
}

async function run(root: string, t: DesiredState, component: ComponentConfig, env: Record<string, string> = {}): Promise<JournalEntry[]> {
  await recordLaunch(root, t, { component });
  expect((await testRunner({ log: silentLog(), env }).start(root, t, () => undefined).exited).code).toBe(0);
  return (await readJournal(taskPaths(root, t.taskId).journal, 0)).entries;
}

const steps = (entries: JournalEntry[]) => entries.map((e) => ("step" in e && e.kind !== "failed" ? `${e.kind}:${e.step}` : e.kind));

async function runningPid(root: string): Promise<number> {
  const pid = await appPid(componentPaths(root, COMPONENT));
  pids.add(pid);
  return pid;
}

/** A host with 1.0.0 installed by an install task and running. */
async function hostWith100(over: Partial<ComponentConfig> = {}) {
  const root = await tempDir("managed");
  roots.push(root);
  const port = await freePort();
  const component = config(port, over);
  const entries = await run(root, task("1.0.0", { kind: "install", fromVersion: null }), component);
  expect(entries.at(-1)).toMatchObject({ kind: "succeeded", version: "1.0.0" });
  expect(await appAnswers(port)).toBe("1.0.0");
  return { root, port, component, oldPid: await runningPid(root) };
}

/** The old version runs again and answers, and the events show the rollback and its reason. */
async function expectRolledBack(root: string, port: number, entries: JournalEntry[], reason: RegExp) {
  expect(entries.at(-1)).toMatchObject({ kind: "failed", reason: expect.stringMatching(reason) as unknown });
  expect(steps(entries)).toContain("step-succeeded:rollback");
  expect(entries.find((e) => e.kind === "rolled-back")).toMatchObject({ reason: expect.stringMatching(reason) as unknown });
  expect(await readlink(componentPaths(root, COMPONENT).current)).toBe(join("versions", "1.0.0"));
  expect(await appAnswers(port)).toBe("1.0.0");
  expect(pidAlive(await runningPid(root))).toBe(true);
}

describe("a managed component (a real process serving its version over HTTP)", () => {
  it("[upgrade-client] install then upgrade: the new process answers the new version, the old one is gone, the pid file and events agree", async () => {
    const { root, port, component, oldPid } = await hostWith100();
    const entries = await run(root, task("2.0.0"), component);
    expect(steps(entries)).toEqual([
      "accepted",
      ...["begin", "backup", "download", "override", "stop", "start", "verify", "end-action"].flatMap((s) => [`step-started:${s}`, `step-succeeded:${s}`]),
      "succeeded",
    ]);
    expect(await appAnswers(port)).toBe("2.0.0");
    expect(pidAlive(oldPid)).toBe(false);
    const newPid = await runningPid(root);
    expect(newPid).not.toBe(oldPid);
    expect(entries.find((e) => e.kind === "step-succeeded" && e.step === "start")).toMatchObject({ detail: expect.stringMatching(/^started pid \d+$/) as unknown });
    expect(entries.find((e) => e.kind === "step-succeeded" && e.step === "verify")).toMatchObject({ detail: expect.stringContaining("version 2.0.0") as unknown });
    expect(entries.find((e) => e.kind === "step-succeeded" && e.step === "stop")).toMatchObject({ detail: `pid ${oldPid} ended after SIGTERM` });
  });

  it("[upgrade-client] a rollback task on a managed component: back to the kept 1.0.0 with no download, the old process restarted and verified", async () => {
    const { root, port, component } = await hostWith100();
    expect((await run(root, task("2.0.0"), component)).at(-1)).toMatchObject({ kind: "succeeded" });
    expect(await appAnswers(port)).toBe("2.0.0");
    const requests = server.requests.length;
    const back = desiredTask({ hostId: HOST, component: COMPONENT, kind: "rollback", version: "1.0.0", fromVersion: "2.0.0", package: undefined });
    delete (back as { package?: unknown }).package;
    const entries = await run(root, back, component);
    expect(steps(entries)).toEqual([
      "accepted",
      ...["begin", "backup", "override", "stop", "start", "verify", "end-action"].flatMap((s) => [`step-started:${s}`, `step-succeeded:${s}`]),
      "succeeded",
    ]);
    expect(entries.at(-1)).toMatchObject({ version: "1.0.0" });
    expect(server.requests.length).toBe(requests);
    expect(await appAnswers(port)).toBe("1.0.0");
    await runningPid(root);
  });

  it.each(["download", "override", "stop", "start", "verify"] as const)(
    "[upgrade-client] an injected failure at %s: the old version runs again and answers; the events show why",
    async (step) => {
      const { root, port, component } = await hostWith100();
      const dir = await tempDir("fault");
      roots.push(dir);
      const faultFile = join(dir, "fault.json");
      await writeFile(faultFile, JSON.stringify({ hosts: [HOST], step, message: `injected at ${step}` }));
      const entries = await run(root, task("2.0.0"), component, { MOLT_SIM_FAULT_FILE: faultFile });
      if (step === "download") {
        // Nothing on the host changed yet: no rollback to do, the old process never stopped.
        expect(entries.at(-1)).toMatchObject({ kind: "failed", step: "download", reason: "injected at download" });
        expect(steps(entries)).not.toContain("step-started:rollback");
        expect(await appAnswers(port)).toBe("1.0.0");
      } else {
        await expectRolledBack(root, port, entries, new RegExp(`injected at ${step}`));
      }
    },
  );

  it("[upgrade-client] a failing hook before STOP takes the rollback path; the old process was never stopped", async () => {
    const { root, port, component, oldPid } = await hostWith100();
    const entries = await run(root, task("2.0.0"), { ...component, hooks: { beforeStop: "echo draining failed >&2; exit 4", timeoutMs: 5_000 } });
    await expectRolledBack(root, port, entries, /hook beforeStop exited with code 4: draining failed/);
    expect(await runningPid(root)).toBe(oldPid);
  });

  it("[views] a failing hook's step report carries the tail of its output (the last 4 KiB), not only the short error", async () => {
    const { root, component } = await hostWith100();
    // 6,000 numbered bytes, then the reason: the tail keeps the end.
    const hook = `i=0; while [ $i -lt 600 ]; do printf 'line%05d\\n' $i; i=$((i+1)); done; echo draining failed; exit 4`;
    const entries = await run(root, task("2.0.0"), { ...component, hooks: { beforeStop: hook, timeoutMs: 5_000 } });
    const failed = entries.find((e) => e.kind === "step-failed");
    expect(failed?.kind === "step-failed" && failed.logTail).toBeTruthy();
    const tail = failed?.kind === "step-failed" ? failed.logTail! : "";
    expect(tail.length).toBeLessThanOrEqual(4096);
    expect(tail.length).toBeGreaterThan(2000);
    expect(tail).toMatch(/line00599\ndraining failed$/);
    expect(tail).not.toContain("line00000");
  });

  it("[upgrade-client] a new version that crashes on start: rolled back, the old version restarted and answering", async () => {
    const { root, port, component } = await hostWith100();
    const entries = await run(root, task("2.0.1"), component);
    await expectRolledBack(root, port, entries, /the new version exited right after START/);
    expect(entries.find((e) => e.kind === "step-failed")).toMatchObject({ step: "verify" });
  });

  it("[upgrade-client] a new version that turns unhealthy within the watch window: rolled back, the old version answers", async () => {
    const { root, port, component } = await hostWith100();
    const entries = await run(root, task("2.0.2"), component);
    await expectRolledBack(root, port, entries, /unhealthy within the 600 ms watch window: health .* answered 500/);
  });

  it("[upgrade-client] uninstall: the process is stopped and the files are gone, with its own events", async () => {
    const { root, component, oldPid } = await hostWith100();
    const t = desiredTask({ hostId: HOST, component: COMPONENT, kind: "uninstall", version: "1.0.0", fromVersion: "1.0.0", package: undefined });
    delete (t as { package?: unknown }).package;
    const entries = await run(root, t, component);
    expect(steps(entries)).toEqual([
      "accepted",
      ...["begin", "backup", "stop", "override", "end-action"].flatMap((s) => [`step-started:${s}`, `step-succeeded:${s}`]),
      "succeeded",
    ]);
    await waitFor("the process gone", () => (pidAlive(oldPid) ? undefined : true), { timeoutMs: 5_000 });
    const dir = componentPaths(root, COMPONENT).dir;
    expect(await readdir(dir)).toEqual([]);
  });

  it("[upgrade-client] SIGKILL while the old process is stopped: the agent's recovery switches back and the old version runs and answers", async () => {
    const { root, port, component, oldPid } = await hostWith100();
    const t = task("2.0.0");
    await recordLaunch(root, t, { component });
    const exit = await testRunner({ log: silentLog(), env: { MOLT_CRASH_AT: "stop:stopped" } }).start(root, t, () => undefined).exited;
    expect(exit.signal).toBe("SIGKILL");
    expect(pidAlive(oldPid)).toBe(false);
    expect(await appAnswers(port)).toBeNull();
    // What the agent does for a client that died without a verdict.
    const entries = (await readJournal(taskPaths(root, t.taskId).journal, 0)).entries;
    const outcome = await recoverDeadRun(root, t, entries, silentLog());
    expect(outcome).toMatchObject({ kind: "rolled-back", detail: expect.stringContaining("old version started") as unknown });
    expect(verdictFor(entries, "upgrade client was killed by SIGKILL", Date.now(), outcome).map((r) => r.kind)).toEqual([
      "step-failed",
      "step-started",
      "step-succeeded",
      "rolled-back",
      "failed",
    ]);
    expect(await readlink(componentPaths(root, COMPONENT).current)).toBe(join("versions", "1.0.0"));
    await waitFor("the old version answering", async () => ((await appAnswers(port)) === "1.0.0" ? true : undefined), { timeoutMs: 5_000 });
    pids.add(await runningPid(root));
  });
});

/** A node script run as a component's command (health probe, hook); an exception exits 2. */
function nodeCommand(js: string): string {
  return `"${process.execPath}" -e '(async () => { ${js} })().catch((e) => { console.error(String(e)); process.exit(2); })'`;
}

describe("health by command, the hook after VERIFY, a process found by match", () => {
  /** Exits 0 only when /health is 2xx and /version answers the version VERIFY expects (MOLT_EXPECT_VERSION). */
  const healthCommand = (port: number) =>
    nodeCommand(
      `const h = await fetch("http://127.0.0.1:${port}/health"); if (!h.ok) { console.error("health " + h.status); process.exit(1); } ` +
        `const v = (await (await fetch("http://127.0.0.1:${port}/version")).json()).version; if (v !== process.env.MOLT_EXPECT_VERSION) { console.error("answers " + v); process.exit(1); }`,
    );
  // Generous probe timeouts: each probe starts a node process, which takes seconds on a loaded machine.
  const byCommand = (port: number): Partial<ComponentConfig> => ({
    health: { command: healthCommand(port), watchMs: 600, intervalMs: 100, startTimeoutMs: 30_000, probeTimeoutMs: 20_000, heartbeatStaleMs: 15_000 },
  });

  it("[upgrade-client] a health check given as a command: it passes for the watch window with the new version answering", async () => {
    const { root, port, component, oldPid } = await hostWith100();
    const entries = await run(root, task("2.0.0"), { ...component, ...byCommand(port) });
    expect(entries.at(-1)).toMatchObject({ kind: "succeeded", version: "2.0.0" });
    expect(entries.find((e) => e.kind === "step-succeeded" && e.step === "verify")).toMatchObject({ detail: expect.stringMatching(/^healthy for 600 ms \(\d+ probes\), version 2\.0\.0$/) as unknown });
    expect(await appAnswers(port)).toBe("2.0.0");
    expect(pidAlive(oldPid)).toBe(false);
  });

  it("[upgrade-client] a failing health command (the new version turns unhealthy): rolled back, the old version answers", async () => {
    const { root, port, component } = await hostWith100();
    const entries = await run(root, task("2.0.2"), { ...component, ...byCommand(port) });
    await expectRolledBack(root, port, entries, /unhealthy within the 600 ms watch window: health command exited with code 1: health 500/);
  });

  it("[upgrade-client] the hook after VERIFY runs with the new version in place and answering", async () => {
    const { root, port, component } = await hostWith100();
    const record = nodeCommand(
      `const answered = (await (await fetch("http://127.0.0.1:${port}/version")).json()).version; ` +
        `require("node:fs").writeFileSync(process.env.MOLT_SHARED_DIR + "/hook.json", JSON.stringify({ answered, version: process.env.MOLT_VERSION, previous: process.env.MOLT_PREVIOUS_VERSION, cwd: process.cwd() }));`,
    );
    const entries = await run(root, task("2.0.0"), { ...component, hooks: { afterVerify: record, timeoutMs: 30_000 } });
    expect(steps(entries).filter((s) => s.startsWith("step-succeeded:")).slice(-3)).toEqual(["step-succeeded:verify", "step-succeeded:post-verify", "step-succeeded:end-action"]);
    expect(entries.at(-1)).toMatchObject({ kind: "succeeded", version: "2.0.0" });
    const paths = componentPaths(root, COMPONENT);
    expect(JSON.parse(await readFile(join(paths.shared, "hook.json"), "utf8"))).toEqual({ answered: "2.0.0", version: "2.0.0", previous: "1.0.0", cwd: await realpath(paths.version("2.0.0")) });
  });

  it("[upgrade-client] a failing hook after VERIFY: rolled back (the new process stopped, the old one restarted and verified), the reason in the events", async () => {
    const { root, port, component } = await hostWith100();
    const entries = await run(root, task("2.0.0"), { ...component, hooks: { afterVerify: "echo could not re-enable in the balancer >&2; exit 5", timeoutMs: 5_000 } });
    expect(entries.find((e) => e.kind === "step-failed")).toMatchObject({ step: "post-verify" });
    await expectRolledBack(root, port, entries, /hook afterVerify exited with code 5: could not re-enable in the balancer/);
    expect(entries.find((e) => e.kind === "step-succeeded" && e.step === "rollback")).toMatchObject({ detail: expect.stringMatching(/old version started \(pid \d+\); healthy for 600 ms .*version 1\.0\.0/) as unknown });
  });

  it("[upgrade-client] processMatch: a component with no pid file is found by its command line, stopped, and its new version started and verified", async () => {
    const root = await tempDir("match");
    roots.push(root);
    const port = await freePort();
    const component = config(port, { processMatch: `server\\.mjs ${port}$` });
    delete (component as { pidFile?: string }).pidFile;
    const paths = componentPaths(root, COMPONENT);
    expect((await run(root, task("3.0.0", { kind: "install", fromVersion: null }), component)).at(-1)).toMatchObject({ kind: "succeeded" });
    expect(await appAnswers(port)).toBe("3.0.0");
    const oldPid = await findPid(component, paths);
    expect(oldPid).not.toBeNull();
    pids.add(oldPid!);
    const entries = await run(root, task("3.1.0", { fromVersion: "3.0.0" }), component);
    expect(entries.at(-1)).toMatchObject({ kind: "succeeded", version: "3.1.0" });
    expect(entries.find((e) => e.kind === "step-succeeded" && e.step === "stop")).toMatchObject({ detail: `pid ${oldPid} ended after SIGTERM` });
    expect(pidAlive(oldPid!)).toBe(false);
    expect(await appAnswers(port)).toBe("3.1.0");
    const newPid = await findPid(component, paths);
    expect(newPid).not.toBeNull();
    pids.add(newPid!);
    expect(newPid).not.toBe(oldPid);
    expect((await readFile(`/proc/${newPid}/cmdline`, "utf8")).split("\0")).toContain("server.mjs");
  });
});
