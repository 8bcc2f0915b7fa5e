import { mkdir, readdir, rename, rm, stat, utimes } from "node:fs/promises";
import { join } from "node:path";
import type { DesiredState, Step } from "@molt/contracts";
import { fileExists, fsyncDir, isErrno } from "../host/durable.js";
import { type ComponentPaths, installedVersion, switchCurrent } from "../host/layout.js";
import { downloadPackage, type Fetch, viaMirror } from "./download.js";
import { extractArchive, type ExtractLimits } from "./extract.js";
import { acquireLock, type ComponentLock, LockBusyError } from "./lock.js";

/** How many version dirs a component keeps (current and the previous one always among them). */
export const KEEP_VERSIONS = 3;

/** A failure that means "this task was not taken": the verdict is `rejected`, not `failed`. */
export class TaskRejectedError extends Error {
  readonly code = "task_rejected";
}

/** What the steps of one run share: inputs, and facts later steps need (the lock, the old version). */
export interface TaskContext {
  readonly root: string;
  readonly task: DesiredState;
  readonly paths: ComponentPaths;
  readonly fetch: Fetch;
  /** Aborted at the task's deadline (and when the caller gives up). */
  readonly signal: AbortSignal;
  readonly limits: ExtractLimits;
  /** A mirror base URL this host downloads through instead of the package URL's origin. */
  readonly mirror: string | undefined;
  readonly now: () => Date;
  lock: ComponentLock | null;
  previousVersion: string | null;
  /** Set once `current` points at the new version: from here on a failure means rollback (later issue). */
  switched: boolean;
}

export type StepId = "BEGIN" | "BACKUP" | "DOWNLOAD" | "OVERRIDE" | "END_ACTION";
export type Next = StepId | "END";

export interface StepSpec {
  /** The step's name in the journal (and so in slot events). */
  readonly step: Step;
  /** Does the work; resolves with an optional detail for the journal, throws to fail the step. */
  readonly run: (ctx: TaskContext) => Promise<string | undefined>;
  readonly onSuccess: Next;
  readonly onFailure: Next;
}

export interface StepMachine {
  readonly start: StepId;
  readonly steps: Readonly<Record<StepId, StepSpec>>;
}

/**
 * The upgrade as data: each step names where to go on success and on failure, and every path
 * ends in END. Only BEGIN may go straight to END (no lock taken, nothing touched); every other
 * failure still passes END_ACTION, which releases the lock and cleans up.
 * Later steps (STOP, START, VERIFY, ROLLBACK, hooks) slot in by editing this table: OVERRIDE's
 * onSuccess becomes STOP, and failures after the switch go to ROLLBACK.
 */
export const FILES_ONLY_MACHINE: StepMachine = {
  start: "BEGIN",
  steps: {
    BEGIN: { step: "begin", run: begin, onSuccess: "BACKUP", onFailure: "END" },
    BACKUP: { step: "backup", run: backup, onSuccess: "DOWNLOAD", onFailure: "END_ACTION" },
    DOWNLOAD: { step: "download", run: download, onSuccess: "OVERRIDE", onFailure: "END_ACTION" },
    OVERRIDE: { step: "override", run: override, onSuccess: "END_ACTION", onFailure: "END_ACTION" },
    END_ACTION: { step: "end-action", run: endAction, onSuccess: "END", onFailure: "END" },
  },
};

const archivePath = (ctx: TaskContext) => join(ctx.paths.staging, `${ctx.task.taskId}.tar.gz`);
const extractPath = (ctx: TaskContext) => join(ctx.paths.staging, `${ctx.task.taskId}.extract`);

async function begin(ctx: TaskContext): Promise<string> {
  if (Date.parse(ctx.task.deadline) <= ctx.now().getTime())
    throw new TaskRejectedError(`deadline ${ctx.task.deadline} has passed`);
  try {
    ctx.lock = await acquireLock(ctx.paths.lock, ctx.task.taskId, ctx.now);
  } catch (err) {
    if (err instanceof LockBusyError) throw new TaskRejectedError(err.message);
    throw err;
  }
  // Holding the lock, anything in staging or a temp `current` link was left by a run that died
  // before its switch: the recovery rule is to discard it (the old version stays).
  await discardLeftovers(ctx.paths);
  return `lock taken (pid ${process.pid})`;
}

