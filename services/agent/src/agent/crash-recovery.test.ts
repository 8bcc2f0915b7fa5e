import { readlink, rm } from "node:fs/promises";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { type DesiredState, type JournalEntry, StepReport } from "@molt/contracts";
import { type NatsServer, startNatsServer, waitFor } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { componentPaths, seedComponent } from "../host/layout.js";
import { isTerminal, readJournal, recordLaunch, taskPaths } from "../host/task-files.js";
import { silentLog } from "../log.js";
import { buildPackage, type BuiltPackage, desiredTask, type PackageServer, startPackageServer, tempDir } from "../testing/fixtures.js";
import { restartAgent } from "../testing/restart.js";
import { treeDigest } from "../testing/tree.js";
import { verdictFor } from "./forwarder.js";
import { recoverDeadRun } from "./recover.js";
import { testRunner } from "../testing/runner.js";

const HOST = "crash-1.example.com";
const log = silentLog();
let nats: NatsServer;
let nc: NatsConnection;
let server: PackageServer;
let pkg: BuiltPackage;
let oldDigest: string;
let newDigest: string;
/** How long a clean run takes from `accepted` to its verdict: random kills spread over it. */
let runMs: number;
const roots: string[] = [];
const reports: StepReport[] = [];

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
  server = await startPackageServer();
  const files: Record<string, string> = { VERSION: "2.0.0\n" };
  for (let i = 0; i < 40; i++) files[`lib/part-${i}.txt`] = `part ${i} of 2.0.0\n`.repeat(50);
  pkg = await buildPackage(files);
  nc.subscribe(`molt.feedback.report.>`, {
    callback: (_err, msg) => {
      reports.push(StepReport.parse(msg.json()));
      msg.respond(JSON.stringify({ status: "accepted" }));
    },
  });
  // The digests of the two versions, from a clean install of each.
  const clean = await seededRoot();
  oldDigest = await treeDigest(componentPaths(clean, "metrics-agent").current);
  const t = task("/crash-clean.tar.gz");
  await recordLaunch(clean, t);
  expect((await testRunner({ log }).start(clean, t, () => undefined).exited).code).toBe(0);
  newDigest = await treeDigest(componentPaths(clean, "metrics-agent").current);
  const cleanEntries = await journalOf(clean, t.taskId);
  runMs = Date.parse(cleanEntries.at(-1)!.at) - Date.parse(cleanEntries[0]!.at);
  expect(newDigest).not.toBe(oldDigest);
});
afterAll(async () => {
  await nc?.close();
  await nats?.stop();
  await server?.close();
  await Promise.all(roots.map((r) => rm(r, { recursive: true, force: true })));
});

async function seededRoot(): Promise<string> {
  const root = await tempDir("crash");
  roots.push(root);
  await seedComponent(root, { component: "metrics-agent", version: "1.0.0" });
  return root;
}

function task(path: string): DesiredState {
  const url = server.serve(path, { body: pkg.bytes });
  return desiredTask({ hostId: HOST, package: { platform: "linux-amd64", sha256: pkg.sha256, size: pkg.size, url } });
}

const journalOf = async (root: string, taskId: string): Promise<JournalEntry[]> => (await readJournal(taskPaths(root, taskId).journal, 0)).entries;

/** The tree under `current` is exactly one version, and the verdict names that one. */
async function expectConsistent(root: string, verdict: JournalEntry | undefined) {
  const digest = await treeDigest(componentPaths(root, "metrics-agent").current);
  const running = digest === newDigest ? "2.0.0" : digest === oldDigest ? "1.0.0" : "neither";
  expect(running).not.toBe("neither");
  expect(await readlink(componentPaths(root, "metrics-agent").current)).toBe(join("versions", running));
  if (verdict?.kind === "succeeded") expect(running).toBe("2.0.0");
  else expect(running).toBe("1.0.0");
  return running;
}

