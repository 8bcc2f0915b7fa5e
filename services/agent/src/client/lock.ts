import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdir, readdir, readFile, rmdir, unlink } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { createFileDurable, isErrno } from "../host/durable.js";

const Holder = z.object({
  pid: z.number().int(),
  taskId: z.string(),
  token: z.string(),
  at: z.string(),
  bootId: z.string().optional(),
  /** The holder process's start time (clock ticks after boot, /proc/<pid>/stat): tells a reused pid apart. */
  started: z.number().int().optional(),
});
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

/**
 * True when a process with this pid exists (EPERM: it exists but belongs to someone else) and is
 * not a zombie: a component process orphaned by its client is reparented, and where no one reaps
 * it (a container's pid 1 often does not) it would otherwise look alive forever after it ended.
 */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if (!isErrno(err, "EPERM")) return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return true; // no /proc: trust the signal check
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

/** A process's start time in clock ticks after boot (field 22 of /proc/<pid>/stat); null where unknown. */
export async function processStartTime(pid: number): Promise<number | null> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const started = Number(fields[19]);
    return Number.isInteger(started) ? started : null;
  } catch {
    return null;
  }
}

/**
 * A holder is alive when it was written in this boot, its pid runs, and (where the kernel tells)
 * that pid is still the same process: a pid reused by an unrelated process does not hold the lock.
 */
async function holderAlive(holder: Holder): Promise<boolean> {
  const boot = await currentBootId();
  if (boot !== null && holder.bootId !== undefined && holder.bootId !== boot) return false;
  if (!pidAlive(holder.pid)) return false;
  if (holder.started === undefined) return true;
  const started = await processStartTime(holder.pid);
  return started === null || started === holder.started;
}

const GEN_DIGITS = 12;
const genName = (gen: number) => String(gen).padStart(GEN_DIGITS, "0");

/**
 * The component lock, a directory of numbered tickets. To take it: look at the highest ticket;
 * if its holder is alive the lock is busy; else create the next number with O_EXCL (of all the
 * clients that saw the same dead holder, exactly one creates that name), then look again: a
 * higher ticket or a live lower one means someone else is deciding or holds it, so ours is
 * withdrawn. A taker never deletes a ticket it did not write unless that ticket's holder is
 * dead, so two clients can never both hold the lock (unlike "unlink the stale file, then
 * create": a slow client could unlink the lock a faster one had just taken).
 * In-process runs (the simulator) share one pid, so there a live pid is always "busy", which is
 * what one process running two tasks on one component needs too.
 */
export async function acquireLock(dir: string, taskId: string, now: () => Date = () => new Date()): Promise<ComponentLock> {
  const bootId = await currentBootId();
  const started = await processStartTime(process.pid);
  const me: Holder = {
    pid: process.pid,
    taskId,
    token: randomBytes(8).toString("hex"),
    at: now().toISOString(),
    ...(bootId ? { bootId } : {}),
    ...(started !== null ? { started } : {}),
  };
  const body = JSON.stringify(me);
  let lastSeen: Holder | null = null;
  for (let attempt = 0; attempt < 8; attempt++) {
    if (attempt > 0) await new Promise((r) => setTimeout(r, 1 + Math.random() * 10));
    const tickets = await listTickets(dir);
    const top = tickets.at(-1);
    if (top !== undefined) {
      const holder = await readTicket(dir, top);
      if (holder === undefined) continue; // released just now: look again
      if (holder !== null && (await holderAlive(holder))) throw new LockBusyError(holder);
    }
    const mine = (top ?? 0) + 1;
    let created: boolean;
    try {
      await mkdir(dir, { recursive: true });
      created = await createFileDurable(join(dir, genName(mine)), body);
    } catch (err) {
      if (isErrno(err, "ENOENT")) continue; // the dir was removed by a release in between
      throw err;
    }
    if (!created) continue; // another client took this number: look again (it is alive)
    const verdict = await confirm(dir, mine);
    if (verdict === "held") return { release: () => releaseTicket(dir, mine) };
    await unlink(join(dir, genName(mine))).catch(() => undefined);
    if (verdict !== "contended") {
      lastSeen = verdict;
      break;
    }
  }
  throw new LockBusyError(lastSeen ?? (await liveHolder(dir)) ?? { pid: -1, taskId: "unknown", token: "", at: "unknown" });
}

/**
 * After creating ticket `mine`: held if it is the highest and every lower ticket's holder is
 * dead (those are removed, so the dir stays small); a live lower holder wins; a higher ticket
 * means another client is deciding at the same time ("contended": withdraw and look again).
 */
async function confirm(dir: string, mine: number): Promise<"held" | "contended" | Holder> {
  const tickets = await listTickets(dir);
  if (tickets.some((t) => t > mine)) return "contended";
  const dead: number[] = [];
  for (const t of tickets) {
    if (t >= mine) continue;
    const holder = await readTicket(dir, t);
    if (holder === undefined) continue;
    if (holder !== null && (await holderAlive(holder))) return holder;
    dead.push(t);
  }
  for (const t of dead) await unlink(join(dir, genName(t))).catch(() => undefined);
  return "held";
}

async function liveHolder(dir: string): Promise<Holder | null> {
  for (const t of (await listTickets(dir)).reverse()) {
    const holder = await readTicket(dir, t);
    if (holder && (await holderAlive(holder))) return holder;
  }
  return null;
}

async function listTickets(dir: string): Promise<number[]> {
  try {
    return (await readdir(dir))
      .filter((n) => n.length === GEN_DIGITS && /^\d+$/.test(n))
      .map(Number)
      .sort((a, b) => a - b);
  } catch (err) {
    if (isErrno(err, "ENOENT")) return [];
    throw err;
  }
}

/** The ticket's holder; null if it is not a valid holder (counts as dead); undefined if it is gone. */
async function readTicket(dir: string, gen: number): Promise<Holder | null | undefined> {
  let text: string;
  try {
    text = await readFile(join(dir, genName(gen)), "utf8");
  } catch (err) {
    if (isErrno(err, "ENOENT")) return undefined;
    throw err;
  }
  try {
    return Holder.parse(JSON.parse(text));
  } catch {
    return null;
  }
}

/** Removes our own ticket, then the dir if it is empty (another taker's ticket keeps it). */
async function releaseTicket(dir: string, gen: number): Promise<void> {
  await unlink(join(dir, genName(gen))).catch((err: unknown) => {
    if (!isErrno(err, "ENOENT")) throw err;
  });
  await rmdir(dir).catch((err: unknown) => {
    if (!isErrno(err, "ENOTEMPTY") && !isErrno(err, "ENOENT") && !isErrno(err, "EEXIST")) throw err;
  });
}

/** The holder file a client that took ticket 1 writes: tests plant dead or foreign holders with it. */
export function ticketPath(dir: string, gen = 1): string {
  return join(dir, genName(gen));
}
