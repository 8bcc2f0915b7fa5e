/**
 * The upgrade client process: `node --import tsx main.ts --root <root> --task <taskId>`.
 * Runs one task the agent launched (read from task.json) and reports only through the task
 * journal; it prints nothing. Exit codes: 0 a verdict was journaled, 2 bad arguments or no such
 * task, 3 the task was already claimed (it runs at most once), 1 anything else (the agent then
 * journals `failed` on its behalf).
 */
import { appendFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { claimTask, openJournal, readTask, taskPaths } from "../host/task-files.js";
import { launchOptions } from "./launch.js";
import { crashFromSpec } from "./crash.js";
// Only the tracing module: the client stays small (no HTTP server, no metrics, no NATS).
import { contextFrom, inSpan, startTracing } from "@molt/runtime/tracing";
import { cancelled, DEFAULT_RETRY, runTask } from "./run-task.js";

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      root: { type: "string" },
      task: { type: "string" },
      "step-delay-ms": { type: "string" },
      mirror: { type: "string" },
    },
    strict: true,
  });
  const root = values.root;
  const taskId = values.task;
  if (!root || !taskId) {
    process.stderr.write("usage: main.ts --root <root> --task <taskId> [--step-delay-ms N] [--mirror URL]\n");
    return 2;
  }
  const task = await readTask(root, taskId);
  if (!task) {
    process.stderr.write(`no task.json for task ${taskId} under ${root}\n`);
    return 2;
  }
  if (!(await claimTask(root, taskId, { owner: "client", pid: process.pid }))) return 3;
  // SIGTERM is how the agent cancels a withdrawn task: the run stops cleanly before anything on
  // the host changes and journals why; once the switch is under way the run finishes instead.
  const cancel = new AbortController();
  process.on("SIGTERM", () => cancel.abort(cancelled("the upgrade client got SIGTERM (task withdrawn)")));
  const faultFile = process.env["MOLT_SIM_FAULT_FILE"];
  const crash = crashFromSpec(process.env["MOLT_CRASH_AT"]);
  const journal = await openJournal(taskPaths(root, taskId).journal, { afterWrite: () => crash("journal:written") });
  // Traced when the agent passed OTEL_EXPORTER_OTLP_ENDPOINT on: the run is a span of the task's trace.
  const stopTracing = await startTracing("upgrade-client");
  try {
    await inSpan("upgrade client", contextFrom(task.traceparent), async () => runTask({
      root,
      task,
      journal,
      stepDelayMs: Number(values["step-delay-ms"] ?? 0) || 0,
      signal: cancel.signal,
      crash,
      retry: retryFromEnv(process.env),
      ...(await launchOptions(root, task)),
      ...(faultFile ? { faultFile } : {}),
      ...(values.mirror ? { mirror: values.mirror } : {}),
    }), { "molt.task_id": taskId, "molt.kind": task.kind });
  } finally {
    await journal.close();
    await stopTracing();
  }
  return 0;
}

traceMemory(process.env["MOLT_MEMORY_TRACE"]);
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`upgrade client failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);

/** `MOLT_DOWNLOAD_ATTEMPTS` and `MOLT_DOWNLOAD_RETRY_MS` (inherited from the agent), else the defaults. */
function retryFromEnv(env: NodeJS.ProcessEnv): { attempts: number; delayMs: number } {
  const attempts = Number(env["MOLT_DOWNLOAD_ATTEMPTS"] ?? DEFAULT_RETRY.attempts);
  const delayMs = Number(env["MOLT_DOWNLOAD_RETRY_MS"] ?? DEFAULT_RETRY.delayMs);
  return {
    attempts: Number.isInteger(attempts) && attempts >= 1 ? attempts : DEFAULT_RETRY.attempts,
    delayMs: Number.isInteger(delayMs) && delayMs >= 0 ? delayMs : DEFAULT_RETRY.delayMs,
  };
}

/**
 * Benchmarks only (`BENCH_DEBUG=1 pnpm bench:agent`): `MOLT_MEMORY_TRACE=<file>` appends a line of
 * `process.memoryUsage()` (ms since start, rss, heapTotal, heapUsed, external, arrayBuffers) every
 * 5 ms, so the client's growth can be split into V8 heap, buffers and the rest.
 */
function traceMemory(file: string | undefined): void {
  if (!file) return;
  const t0 = performance.now();
  setInterval(() => {
    const m = process.memoryUsage();
    appendFileSync(file, `${Math.round(performance.now() - t0)} ${[m.rss, m.heapTotal, m.heapUsed, m.external, m.arrayBuffers].map((b) => (b / 2 ** 20).toFixed(1)).join(" ")}\n`);
  }, 5).unref();
}
