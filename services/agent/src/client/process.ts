import { spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { mkdir, readdir, readFile, realpath } from "node:fs/promises";
import { isAbsolute, join } from "node:path";
import type { ComponentConfig } from "../agent/components.js";
import { isErrno, writeFileDurable } from "../host/durable.js";
import type { ComponentPaths } from "../host/layout.js";
import { pidAlive } from "./lock.js";

/** The environment a component's commands see, so one script serves every version. */
export function componentEnv(paths: ComponentPaths, version: string | null): NodeJS.ProcessEnv {
  return { ...process.env, MOLT_COMPONENT_DIR: paths.dir, MOLT_SHARED_DIR: paths.shared, MOLT_VERSION: version ?? "" };
}

/** How much of a command's output is kept (and sent as a failed step's log tail). */
export const LOG_TAIL_CHARS = 4096;

/** A command that failed, with the end of what it printed (the failed step's `logTail`). */
export class CommandFailedError extends Error {
  constructor(
    message: string,
    readonly output: string,
  ) {
    super(message);
  }
}

export interface CommandResult {
  readonly code: number | null;
  readonly signal: string | null;
  /** The last bytes of stdout and stderr together, for the journal. */
  readonly output: string;
}

/**
 * Runs `/bin/sh -c command` in `cwd` and waits, at most `timeoutMs` (then the whole process
 * group is killed). A hook, a stop command, a health command.
 */
export function runCommand(command: string, opts: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs: number }): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = spawn("/bin/sh", ["-c", command], { cwd: opts.cwd, env: opts.env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    const keep = (d: Buffer) => {
      output = (output + d.toString("utf8")).slice(-LOG_TAIL_CHARS);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    const timer = setTimeout(() => {
      output += `\n(killed after ${opts.timeoutMs} ms)`;
      killGroup(child.pid, "SIGKILL");
    }, opts.timeoutMs);
    child.once("error", (err) => {
      clearTimeout(timer);
      resolve({ code: null, signal: null, output: err.message });
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, output: output.trim().slice(-LOG_TAIL_CHARS) });
    });
  });
}

export function describeResult(what: string, r: CommandResult): string {
  const how = r.signal ? `was killed by ${r.signal}` : `exited with code ${r.code ?? "unknown"}`;
  return `${what} ${how}${r.output ? `: ${r.output.slice(-500)}` : ""}`;
}

function killGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

/** `components/<c>/run.pid`: the pid START last started (when no pid file or match is configured). */
const runPidPath = (paths: ComponentPaths) => join(paths.dir, "run.pid");

/**
 * Starts the component's process from `current`, detached in its own session (it must outlive
 * the client), output appended to shared/logs/<version>.log; the pid is recorded durably.
 */
export async function startProcess(config: ComponentConfig, paths: ComponentPaths, version: string): Promise<number | null> {
  const start = config.start;
  if (start === undefined) return null;
  if (start.systemdUnit !== undefined) {
    const r = await runCommand(`systemctl start ${start.systemdUnit}`, { cwd: "/", env: process.env, timeoutMs: 60_000 });
    if (r.code !== 0) throw new CommandFailedError(describeResult(`systemctl start ${start.systemdUnit}`, r), r.output);
    return null;
  }
  const cwd = await realpath(paths.current);
  await mkdir(join(paths.shared, "logs"), { recursive: true });
  const fd = openSync(join(paths.shared, "logs", `${version}.log`), "a");
  let pid: number | undefined;
  try {
    const child = spawn("/bin/sh", ["-c", start.command ?? ""], { cwd, env: componentEnv(paths, version), detached: true, stdio: ["ignore", fd, fd] });
    child.unref();
    pid = child.pid;
  } finally {
    closeSync(fd);
  }
  if (pid === undefined) throw new Error(`start command could not be run: ${start.command ?? ""}`);
  await writeFileDurable(runPidPath(paths), `${pid}\n`);
  return pid;
}

/** The running process's pid: from the pid file, else the process match, else what START recorded. */
export async function findPid(config: ComponentConfig, paths: ComponentPaths): Promise<number | null> {
  if (config.pidFile !== undefined) {
    const file = isAbsolute(config.pidFile) ? config.pidFile : join(paths.dir, config.pidFile);
    const pid = await readPid(file);
    return pid !== null && pidAlive(pid) ? pid : null;
  }
  if (config.processMatch !== undefined) return matchProcess(new RegExp(config.processMatch));
  const pid = await readPid(runPidPath(paths));
  return pid !== null && pidAlive(pid) ? pid : null;
}

async function readPid(file: string): Promise<number | null> {
  try {
    const n = Number.parseInt((await readFile(file, "utf8")).trim(), 10);
    return Number.isInteger(n) && n > 0 ? n : null;
  } catch (err) {
    if (isErrno(err, "ENOENT")) return null;
    throw err;
  }
}

async function matchProcess(re: RegExp): Promise<number | null> {
  for (const name of await readdir("/proc")) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      const cmdline = (await readFile(`/proc/${pid}/cmdline`, "utf8")).replaceAll("\0", " ").trim();
      if (cmdline && re.test(cmdline)) return pid;
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return null;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (pidAlive(pid)) {
    if (Date.now() >= until) return false;
    await sleep(Math.min(20, ms));
  }
  return true;
}

/**
 * Stops the running process: the stop command (or `systemctl stop`), then wait up to graceMs for
 * it to end, then SIGTERM and wait again, then SIGKILL (each to the process group when the pid
 * leads one). Returns how it ended, for the journal.
 */
export async function stopProcess(config: ComponentConfig, paths: ComponentPaths, version: string | null, knownPid?: number | null): Promise<string> {
  const graceMs = config.stop?.graceMs ?? 10_000;
  // A pid this run started is known even before the process writes its pid file.
  const pid = knownPid !== undefined && knownPid !== null && pidAlive(knownPid) ? knownPid : await findPid(config, paths);
  const notes: string[] = [];
  if (config.stop?.systemdUnit !== undefined) {
    const r = await runCommand(`systemctl stop ${config.stop.systemdUnit}`, { cwd: "/", env: process.env, timeoutMs: graceMs + 60_000 });
    if (r.code !== 0) throw new CommandFailedError(describeResult(`systemctl stop ${config.stop.systemdUnit}`, r), r.output);
    notes.push(`systemctl stop ${config.stop.systemdUnit}`);
  } else if (config.stop?.command !== undefined) {
    const cwd = await realpath(paths.current).catch(() => paths.dir);
    const r = await runCommand(config.stop.command, { cwd, env: componentEnv(paths, version), timeoutMs: graceMs + 60_000 });
    notes.push(r.code === 0 ? "stop command ok" : describeResult("stop command", r));
  }
  if (pid === null) return notes.concat("no process running").join("; ");
  if (await waitGone(pid, config.stop?.command || config.stop?.systemdUnit ? graceMs : 0)) return notes.concat(`pid ${pid} ended`).join("; ");
  killGroup(pid, "SIGTERM");
  if (await waitGone(pid, graceMs)) return notes.concat(`pid ${pid} ended after SIGTERM`).join("; ");
  killGroup(pid, "SIGKILL");
  if (await waitGone(pid, 5_000)) return notes.concat(`pid ${pid} killed after ${graceMs} ms grace`).join("; ");
  throw new Error(`pid ${pid} still runs after SIGKILL`);
}
