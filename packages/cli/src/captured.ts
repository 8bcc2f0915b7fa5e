import { PassThrough } from "node:stream";
import { runCli } from "./program.js";

/**
 * The CLI run in this process with its output captured (not a terminal: no colours, no bars), for
 * tests that care about what it prints and its exit code rather than the process around it.
 */
export async function runCliCaptured(argv: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = new PassThrough();
  const err = new PassThrough();
  let stdout = "";
  let stderr = "";
  out.on("data", (d: Buffer) => (stdout += d.toString()));
  err.on("data", (d: Buffer) => (stderr += d.toString()));
  const code = await runCli(argv, { stdout: out as unknown as NodeJS.WriteStream, stderr: err as unknown as NodeJS.WriteStream, env });
  await new Promise((r) => setImmediate(r)); // the streams hand over their last writes on a later tick
  return { code, stdout, stderr };
}