describe("crash recovery", () => {
  it.each([
    ["download:1", "failed"],
    ["extract:5", "failed"],
    ["override:renamed", "failed"],
    ["switch:linked", "failed"],
    ["override:switched", "rolled-back"],
    ["journal:written:9", "rolled-back"],
    ["journal:written:11", "succeeded"],
  ] as const)(
    "[upgrade-client] SIGKILL at %s: after the agent restarts, the tree is exactly one version, that one is current, and the reported events end %s",
    async (point, expected) => {
      const root = await seededRoot();
      const t = task(`/crash-${point.replaceAll(":", "-")}.tar.gz`);
      await recordLaunch(root, t);
      const exit = await testRunner({ log, env: { MOLT_CRASH_AT: point } }).start(root, t, () => undefined).exited;
      expect(exit.signal).toBe("SIGKILL");
      // The restarted agent finds the dead client's task, recovers the component and reports.
      const entries = await restartAgent({ nc, reports, log, hostId: HOST, root, component: "metrics-agent", taskId: t.taskId, timeoutMs: 10_000 });
      const verdict = entries.at(-1);
      if (expected === "rolled-back") {
        expect(entries.map((e) => e.kind).slice(-4)).toEqual(["step-started", "step-succeeded", "rolled-back", "failed"]);
        expect(entries.at(-3)).toMatchObject({ step: "rollback", detail: "current → versions/1.0.0" });
      } else expect(verdict?.kind).toBe(expected);
      await expectConsistent(root, verdict);
      // A new run on the component is not blocked by anything the crash left behind.
      const next = task(`/crash-next-${point.replaceAll(":", "-")}.tar.gz`);
      await recordLaunch(root, next);
      expect((await testRunner({ log }).start(root, next, () => undefined).exited).code).toBe(0);
      expect((await journalOf(root, next.taskId)).at(-1)).toMatchObject({ kind: "succeeded" });
      expect(await treeDigest(componentPaths(root, "metrics-agent").current)).toBe(newDigest);
    },
  );

  it("[upgrade-client] SIGKILL at random times over 50 runs: recovery always leaves exactly the old or the new version, and the verdict says which", async ({ annotate }) => {
    const runs = Number(process.env["MOLT_CRASH_RUNS"] ?? 50);
    const seen: Record<string, number> = { "1.0.0": 0, "2.0.0": 0 };
    // Kills are spread over the clean run's length; a machine that got slower since it was measured
    // (other suites on the same cores) would see every kill land early, so once half the runs are
    // done with only one outcome, the window widens (or narrows) for the rest.
    let windowMs = runMs * 1.2;
    for (let i = 0; i < runs; i++) {
      if (i >= runs / 2 && seen["2.0.0"] === 0) windowMs *= 1.5;
      if (i >= runs / 2 && seen["1.0.0"] === 0) windowMs /= 1.5;
      const root = await seededRoot();
      const t = task(`/random-${i}.tar.gz`);
      await recordLaunch(root, t);
      const run = testRunner({ log }).start(root, t, () => undefined);
      // Killed from outside at a random moment once the client is journaling.
      await waitFor("accepted", async () => ((await journalOf(root, t.taskId)).length > 0 ? true : undefined), { intervalMs: 2 });
      await new Promise((r) => setTimeout(r, Math.random() * windowMs));
      try {
        process.kill(run.pid!, "SIGKILL");
      } catch {
        // It finished before the kill: its own verdict stands.
      }
      await run.exited;
      const entries = await journalOf(root, t.taskId);
      // What the restarted agent does for a dead client (the forwarder's verdict), without the bus.
      const outcome = entries.some(isTerminal) ? undefined : await recoverDeadRun(root, t, entries, log);
      const records = verdictFor(entries, "upgrade client was killed by SIGKILL", Date.now(), outcome);
      const verdict = records.at(-1) ?? entries.at(-1);
      const running = await expectConsistent(root, verdict as JournalEntry);
      seen[running] = (seen[running] ?? 0) + 1;
      await rm(root, { recursive: true, force: true });
    }
    // Both outcomes happen, so the kills really landed before and after the switch.
    expect((seen["1.0.0"] ?? 0) + (seen["2.0.0"] ?? 0)).toBe(runs);
    await annotate(`random crashes over ${runs} runs (clean run ${runMs} ms, last window ${Math.round(windowMs)} ms): ${JSON.stringify(seen)}`);
    expect(seen["1.0.0"]).toBeGreaterThan(0);
    expect(seen["2.0.0"]).toBeGreaterThan(0);
  }, 240_000);
});
