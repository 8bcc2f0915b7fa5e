import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { sweepTemp } from "./blobs.js";

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe("temp sweep at start", () => {
  it("[spine] removes only temp files older than the grace period", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "molt-sweep-"));
    dirs.push(dataDir);
    expect(await sweepTemp(dataDir, 1000)).toBe(0); // no tmp dir yet
    await mkdir(join(dataDir, "tmp"));
    await writeFile(join(dataDir, "tmp", "upload-old"), "x");
    await writeFile(join(dataDir, "tmp", "upload-live"), "y");
    const hourAgo = new Date(Date.now() - 3_600_000);
    await utimes(join(dataDir, "tmp", "upload-old"), hourAgo, hourAgo);
    expect(await sweepTemp(dataDir, 60_000)).toBe(1);
    expect(await readdir(join(dataDir, "tmp"))).toEqual(["upload-live"]);
  });
});
