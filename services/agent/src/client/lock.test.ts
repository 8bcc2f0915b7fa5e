import { spawn } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { waitFor } from "@molt/testkit";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { acquireLock, LockBusyError, ticketPath } from "./lock.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "molt-lock-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Plants a holder as a client that took the lock would have left it. */
async function plant(lockDir: string, holder: object): Promise<void> {
  await mkdir(lockDir, { recursive: true });
  await writeFile(ticketPath(lockDir), JSON.stringify(holder));
}

describe("component lock", () => {
  it("[spine] a live holder from this boot keeps the lock", async () => {
    const path = join(dir, "lock");
    const lock = await acquireLock(path, "t-a");
    await expect(acquireLock(path, "t-b")).rejects.toBeInstanceOf(LockBusyError);
    await lock.release();
    await (await acquireLock(path, "t-b")).release();
  });

  it("[spine] a lock written before a reboot is stale even if its pid now runs something else", async () => {
    const path = join(dir, "lock");
    // process.pid is alive, but the boot id says the holder lived in an earlier boot.
    await plant(path, { pid: process.pid, taskId: "t-old", token: "x", at: "2026-01-01T00:00:00Z", bootId: "an-earlier-boot" });
    const lock = await acquireLock(path, "t-new");
    expect(JSON.parse(await readFile(ticketPath(path, 2), "utf8"))).toMatchObject({ taskId: "t-new" });
    await lock.release();
  });

  it("[spine] a lock whose pid is dead is taken over", async () => {
    const path = join(dir, "lock");
    await plant(path, { pid: 2 ** 22 + 12345, taskId: "t-dead", token: "x", at: "2026-01-01T00:00:00Z" });
    await (await acquireLock(path, "t-next")).release();
  });

  it("[upgrade-client] client processes racing for a lock left by a dead holder: exactly one takes it, every round", async () => {
    const contenders = 6;
    const rounds = 15;
    const script = fileURLToPath(new URL("../testing/lock-contender.ts", import.meta.url));
    const procs = Array.from({ length: contenders }, () =>
      spawn(process.execPath, ["--import", import.meta.resolve("tsx"), script, dir, String(rounds)], { stdio: ["ignore", "ignore", "inherit"] }),
    );
    const exits = procs.map((p) => new Promise((r) => p.once("exit", r)));
    const results = async () => (await readFile(join(dir, "results"), "utf8").catch(() => "")).trim().split("\n").filter(Boolean);
    try {
      // Every contender started before the first round, so each round's tries really overlap.
      await waitFor("contenders ready", async () => ((await readdir(dir)).filter((n) => n.startsWith("ready-")).length === contenders ? true : undefined), { timeoutMs: 20_000 });
      for (let r = 0; r < rounds; r++) {
        await plant(join(dir, "lock"), { pid: 2 ** 22 + 999, taskId: "t-dead", token: `dead-${r}`, at: "2026-01-01T00:00:00Z" });
        await writeFile(join(dir, `go-${r}`), "");
        await waitFor(`round ${r} decided`, async () => ((await results()).filter((l) => l.startsWith(`${r} `)).length === contenders ? true : undefined), { timeoutMs: 20_000, intervalMs: 5 });
        await writeFile(join(dir, `end-${r}`), "");
        // Wait for the holder to let go (its release removes the dir) before the next round plants a dead holder.
        await waitFor(`round ${r} released`, async () => ((await readdir(join(dir, "lock")).then(() => false, () => true)) ? true : undefined), { timeoutMs: 5_000, intervalMs: 5 });
      }
    } finally {
      for (const p of procs) if (p.exitCode === null) p.kill("SIGKILL");
      await Promise.all(exits);
    }
    const held = (await results()).filter((l) => l.includes(" held "));
    const perRound = Array.from({ length: rounds }, (_, r) => held.filter((l) => l.startsWith(`${r} `)).length);
    expect(perRound).toEqual(Array.from({ length: rounds }, () => 1));
  }, 60_000);

  it("[upgrade-client] clients that all see the same dead holder never both take the lock", async () => {
    const path = join(dir, "lock");
    for (let round = 0; round < 30; round++) {
      await plant(path, { pid: 2 ** 22 + 999, taskId: "t-dead", token: `dead-${round}`, at: "2026-01-01T00:00:00Z" });
      const tries = await Promise.allSettled(Array.from({ length: 6 }, (_, i) => acquireLock(path, `t-${round}-${i}`)));
      const held = tries.filter((t) => t.status === "fulfilled");
      expect(held, `round ${round}`).toHaveLength(1);
      for (const t of tries) if (t.status === "rejected") expect(t.reason).toBeInstanceOf(LockBusyError);
      await held[0]!.value.release();
    }
  });

  it("[upgrade-client] a dead holder's pid reused by an unrelated process does not block the lock", async () => {
    const path = join(dir, "lock");
    const stranger = spawn("sleep", ["30"]);
    try {
      // What a client that died long ago left: its pid now belongs to `sleep`, started later.
      const bootId = (await readFile("/proc/sys/kernel/random/boot_id", "utf8")).trim();
      await plant(path, { pid: stranger.pid, taskId: "t-gone", token: "x", at: "2026-01-01T00:00:00Z", bootId, started: 1 });
      const lock = await acquireLock(path, "t-next");
      await lock.release();
    } finally {
      stranger.kill("SIGKILL");
    }
  });
});
