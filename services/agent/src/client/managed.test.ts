import { readdir, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { DesiredState, JournalEntry } from "@molt/contracts";
import { freePort, waitFor } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ComponentConfig } from "../agent/components.js";
import { verdictFor } from "../agent/forwarder.js";
import { recoverDeadRun } from "../agent/recover.js";
import { processRunner } from "../agent/runners.js";
import { pidAlive } from "./lock.js";
import { componentPaths } from "../host/layout.js";
import { readJournal, recordLaunch, taskPaths } from "../host/task-files.js";
import { silentLog } from "../log.js";
import { buildPackage, type BuiltPackage, desiredTask, type PackageServer, startPackageServer, tempDir } from "../testing/fixtures.js";

/**
 * A real managed component: a long-running node HTTP server that answers its version (read from
 * its own files) on /version and its health on /health, writes its pid file, and ends on SIGTERM.
 * MODE makes a version crash on start or turn unhealthy shortly after starting.
 */
const SERVER = `
import { createServer } from "node:http";
import { readFileSync, writeFileSync } from "node:fs";
const here = (f) => readFileSync(new URL(f, import.meta.url), "utf8").trim();
const version = here("./VERSION");
const mode = here("./MODE");
if (mode === "crash") process.exit(3);
const born = Date.now();
writeFileSync(process.env.MOLT_COMPONENT_DIR + "/app.pid", String(process.pid));
createServer((req, res) => {
  if (req.url === "/health") {
    const sick = mode === "sick" && Date.now() - born > 250;
    res.writeHead(sick ? 500 : 200).end(sick ? "sick" : "ok");
  } else if (req.url === "/version") res.end(JSON.stringify({ version }));
  else res.writeHead(404).end();
}).listen(Number(process.argv[2]), "127.0.0.1");
process.on("SIGTERM", () => process.exit(0));
`;

const HOST = "app-1.example.com";
const COMPONENT = "web-app";
let server: PackageServer;
const packages = new Map<string, BuiltPackage>();
const roots: string[] = [];
const pids = new Set<number>();

beforeAll(async () => {
  server = await startPackageServer();
  for (const [version, mode] of [["1.0.0", "ok"], ["2.0.0", "ok"], ["2.0.1", "crash"], ["2.0.2", "sick"]] as const)
    packages.set(version, await buildPackage({ VERSION: `${version}\n`, MODE: `${mode}\n`, "server.mjs": SERVER }));
});
afterAll(async () => {
  for (const pid of pids) if (pidAlive(pid)) process.kill(pid, "SIGKILL");
  await server.close();
  await Promise.all(roots.map((r) => rm(r, { recursive: true, force: true })));
});

function config(port: number, over: Partial<ComponentConfig> = {}): ComponentConfig {
  return {
    name: COMPONENT,
    kind: "managed",
    start: { command: `exec "${process.execPath}" server.mjs ${port}` },
    stop: { graceMs: 2_000 },
    pidFile: "app.pid",
    health: {
      url: `http://127.0.0.1:${port}/health`,
      versionUrl: `http://127.0.0.1:${port}/version`,
      watchMs: 600,
      intervalMs: 50,
      startTimeoutMs: 5_000,
      probeTimeoutMs: 1_000,
      heartbeatStaleMs: 15_000,
    },
    ...over,
  };
}

function task(version: string, over: Partial<DesiredState> = {}): DesiredState {
  const pkg = packages.get(version)!;
  const url = server.serve(`/${COMPONENT}-${version}-${Math.random()}.tar.gz`, { body: pkg.bytes });
  return desiredTask({ hostId: HOST, component: COMPONENT, version, package: { platform: "linux-amd64", sha256: pkg.sha256, size: pkg.size, url }, ...over });
}

async function run(root: string, t: DesiredState, component: ComponentConfig, env: Record<string, string> = {}): Promise<JournalEntry[]> {
  await recordLaunch(root, t, { component });
  expect((await processRunner({ log: silentLog(), env }).start(root, t, () => undefined).exited).code).toBe(0);
  return (await readJournal(taskPaths(root, t.taskId).journal, 0)).entries;
}

const steps = (entries: JournalEntry[]) => entries.map((e) => ("step" in e && e.kind !== "failed" ? `${e.kind}:${e.step}` : e.kind));

async function answers(port: number): Promise<string | null> {
  try {
    return ((await (await fetch(`http://127.0.0.1:${port}/version`)).json()) as { version: string }).version;
  } catch {
    return null;
  }
}

async function runningPid(root: string): Promise<number> {
  const pid = Number((await readFile(join(componentPaths(root, COMPONENT).dir, "app.pid"), "utf8")).trim());
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
  expect(await answers(port)).toBe("1.0.0");
  return { root, port, component, oldPid: await runningPid(root) };
}

/** The old version runs again and answers, and the events show the rollback and its reason. */
async function expectRolledBack(root: string, port: number, entries: JournalEntry[], reason: RegExp) {
  expect(entries.at(-1)).toMatchObject({ kind: "failed", reason: expect.stringMatching(reason) as unknown });
  expect(steps(entries)).toContain("step-succeeded:rollback");
  expect(entries.find((e) => e.kind === "rolled-back")).toMatchObject({ reason: expect.stringMatching(reason) as unknown });
  expect(await readlink(componentPaths(root, COMPONENT).current)).toBe(join("versions", "1.0.0"));
  expect(await answers(port)).toBe("1.0.0");
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
    expect(await answers(port)).toBe("2.0.0");
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
    expect(await answers(port)).toBe("2.0.0");
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
    expect(await answers(port)).toBe("1.0.0");
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
        expect(await answers(port)).toBe("1.0.0");
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
    const exit = await processRunner({ log: silentLog(), env: { MOLT_CRASH_AT: "stop:stopped" } }).start(root, t, () => undefined).exited;
    expect(exit.signal).toBe("SIGKILL");
    expect(pidAlive(oldPid)).toBe(false);
    expect(await answers(port)).toBeNull();
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
    await waitFor("the old version answering", async () => ((await answers(port)) === "1.0.0" ? true : undefined), { timeoutMs: 5_000 });
    pids.add(await runningPid(root));
  });
});
