import { randomBytes } from "node:crypto";
import { type FileHandle, link, open, rename, stat, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/**
 * Whether this process fsyncs what it writes for its hosts. Only the simulator turns it off (its
 * `MOLT_SIM_FSYNC`, off by default): its thousands of hosts share one real disk, where each fsync
 * costs ~2.7 ms and goes through libuv's 4 threads, so the ~25 per upgrade capped a 10,000-host
 * simulation at a few dozen upgrades/s. Without fsync every write, rename and link still happens,
 * in the same order: a killed process (even SIGKILL) loses nothing, since the kernel keeps what
 * was written; only a power loss could, which a simulation does not model. One switch for the
 * process, like a mount option, rather than a parameter through every step of the client.
 */
let fsyncEnabled = true;

export function setFsync(enabled: boolean): void {
  fsyncEnabled = enabled;
}

/** fsync one open file, unless this process runs simulated hosts without fsync ({@link setFsync}). */
export async function syncFile(fd: FileHandle): Promise<void> {
  if (fsyncEnabled) await fd.sync();
}

/** fsync a directory so a rename/create/unlink inside it survives a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  if (!fsyncEnabled) return;
  const fd = await open(dir, "r");
  try {
    await fd.sync();
  } finally {
    await fd.close();
  }
}

/** Writes `data` to a fresh temp file beside `path` and fsyncs it; returns the temp path. */
async function writeSyncedTemp(path: string, data: string): Promise<string> {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(4).toString("hex")}.tmp`);
  const fd = await open(tmp, "wx");
  try {
    await fd.writeFile(data);
    await syncFile(fd);
  } finally {
    await fd.close();
  }
  return tmp;
}

/**
 * Replaces `path` with `data` so that after a crash the file holds either the old or the new
 * content, never a torn one: write a temp file, fsync, rename over, fsync the directory.
 */
export async function writeFileDurable(path: string, data: string): Promise<void> {
  const tmp = await writeSyncedTemp(path, data);
  try {
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await fsyncDir(dirname(path));
}

/**
 * Creates `path` with `data` only if it does not exist yet, durably and whole: the content is
 * written and fsynced under a temp name, then hard-linked into place (link fails with EEXIST
 * atomically), so a crash never leaves a half-written file under the final name.
 * Returns false when it already existed: the caller lost the race or the work was done before.
 */
export async function createFileDurable(path: string, data: string): Promise<boolean> {
  const tmp = await writeSyncedTemp(path, data);
  try {
    await link(tmp, path);
  } catch (err) {
    if (isErrno(err, "EEXIST")) return false;
    throw err;
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
  await fsyncDir(dirname(path));
  return true;
}

export function isErrno(err: unknown, code: string): boolean {
  return typeof err === "object" && err !== null && (err as NodeJS.ErrnoException).code === code;
}

/** True when something exists at `path` (a missing parent counts as missing too). */
export async function fileExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if (isErrno(err, "ENOENT")) return false;
    throw err;
  }
}
