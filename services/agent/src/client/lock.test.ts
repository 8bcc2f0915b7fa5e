import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { acquireLock, LockBusyError } from "./lock.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "molt-lock-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

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
    await writeFile(path, JSON.stringify({ pid: process.pid, taskId: "t-old", token: "x", at: "2026-01-01T00:00:00Z", bootId: "an-earlier-boot" }));
    const lock = await acquireLock(path, "t-new");
    expect(JSON.parse(await readFile(path, "utf8"))).toMatchObject({ taskId: "t-new" });
    await lock.release();
  });

  it("[spine] a lock whose pid is dead is taken over", async () => {
    const path = join(dir, "lock");
    await writeFile(path, JSON.stringify({ pid: 2 ** 22 + 12345, taskId: "t-dead", token: "x", at: "2026-01-01T00:00:00Z" }));
    await (await acquireLock(path, "t-next")).release();
  });
});
