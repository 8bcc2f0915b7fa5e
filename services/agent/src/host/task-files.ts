import { mkdir, open, readdir, readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { DesiredState, JournalEntry, TrustedKeyConfig } from "@molt/contracts";
import { z } from "zod";
import { ComponentConfig, filesOnly } from "../agent/components.js";
import { createFileDurable, fileExists, fsyncDir, isErrno, syncFile, writeFileDurable } from "./durable.js";

/**
 * The agent's durable state for one task, under `<root>/agent/tasks/<taskId>/`:
 * - `task.json`  the DesiredState the agent launched, created once (its existence = "launched")
 * - `claim`      who runs the task: the client (its pid) or the agent giving it up; created once
 * - `journal.jsonl` the client's journal, one fsynced JournalEntry per line
 * - `forwarded`  the last seq feedback answered
 */
export interface TaskPaths {
  readonly dir: string;
  readonly taskJson: string;
  readonly launch: string;
  readonly claim: string;
  readonly journal: string;
  readonly forwarded: string;
}

export function tasksDir(root: string): string {
  return join(root, "agent", "tasks");
}

export function taskPaths(root: string, taskId: string): TaskPaths {
  const dir = join(tasksDir(root), taskId);
  return {
    dir,
    taskJson: join(dir, "task.json"),
    launch: join(dir, "launch.json"),
    claim: join(dir, "claim"),
    journal: join(dir, "journal.jsonl"),
    forwarded: join(dir, "forwarded"),
  };
}

export async function listTaskIds(root: string): Promise<string[]> {
  try {
    return (await readdir(tasksDir(root), { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name);
  } catch (err) {
    if (isErrno(err, "ENOENT")) return [];
    throw err;
  }
}

/**
 * Records durably that this task was launched. Returns false if it already was (by this agent
 * before a restart, or by a racing read): the caller must then not launch it again.
 */
/**
 * What the host's configuration says about a task's component, recorded with the task: how the
 * component runs, and the publisher keys this host trusts (public keys, from the host's config).
 */
export const LaunchContext = z.object({
  component: ComponentConfig,
  trustedKeys: z.array(TrustedKeyConfig).default([]),
});
export type LaunchContext = z.infer<typeof LaunchContext>;

export async function recordLaunch(root: string, task: DesiredState, context?: z.input<typeof LaunchContext>): Promise<boolean> {
  const p = taskPaths(root, task.taskId);
  await mkdir(p.dir, { recursive: true });
  await fsyncDir(dirname(p.dir));
  // Written before task.json (which means "launched"), so the client and a recovering agent act
  // on the configuration the task was launched with.
  if (context !== undefined && !(await fileExists(p.taskJson))) await writeFileDurable(p.launch, `${JSON.stringify(context)}\n`);
  return createFileDurable(p.taskJson, `${JSON.stringify(task)}\n`);
}

/** The launch context of a task; files only and no trusted keys when none was recorded. */
export async function readLaunch(root: string, task: DesiredState): Promise<LaunchContext> {
  try {
    return LaunchContext.parse(JSON.parse(await readFile(taskPaths(root, task.taskId).launch, "utf8")));
  } catch (err) {
    if (isErrno(err, "ENOENT")) return { component: filesOnly(task.component), trustedKeys: [] };
    throw err;
  }
}

/** The launched task, validated (a file read from disk is an edge); null if never launched. */
export async function readTask(root: string, taskId: string): Promise<DesiredState | null> {
  try {
    return DesiredState.parse(JSON.parse(await readFile(taskPaths(root, taskId).taskJson, "utf8")));
  } catch (err) {
    if (isErrno(err, "ENOENT")) return null;
    throw err;
  }
}

// ---------- claim: exactly one runner per task ----------
const Claim = z.object({ owner: z.enum(["client", "agent"]), pid: z.number().int() });
export type Claim = z.infer<typeof Claim>;

/**
 * Takes the task for one runner (O_EXCL). The client claims before it journals anything; an agent
 * restarting finds an unclaimed task whose client never started and claims it as abandoned, so
 * a late client start loses and touches nothing. Returns false if someone claimed it first.
 */
export async function claimTask(root: string, taskId: string, claim: Claim): Promise<boolean> {
  return createFileDurable(taskPaths(root, taskId).claim, JSON.stringify(claim));
}

export async function readClaim(root: string, taskId: string): Promise<Claim | null> {
  try {
    return Claim.parse(JSON.parse(await readFile(taskPaths(root, taskId).claim, "utf8")));
  } catch (err) {
    if (isErrno(err, "ENOENT")) return null;
    throw err;
  }
}

// ---------- journal ----------
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
/** A journal entry as a step machine states it; the journal adds `seq` and `at`. */
export type JournalRecord = DistributiveOmit<JournalEntry, "seq" | "at">;

export function isTerminal(e: JournalEntry): boolean {
  return e.kind === "succeeded" || e.kind === "failed" || e.kind === "rejected";
}

export interface JournalWriter {
  /** Appends one entry with the next seq, fsynced before it resolves. */
  append(record: JournalRecord): Promise<JournalEntry>;
  readonly lastSeq: number;
  close(): Promise<void>;
}

/**
 * Opens a task journal for appending. The file is created (and its dir fsynced) if missing; the
 * next seq continues after the last complete entry, so the agent can add a verdict after a client
 * died. A torn last line (a crash mid-write) is cut off first, so every line stays one entry.
 */
export async function openJournal(
  path: string,
  opts: { now?: () => Date; onAppend?: (e: JournalEntry) => void; afterWrite?: () => void } = {},
): Promise<JournalWriter> {
  const now = opts.now ?? (() => new Date());
  const existing = await readJournal(path, 0);
  if (existing.corrupt) throw new Error(`cannot append to ${path}: ${existing.corrupt}`);
  const fd = await open(path, "a+");
  if (existing.offset < (await fd.stat()).size) await fd.truncate(existing.offset);
  await syncFile(fd);
  await fsyncDir(dirname(path));
  let lastSeq = existing.entries.at(-1)?.seq ?? 0;
  let closed = false;
  return {
    get lastSeq() {
      return lastSeq;
    },
    async append(record) {
      if (closed) throw new Error("journal closed");
      const entry = JournalEntry.parse({ ...record, seq: lastSeq + 1, at: now().toISOString() });
      await fd.write(`${JSON.stringify(entry)}\n`);
      opts.afterWrite?.(); // a crash point: written, not yet fsynced
      await syncFile(fd);
      lastSeq = entry.seq;
      opts.onAppend?.(entry);
      return entry;
    },
    async close() {
      if (closed) return;
      closed = true;
      await fd.close();
    },
  };
}

export interface JournalRead {
  readonly entries: JournalEntry[];
  /** Byte offset just past the last complete, valid line: where the next read starts. */
  readonly offset: number;
  /** Set when a complete line does not parse: reading stops there. */
  readonly corrupt?: string;
}

/**
 * Reads complete lines from `offset` on. A last line without its newline is being written (or
 * was torn by a crash) and is left for later; a complete line that is not a JournalEntry stops
 * the read, since forwarding past a gap would break the seq order.
 */
export async function readJournal(path: string, offset: number): Promise<JournalRead> {
  let fd;
  try {
    fd = await open(path, "r");
  } catch (err) {
    if (isErrno(err, "ENOENT")) return { entries: [], offset };
    throw err;
  }
  let buf: Buffer;
  try {
    const size = (await fd.stat()).size;
    if (size <= offset) return { entries: [], offset };
    buf = Buffer.alloc(size - offset);
    const { bytesRead } = await fd.read(buf, 0, buf.length, offset);
    buf = buf.subarray(0, bytesRead);
  } finally {
    await fd.close();
  }
  const entries: JournalEntry[] = [];
  let pos = 0;
  for (;;) {
    const nl = buf.indexOf(0x0a, pos);
    if (nl < 0) break;
    const line = buf.subarray(pos, nl).toString("utf8");
    let parsed: JournalEntry;
    try {
      parsed = JournalEntry.parse(JSON.parse(line));
    } catch (err) {
      return { entries, offset: offset + pos, corrupt: `bad journal line at byte ${offset + pos}: ${(err as Error).message}` };
    }
    entries.push(parsed);
    pos = nl + 1;
  }
  return { entries, offset: offset + pos };
}

// ---------- forwarded ----------
export async function readForwarded(root: string, taskId: string): Promise<number> {
  try {
    const n = Number.parseInt((await readFile(taskPaths(root, taskId).forwarded, "utf8")).trim(), 10);
    return Number.isFinite(n) && n >= 0 ? n : 0;
  } catch (err) {
    if (isErrno(err, "ENOENT")) return 0;
    throw err;
  }
}

export async function writeForwarded(root: string, taskId: string, seq: number): Promise<void> {
  await writeFileDurable(taskPaths(root, taskId).forwarded, `${seq}\n`);
}
