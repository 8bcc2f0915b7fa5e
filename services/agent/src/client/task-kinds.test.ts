import { readdir, readlink, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { DesiredState, JournalEntry } from "@molt/contracts";
import { describe, expect, it } from "vitest";
import { inProcessRunner } from "../agent/runners.js";
import { componentPaths, seedComponent } from "../host/layout.js";
import { readJournal, recordLaunch, taskPaths } from "../host/task-files.js";
import { silentLog } from "../log.js";
import { desiredTask } from "../testing/fixtures.js";
import { packageSuite } from "../testing/suite.js";
import { testRunner } from "../testing/runner.js";

const suite = packageSuite({ VERSION: "2.0.0\n" });

async function seededRoot(): Promise<string> {
  const root = await suite.tempRoot("kinds");
  await seedComponent(root, { component: "metrics-agent", version: "1.0.0" });
  return root;
}

function upgradeTask(hostId: string, path: string): DesiredState {
  const url = suite.server.serve(path, { body: suite.pkg.bytes });
  return desiredTask({ hostId, package: { platform: "linux-amd64", sha256: suite.pkg.sha256, size: suite.pkg.size, url } });
}

async function run(root: string, task: DesiredState, runner = testRunner({ log: silentLog() })): Promise<JournalEntry[]> {
  await recordLaunch(root, task);
  expect((await runner.start(root, task, () => undefined).exited).code).toBe(0);
  return (await readJournal(taskPaths(root, task.taskId).journal, 0)).entries;
}

describe("task kinds and injected faults", () => {
  it("[upgrade-client] a rollback task switches back to the kept previous version with no download, journaled like any task", async () => {
    const root = await seededRoot();
    const hostId = "web-31.example.com";
    expect((await run(root, upgradeTask(hostId, "/k-up.tar.gz"))).at(-1)).toMatchObject({ kind: "succeeded", version: "2.0.0" });
    const requests = suite.server.requests.length;
    const rollback = desiredTask({ hostId, kind: "rollback", version: "1.0.0", fromVersion: "2.0.0", package: undefined });
    delete (rollback as { package?: unknown }).package;
    const entries = await run(root, rollback);
    expect(entries.map((e) => ("step" in e && e.kind !== "failed" ? `${e.kind}:${e.step}` : e.kind))).toEqual([
      "accepted",
      "step-started:begin",
      "step-succeeded:begin",
      "step-started:backup",
      "step-succeeded:backup",
      "step-started:override",
      "step-succeeded:override",
      "step-started:end-action",
      "step-succeeded:end-action",
      "succeeded",
    ]);
    expect(entries.at(-1)).toMatchObject({ version: "1.0.0" });
    expect(entries.find((e) => e.kind === "step-succeeded" && e.step === "override")).toMatchObject({ detail: expect.stringContaining("no download") as unknown });
    expect(suite.server.requests.length).toBe(requests);
    const paths = componentPaths(root, "metrics-agent");
    expect(await readlink(paths.current)).toBe(join("versions", "1.0.0"));
    // The version rolled away from stays kept, so a later redeploy needs no download either.
    expect((await readdir(paths.versions)).sort()).toEqual(["1.0.0", "2.0.0"]);
  });

  it("[upgrade-client] a rollback task to a version the host does not keep fails with the reason and changes nothing", async () => {
    const root = await seededRoot();
    const rollback = desiredTask({ hostId: "web-32.example.com", kind: "rollback", version: "0.9.0", fromVersion: "1.0.0", package: undefined });
    delete (rollback as { package?: unknown }).package;
    const entries = await run(root, rollback);
    expect(entries.at(-1)).toMatchObject({ kind: "failed", step: "override", reason: expect.stringContaining("0.9.0 is not kept on this host") as unknown });
    expect(await readlink(componentPaths(root, "metrics-agent").current)).toBe(join("versions", "1.0.0"));
  });

  it("[upgrade-client] MOLT_SIM_FAULT_FILE fails the named step on the named hosts only, re-read at every step, absent = no fault", async () => {
    const dir = await suite.tempRoot("fault");
    const faultFile = join(dir, "fault.json");
    const runner = inProcessRunner({ faultFile });
    await writeFile(faultFile, JSON.stringify({ hosts: ["sim-003"], step: "download", message: "injected" }));
    const faulty = await run(await seededRoot(), upgradeTask("sim-003", "/f-3.tar.gz"), runner);
    expect(faulty.at(-1)).toMatchObject({ kind: "failed", step: "download", reason: "injected" });
    const other = await run(await seededRoot(), upgradeTask("sim-004", "/f-4.tar.gz"), runner);
    expect(other.at(-1)).toMatchObject({ kind: "succeeded" });
    // Cleared: the same host succeeds with its next task.
    await rm(faultFile);
    const cleared = await run(await seededRoot(), upgradeTask("sim-003", "/f-3b.tar.gz"), runner);
    expect(cleared.at(-1)).toMatchObject({ kind: "succeeded" });
    // A broken fault file fails loudly rather than running without the fault a test asked for.
    await writeFile(faultFile, JSON.stringify({ hosts: ["sim-003"], step: "dowload" }));
    const broken = await run(await seededRoot(), upgradeTask("sim-003", "/f-3c.tar.gz"), runner);
    expect(broken.at(-1)).toMatchObject({ kind: "failed", step: "begin", reason: expect.stringContaining("is invalid: step") as unknown });
  });
});
