import { spawn, spawnSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { defaultClientEntry } from "../agent/runners.js";
import { componentPaths, seedComponent } from "../host/layout.js";
import { readJournal, recordLaunch, taskPaths } from "../host/task-files.js";
import { desiredTask } from "../testing/fixtures.js";
import { packageSuite } from "../testing/suite.js";

const strace = spawnSync("strace", ["-V"]).status === 0;
const suite = packageSuite({ VERSION: "2.0.0\n" });

/** One traced syscall: its name and the paths strace -y printed for its fd or path arguments. */
interface Call {
  readonly name: string;
  readonly line: string;
}

describe.skipIf(!strace)("durability under strace (skipped where strace is absent: scripts/bootstrap.sh installs it)", () => {
  it("[upgrade-client] the journal is written then fsynced; the switch record and `current` are written, fsynced, renamed, then their directory fsynced", async () => {
    const root = await suite.tempRoot("strace");
    await seedComponent(root, { component: "metrics-agent", version: "1.0.0" });
    const url = suite.server.serve("/traced.tar.gz", { body: suite.pkg.bytes });
    const task = desiredTask({ hostId: "trace-1", package: { platform: "linux-amd64", sha256: suite.pkg.sha256, size: suite.pkg.size, url } });
    await recordLaunch(root, task);
    const out = join(root, "strace.out");
    const child = spawn(
      "strace",
      ["-f", "-y", "-qq", "-o", out, "-e", "trace=write,pwrite64,fsync,fdatasync,rename,renameat,renameat2", process.execPath, "--import", import.meta.resolve("tsx"), defaultClientEntry(), "--root", root, "--task", task.taskId],
      { stdio: "ignore" },
    );
    expect(await new Promise((r) => child.once("exit", r))).toBe(0);
    expect((await readJournal(taskPaths(root, task.taskId).journal, 0)).entries.at(-1)).toMatchObject({ kind: "succeeded" });

    const calls: Call[] = (await readFile(out, "utf8"))
      .split("\n")
      .map((l) => l.replace(/^\d+\s+/, ""))
      .map((line) => ({ name: /^(\w+)\(/.exec(line)?.[1] ?? "", line }))
      .filter((c) => c.name !== "");
    const paths = componentPaths(root, "metrics-agent");
    const journal = taskPaths(root, task.taskId).journal;
    const at = (from: number, pred: (c: Call) => boolean) => calls.findIndex((c, i) => i >= from && pred(c));
    const on = (name: string, path: string) => (c: Call) => c.name === name && c.line.includes(`<${path}>`);

    // Journal: every entry line written to the journal is fsynced before the next one is written.
    const journalWrites = calls.map((c, i) => (on("write", journal)(c) || on("pwrite64", journal)(c) ? i : -1)).filter((i) => i >= 0);
    expect(journalWrites.length).toBeGreaterThanOrEqual(12);
    for (const w of journalWrites) {
      const sync = at(w, (c) => (c.name === "fsync" || c.name === "fdatasync") && c.line.includes(`<${journal}>`));
      const nextWrite = journalWrites.find((x) => x > w) ?? Infinity;
      expect(sync, `fsync after journal write at call ${w}`).toBeGreaterThan(w);
      expect(sync).toBeLessThan(nextWrite);
    }

    // The switch record: temp file written, fsynced, renamed to switch.json, then the dir fsynced.
    const recordRename = at(0, (c) => c.name.startsWith("rename") && c.line.includes(`${join(paths.dir, "switch.json")}"`));
    expect(recordRename).toBeGreaterThan(0);
    const tmp = /"([^"]*\.switch\.json\.[0-9a-f]+\.tmp)"/.exec(calls[recordRename]!.line)?.[1];
    expect(tmp).toBeDefined();
    const recordWrite = at(0, (c) => (c.name === "write" || c.name === "pwrite64") && c.line.includes(`<${tmp}>`));
    const recordSync = at(recordWrite, (c) => c.name === "fsync" && c.line.includes(`<${tmp}>`));
    expect(recordWrite).toBeGreaterThanOrEqual(0);
    expect(recordSync).toBeGreaterThan(recordWrite);
    expect(recordRename).toBeGreaterThan(recordSync);
    const recordDirSync = at(recordRename, on("fsync", paths.dir));
    expect(recordDirSync).toBeGreaterThan(recordRename);

    // The switch: after the record is durable, `current.tmp-…` renamed over `current`, then the dir fsynced.
    const switchRename = at(recordDirSync, (c) => c.name.startsWith("rename") && c.line.includes("current.tmp-") && c.line.includes(`${paths.current}"`));
    expect(switchRename).toBeGreaterThan(recordDirSync);
    expect(at(switchRename, on("fsync", paths.dir))).toBeGreaterThan(switchRename);
    // The new version's tree was fsynced in staging, renamed into versions/, and versions/ fsynced, all before the switch.
    const extracted = join(paths.staging, `${task.taskId}.extract`);
    const treeSync = at(0, on("fsync", extracted));
    const intoVersions = at(treeSync, (c) => c.name.startsWith("rename") && c.line.includes(`"${extracted}"`) && c.line.includes(`"${paths.version("2.0.0")}"`));
    const versionsSync = at(intoVersions, on("fsync", paths.versions));
    expect(treeSync).toBeGreaterThanOrEqual(0);
    expect(intoVersions).toBeGreaterThan(treeSync);
    expect(versionsSync).toBeGreaterThan(intoVersions);
    expect(versionsSync).toBeLessThan(switchRename);
  }, 60_000);
});
