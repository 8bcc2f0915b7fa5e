import { randomBytes } from "node:crypto";
import { mkdir, readFile, unlink } from "node:fs/promises";
import { dirname } from "node:path";
import { z } from "zod";
import { createFileDurable, isErrno } from "../host/durable.js";

const Holder = z.object({ pid: z.number().int(), taskId: z.string(), token: z.string(), at: z.string(), bootId: z.string().optional() });
type Holder = z.infer<typeof Holder>;

export class LockBusyError extends Error {
  readonly code = "lock_busy";
  constructor(readonly holder: Holder) {
    super(`component lock busy: held by task ${holder.taskId} (pid ${holder.pid}) since ${holder.at}`);
  }
}

export interface ComponentLock {
  release(): Promise<void>;
}

/** True when a process with this pid exists (EPERM: it exists but belongs to someone else). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return isErrno(err, "EPERM");
  }
}

/**
 * This boot's id (Linux): a lock written before a reboot is stale whatever its pid, since the
 * pid may now belong to an unrelated process. Null where the kernel does not tell.
 */
let bootIdCache: Promise<string | null> | undefined;
function currentBootId(): Promise<string | null> {
  bootIdCache ??= readFile("/proc/sys/kernel/random/boot_id", "utf8").then(
    (t) => t.trim() || null,
    () => null,
  );
  return bootIdCache;
}

/** A holder is alive when it was written in this boot and its pid still runs. */
async function holderAlive(holder: Holder): Promise<boolean> {
  const boot = await currentBootId();
  if (boot !== null && holder.bootId !== undefined && holder.bootId !== boot) return false;
  return pidAlive(holder.pid);
}

/**
 * The OS-level lock per component: a lock file created with O_EXCL holding the owner's pid.
 * A lock whose pid is dead, or that was written before the last reboot, was left by a crashed
 * client and is taken over; a live one means
 * another client is working on this component, and the caller gets LockBusyError.
 * In-process runs (the simulator) share one pid, so there a live pid is always "busy", which is
 * what one process running two tasks on one component needs too.
 */
export async function acquireLock(path: string, taskId: string, now: () => Date = () => new Date()): Promise<ComponentLock> {
  await mkdir(dirname(path), { recursive: true });
  const bootId = await currentBootId();
  const me: Holder = { pid: process.pid, taskId, token: randomBytes(8).toString("hex"), at: now().toISOString(), ...(bootId ? { bootId } : {}) };
  const body = JSON.stringify(me);
  for (let attempt = 0; attempt < 3; attempt++) {
    if (await createFileDurable(path, body)) return { release: () => releaseLock(path, me.token) };
    const seen = await readHolder(path);
    if (seen === undefined) continue; // released between our create and our read: try again
    if (seen.holder !== null && (await holderAlive(seen.holder))) throw new LockBusyError(seen.holder);
    // Stale (dead pid, or not a holder at all). Remove it only if it is still the same file
    // content, then race for it again with O_EXCL; a loser of that race sees a live holder.
    const again = await readHolder(path);
    if (again?.text === seen.text) {
      await unlink(path).catch((err: unknown) => {
        if (!isErrno(err, "ENOENT")) throw err;
      });
    }
  }
  const last = await readHolder(path);
  throw new LockBusyError(last?.holder ?? { pid: -1, taskId: "unknown", token: "", at: "unknown" });
}

/** The lock file's text and holder (null if not a valid holder); undefined if there is no lock file. */
async function readHolder(path: string): Promise<{ text: string; holder: Holder | null } | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if (isErrno(err, "ENOENT")) return undefined;
    throw err;
  }
  try {
    return { text, holder: Holder.parse(JSON.parse(text)) };
  } catch {
    return { text, holder: null };
  }
}

async function releaseLock(path: string, token: string): Promise<void> {
  const seen = await readHolder(path);
  // Never remove a lock someone else took over (ours was judged stale): only our own token.
  if (seen?.holder?.token === token) await unlink(path);
}
