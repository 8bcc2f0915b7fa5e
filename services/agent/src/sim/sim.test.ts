import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { AgentEnv } from "../agent/config.js";
import { setFsync } from "../host/durable.js";
import { openJournal, readJournal } from "../host/task-files.js";

describe("simulated hosts: journal durability knob", () => {
  afterEach(() => setFsync(true));

  it("[roll-engine] MOLT_SIM_FSYNC is off unless set to 1, and a bad value is refused with the variable's name", () => {
    const base = { MOLT_SIM: "10", MOLT_ROOT: "/tmp/x" };
    expect(AgentEnv.parse(base).MOLT_SIM_FSYNC).toBe(false);
    expect(AgentEnv.parse({ ...base, MOLT_SIM_FSYNC: "1" }).MOLT_SIM_FSYNC).toBe(true);
    const bad = AgentEnv.safeParse({ ...base, MOLT_SIM_FSYNC: "yes" });
    expect(bad.success).toBe(false);
    expect(JSON.stringify(bad.error?.issues)).toContain("MOLT_SIM_FSYNC must be 0 or 1");
  });

  it("[roll-engine] without fsync the journal still gets every entry, in seq order, whole lines, readable after the writer is gone", async () => {
    const dir = await mkdtemp(join(tmpdir(), "molt-sim-journal-"));
    try {
      setFsync(false);
      const path = join(dir, "journal.jsonl");
      const journal = await openJournal(path);
      for (let i = 0; i < 50; i++) await journal.append({ kind: "step-started", step: "download" });
      // Not closed: as if the process had been killed; the kernel still has every write.
      const read = await readJournal(path, 0);
      expect(read.corrupt).toBeUndefined();
      expect(read.entries.map((e) => e.seq)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
      expect((await readFile(path, "utf8")).endsWith("\n")).toBe(true);
      await journal.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
