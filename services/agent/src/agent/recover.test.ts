import { readlink, rm } from "node:fs/promises";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { type DesiredState, type JournalEntry, StepReport } from "@molt/contracts";
import { freePort, type NatsServer, startNatsServer } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pidAlive } from "../client/lock.js";
import { componentPaths } from "../host/layout.js";
import { recordLaunch } from "../host/task-files.js";
import { silentLog } from "../log.js";
import { type BuiltPackage, desiredTask, type PackageServer, startPackageServer, tempDir } from "../testing/fixtures.js";
import { restartAgent } from "../testing/restart.js";
import { appAnswers, appConfig, appPid, buildAppPackage, setAppSick } from "../testing/managed-app.js";
import type { ComponentConfig } from "./components.js";
import { testRunner } from "../testing/runner.js";

/**
 * The agent's recovery of a managed component whose client was killed mid-upgrade: the old
 * version must not only run again but be VERIFIED (healthy for the watch window, answering its
 * version), and the task's final events must say whether it was.
 */
const HOST = "recover-1.example.com";
const COMPONENT = "web-app";
const log = silentLog();
let nats: NatsServer;
let nc: NatsConnection;
let server: PackageServer;
const packages = new Map<string, BuiltPackage>();
const roots: string[] = [];
const pids = new Set<number>();
const reports: StepReport[] = [];

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
  server = await startPackageServer();
  for (const version of ["1.0.0", "2.0.0"]) packages.set(version, await buildAppPackage(version, "ok"));
  nc.subscribe("molt.feedback.report.>", {
    callback: (_err, msg) => {
      reports.push(StepReport.parse(msg.json()));
      msg.respond(JSON.stringify({ status: "accepted" }));
    },
  });
  await nc.flush();
});
afterAll(async () => {
  for (const pid of pids) if (pidAlive(pid)) process.kill(pid, "SIGKILL");
  await nc?.close();
  await nats?.stop();
  await server?.close();
  await Promise.all(roots.map((r) => rm(r, { recursive: true, force: true })));
});

function task(version: string, over: Partial<DesiredState> = {}): DesiredState {
  const pkg = packages.get(version)!;
  const url = server.serve(`/${COMPONENT}-${version}-${Math.random()}.tar.gz`, { body: pkg.bytes });
  return desiredTask({ hostId: HOST, component: COMPONENT, version, package: { platform: "linux-amd64", sha256: pkg.sha256, size: pkg.size, url }, ...over });
}

async function runClient(root: string, t: DesiredState, component: ComponentConfig, env: Record<string, string> = {}) {
  await recordLaunch(root, t, { component });
  return testRunner({ log, env }).start(root, t, () => undefined).exited;
}

/** A host with 1.0.0 installed and running; then an upgrade to 2.0.0 whose client kills itself at `point`. */
async function crashedUpgrade(point: string) {
  const root = await tempDir("recover");
  roots.push(root);
  const port = await freePort();
  const component = appConfig(COMPONENT, port);
  const paths = componentPaths(root, COMPONENT);
  expect((await runClient(root, task("1.0.0", { kind: "install", fromVersion: null }), component)).code).toBe(0);
  expect(await appAnswers(port)).toBe("1.0.0");
  const oldPid = await appPid(paths);
  pids.add(oldPid);
  const t = task("2.0.0");
  const exit = await runClient(root, t, component, { MOLT_CRASH_AT: point });
  expect(exit.signal).toBe("SIGKILL");
  const livePid = await appPid(paths).catch(() => null);
  if (livePid !== null) pids.add(livePid);
  return { root, port, paths, t, oldPid };
}

/** The agent restarts, finds the dead client's task, recovers the component and reports the final events. */
const restart = (root: string, t: DesiredState): Promise<JournalEntry[]> =>
  restartAgent({ nc, reports, log, hostId: HOST, root, component: COMPONENT, taskId: t.taskId });

const tail = (entries: JournalEntry[], n: number) => entries.slice(-n).map((e) => ("step" in e && e.kind !== "failed" ? `${e.kind}:${e.step}` : e.kind));

