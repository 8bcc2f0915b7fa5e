/**
 * Test helper process: launches the upgrade client for a task the way the agent does (the real
 * processRunner), prints `launched <pid>` and then idles, so a test can kill this "agent" (with
 * its whole process group) and see whether the client survives it.
 * Usage: node --import tsx launch-client.ts <root> <taskId>
 */
import { readTask } from "../host/task-files.js";
import { silentLog } from "../log.js";
import { testRunner } from "./runner.js";

const [root, taskId] = process.argv.slice(2);
if (!root || !taskId) throw new Error("usage: launch-client.ts <root> <taskId>");
const task = await readTask(root, taskId);
if (!task) throw new Error(`no task ${taskId}`);
const run = testRunner({ log: silentLog() }).start(root, task, () => undefined);
process.stdout.write(`launched ${run.pid}\n`);
setInterval(() => undefined, 60_000);