async function backup(ctx: TaskContext): Promise<string> {
  ctx.previousVersion = await installedVersion(ctx.root, ctx.task.component);
  // Files only: versions/<previous> is kept as it is, so there is nothing to copy; shared/ must
  // exist before the new version may rely on it.
  await mkdir(ctx.paths.shared, { recursive: true });
  await mkdir(ctx.paths.staging, { recursive: true });
  return ctx.previousVersion ? `previous version ${ctx.previousVersion}` : "no previous version";
}

async function download(ctx: TaskContext): Promise<string> {
  const pkg = ctx.task.package;
  if (pkg === undefined) throw new Error(`a ${ctx.task.kind} task has no package to download`);
  const url = viaMirror(pkg.url, ctx.mirror);
  const res = await downloadPackage({
    url,
    dest: archivePath(ctx),
    size: pkg.size,
    sha256: pkg.sha256,
    fetch: ctx.fetch,
    signal: ctx.signal,
  });
  const resumed = res.resumedBytes > 0 ? `, resumed ${res.resumedBytes} bytes` : "";
  const via = ctx.mirror ? ` via ${new URL(url).origin}` : "";
  return `${res.bytes} bytes, sha256 ok${resumed}${via}`;
}

async function override(ctx: TaskContext): Promise<string> {
  const { version } = ctx.task;
  const extracted = extractPath(ctx);
  await rm(extracted, { recursive: true, force: true });
  const summary = await extractArchive(archivePath(ctx), extracted, ctx.limits);
  const target = ctx.paths.version(version);
  const installed = await installedVersion(ctx.root, ctx.task.component);
  if (await fileExists(target)) {
    if (installed === version) {
      // The live version is never replaced under running code; it already is what we want.
      await rm(extracted, { recursive: true, force: true });
      return `version ${version} already current`;
    }
    await rm(target, { recursive: true, force: true }); // left by an earlier attempt, not live
  }
  await mkdir(ctx.paths.versions, { recursive: true });
  await rename(extracted, target);
  // mtime = install time: pruning keeps the most recently installed versions.
  const now = ctx.now();
  await utimes(target, now, now);
  await fsyncDir(ctx.paths.versions);
  await switchCurrent(ctx.paths, version, ctx.task.taskId);
  ctx.switched = true;
  return `${summary.files} files, ${summary.bytes} bytes; current → versions/${version}`;
}

/** Never fails: a cleanup problem must not turn a done upgrade into a failure; it is reported as detail. */
async function endAction(ctx: TaskContext): Promise<string> {
  const notes: string[] = [];
  try {
    await discardLeftovers(ctx.paths);
  } catch (err) {
    notes.push(`staging cleanup failed: ${(err as Error).message}`);
  }
  try {
    const pruned = await pruneVersions(ctx);
    if (pruned.length > 0) notes.push(`pruned ${pruned.join(", ")}`);
  } catch (err) {
    notes.push(`pruning failed: ${(err as Error).message}`);
  }
  try {
    await ctx.lock?.release();
    ctx.lock = null;
    notes.push("lock released");
  } catch (err) {
    notes.push(`lock release failed: ${(err as Error).message}`);
  }
  return notes.join("; ");
}

async function discardLeftovers(paths: ComponentPaths): Promise<void> {
  await rm(paths.staging, { recursive: true, force: true });
  await mkdir(paths.staging, { recursive: true });
  for (const name of await readdir(paths.dir)) {
    if (name.startsWith("current.tmp-")) await rm(join(paths.dir, name), { force: true });
  }
}

/** Keeps the last KEEP_VERSIONS installed versions, always including current and the previous one. */
async function pruneVersions(ctx: TaskContext): Promise<string[]> {
  const current = await installedVersion(ctx.root, ctx.task.component);
  let names: string[];
  try {
    names = await readdir(ctx.paths.versions);
  } catch (err) {
    if (isErrno(err, "ENOENT")) return [];
    throw err;
  }
  const dated = await Promise.all(names.map(async (n) => ({ n, t: (await stat(ctx.paths.version(n))).mtimeMs })));
  dated.sort((a, b) => b.t - a.t);
  const keep = new Set([current, ctx.previousVersion].filter((v): v is string => v !== null));
  for (const { n } of dated) if (keep.size < KEEP_VERSIONS) keep.add(n);
  const drop = dated.map((d) => d.n).filter((n) => !keep.has(n));
  for (const n of drop) await rm(ctx.paths.version(n), { recursive: true, force: true });
  return drop;
}
