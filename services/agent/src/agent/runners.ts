import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { DesiredState, JournalEntry } from "@molt/contracts";
import type { Fetch } from "../client/download.js";
import { cancelled, runTask } from "../client/run-task.js";
import { claimTask, openJournal, taskPaths } from "../host/task-files.js";
import { launchOptions } from "../client/launch.js";
import { errorMessage, type Log } from "../log.js";

/** How a client run ended, as far as the agent can tell. */
export interface ClientExit {
  readonly code: number | null;
  readonly signal: string | null;
  readonly error?: string;
}

export interface ClientRun {
  readonly pid: number | undefined;
  readonly exited: Promise<ClientExit>;
  /**
   * Asks the client to stop (its task was withdrawn): a process gets SIGTERM, an in-process run
   * its abort signal. A client that has not reached OVERRIDE stops and journals why; one past it finishes.
   */
  stop(reason: string): void;
}

/**
 * Starts the upgrade client for a task whose task.json is already durable. `onJournal` is called
 * when the runner knows the journal grew (in-process runs); a process run is tailed by polling.
 */
export interface TaskRunner {
  start(root: string, task: DesiredState, onJournal: (entry: JournalEntry) => void): ClientRun;
}

/** The client entry next to this file, run with tsx in a fresh node process. */
export function defaultClientEntry(): string {
  return fileURLToPath(new URL("../client/main.ts", import.meta.url));
}

/**
 * Real hosts: one child process per task, so a crash or a self-upgrade of the agent never takes
 * the half-done upgrade with it. The client writes only fatal errors to stderr; that goes to
 * `<task dir>/client.log` (a file, not a pipe: the client must not depend on the agent being
 * alive to read it) and the agent logs its tail once the client has exited.
 */
export function processRunner(opts: {
  log: Log;
  stepDelayMs?: number;
  mirror?: string;
  clientEntry?: string;
  /**
   * A built agent bundle to run the client from (`node <bundle> client …`) when this agent runs
   * from sources (MOLT_CLIENT_BUNDLE): the same code, started in a fifth of the CPU time tsx takes.
   */
  clientBundle?: string;
  tsx?: string;
  /** Extra environment for the client (tests: MOLT_CRASH_AT, MOLT_SIM_FAULT_FILE). */
  env?: Readonly<Record<string, string>>;
}): TaskRunner {
  const entry = opts.clientEntry ?? defaultClientEntry();
  // The bundled agent (dist/molt-agent.mjs, where every module shares the bundle's
  // import.meta.url; the build only writes .mjs) is its own client: `node <bundle> client …`,
  // with no tsx or sources on the host. From sources, tsx (resolved from this package, not from
  // the agent's cwd) runs main.ts.
  const prebuilt = opts.clientEntry === undefined ? (opts.clientBundle ?? null) : null;
  const bundle = opts.clientEntry === undefined && import.meta.url.endsWith(".mjs") ? fileURLToPath(import.meta.url) : prebuilt;
  const command = bundle !== null ? [bundle, "client"] : ["--import", opts.tsx ?? import.meta.resolve("tsx"), entry];
  return {
    start(root, task) {
      const args = [...command, "--root", root, "--task", task.taskId];
      if (opts.stepDelayMs) args.push("--step-delay-ms", String(opts.stepDelayMs));
      if (opts.mirror) args.push("--mirror", opts.mirror);
      const logFile = join(taskPaths(root, task.taskId).dir, "client.log");
      const log = opts.log.child({ taskId: task.taskId, component: task.component });
      let fd: number;
      try {
        fd = openSync(logFile, "a");
      } catch (err) {
        return { pid: undefined, exited: Promise.resolve({ code: null, signal: null, error: errorMessage(err) }), stop: () => undefined };
      }
      const child = spawnDetached(args, fd, opts.env);
      closeSync(fd);
      const exited = new Promise<ClientExit>((resolve) => {
        child.once("error", (err) => resolve({ code: null, signal: null, error: errorMessage(err) }));
        child.once("exit", (code, signal) => resolve({ code, signal }));
      }).then(async (exit) => {
        const tail = await readTail(logFile, 4000);
        if (tail) log.warn({ ...exit, stderr: tail }, "upgrade client wrote to stderr");
        return exit;
      });
      log.info({ clientPid: child.pid }, "upgrade client started");
      let running = true;
      void exited.then(() => (running = false));
      const stop = (reason: string) => {
        if (!running) return;
        log.info({ clientPid: child.pid, reason }, "stopping the upgrade client");
        child.kill("SIGTERM");
      };
      return { pid: child.pid, exited, stop };
    },
  };
}

/**
 * Node flags of a client process, for its memory (docs/benchmarks.md, agent: a 20 MiB upgrade
 * peaks at ~72 MB with both, ~101 MB without): `--expose-gc` lets it collect the chunks it
 * streams as it goes (client/memory.ts), and a 1 MB semi-space keeps V8 from growing the young
 * generation (heapTotal +10 MB during a download) of a process that only streams.
 */
const CLIENT_NODE_FLAGS = ["--expose-gc", "--max-semi-space-size=1"];

/**
 * The client runs in its own session and process group, so whatever ends the agent (a service
 * manager stopping its group, a terminal's Ctrl-C, a self-upgrade) does not end the upgrade it
 * started. Unreferenced: the agent may exit while the client works; while the agent lives it
 * still hears the client's exit.
 */
function spawnDetached(args: string[], stderrFd: number, env: Readonly<Record<string, string>> | undefined): ChildProcess {
  const child = spawn(process.execPath, [...CLIENT_NODE_FLAGS, ...args], {
    detached: true,
    stdio: ["ignore", "ignore", stderrFd],
    ...(env ? { env: { ...process.env, ...env } } : {}),
  });
  child.unref();
  return child;
}

async function readTail(path: string, max: number): Promise<string> {
  try {
    const buf = await readFile(path);
    return buf.subarray(Math.max(0, buf.length - max)).toString("utf8").trim();
  } catch {
    return "";
  }
}

/**
 * The simulator: the same step machine in this process (no child per task), writing the same
 * journal files, and poking the forwarder on each append instead of being polled.
 */
export function inProcessRunner(opts: { stepDelayMs?: number; mirror?: string; fetch?: Fetch; faultFile?: string } = {}): TaskRunner {
  return {
    start(root, task, onJournal) {
      const cancel = new AbortController();
      const exited = (async (): Promise<ClientExit> => {
        if (!(await claimTask(root, task.taskId, { owner: "client", pid: process.pid }))) return { code: 3, signal: null };
        const journal = await openJournal(taskPaths(root, task.taskId).journal, { onAppend: onJournal });
        try {
          await runTask({
            root,
            task,
            journal,
            stepDelayMs: opts.stepDelayMs ?? 0,
            ...(opts.mirror ? { mirror: opts.mirror } : {}),
            ...(opts.fetch ? { fetch: opts.fetch } : {}),
            ...(opts.faultFile ? { faultFile: opts.faultFile } : {}),
            signal: cancel.signal,
            ...(await launchOptions(root, task)),
          });
          return { code: 0, signal: null };
        } finally {
          await journal.close();
        }
      })().catch((err: unknown) => ({ code: 1, signal: null, error: errorMessage(err) }));
      return { pid: process.pid, exited, stop: (reason) => cancel.abort(cancelled(reason)) };
    },
  };
}