describe("the agent's recovery of a managed component verifies the version it restores", () => {
  it("[upgrade-client] SIGKILL while the old process is stopped: recovery restarts 1.0.0, verifies it for the watch window, and the events say so", async () => {
    const { root, port, paths, t, oldPid } = await crashedUpgrade("stop:stopped");
    expect(pidAlive(oldPid)).toBe(false);
    const entries = await restart(root, t);
    expect(tail(entries, 5)).toEqual(["step-failed:stop", "step-started:rollback", "step-succeeded:rollback", "rolled-back", "failed"]);
    expect(entries.find((e) => e.kind === "step-succeeded" && e.step === "rollback")).toMatchObject({
      detail: expect.stringMatching(/current → versions\/1\.0\.0; .*old version started \(pid \d+\); healthy for 600 ms \(\d+ probes\), version 1\.0\.0/) as unknown,
    });
    expect(await readlink(paths.current)).toBe(join("versions", "1.0.0"));
    expect(await appAnswers(port)).toBe("1.0.0");
    pids.add(await appPid(paths));
  });

  it("[upgrade-client] SIGKILL after VERIFY passed, before it was confirmed: recovery stops 2.0.0, restarts and verifies 1.0.0", async () => {
    const { root, port, paths, t, oldPid } = await crashedUpgrade("verify:passed");
    expect(await appAnswers(port)).toBe("2.0.0");
    const newPid = await appPid(paths);
    const entries = await restart(root, t);
    expect(tail(entries, 5)).toEqual(["step-failed:verify", "step-started:rollback", "step-succeeded:rollback", "rolled-back", "failed"]);
    expect(entries.find((e) => e.kind === "step-succeeded" && e.step === "rollback")).toMatchObject({
      detail: expect.stringMatching(new RegExp(`pid ${newPid} ended after SIGTERM; old version started \\(pid \\d+\\); healthy for 600 ms .*version 1\\.0\\.0`)) as unknown,
    });
    expect(pidAlive(newPid)).toBe(false);
    expect(pidAlive(oldPid)).toBe(false);
    expect(await appAnswers(port)).toBe("1.0.0");
    pids.add(await appPid(paths));
  });

  it("[upgrade-client] SIGKILL right after the switch, before STOP: the untouched old process keeps running (not restarted) and is verified", async () => {
    const { root, port, paths, t, oldPid } = await crashedUpgrade("override:switched");
    const entries = await restart(root, t);
    expect(tail(entries, 5)).toEqual(["step-failed:override", "step-started:rollback", "step-succeeded:rollback", "rolled-back", "failed"]);
    expect(entries.find((e) => e.kind === "step-succeeded" && e.step === "rollback")).toMatchObject({
      detail: expect.stringMatching(new RegExp(`current → versions/1\\.0\\.0; the old process was never stopped \\(pid ${oldPid}\\); healthy for 600 ms .*version 1\\.0\\.0`)) as unknown,
    });
    expect(await appPid(paths)).toBe(oldPid);
    expect(await appAnswers(port)).toBe("1.0.0");
  });

  it("[upgrade-client] the restored 1.0.0 fails its health check: the rollback step fails with the reason, and the verdict is failed", async () => {
    const { root, paths, t } = await crashedUpgrade("stop:stopped");
    await setAppSick(paths, true);
    const entries = await restart(root, t);
    expect(tail(entries, 4)).toEqual(["step-failed:stop", "step-started:rollback", "step-failed:rollback", "failed"]);
    expect(entries.some((e) => e.kind === "rolled-back")).toBe(false);
    expect(entries.find((e) => e.kind === "step-failed" && e.step === "rollback")).toMatchObject({
      error: expect.stringMatching(/current → versions\/1\.0\.0; .*old version started \(pid \d+\); the restored version 1\.0\.0 failed verification: .*health .* answered 500/) as unknown,
    });
    expect(await readlink(paths.current)).toBe(join("versions", "1.0.0"));
    pids.add(await appPid(paths));
  });
});
