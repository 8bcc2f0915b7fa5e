import { spawn } from "node:child_process";

/** A child process run to its end: exit code (-1 when killed by a signal) and its output as text. */
export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `command args` with no stdin and no terminal (so no colours, no bars), collecting its output. */
export function run(command: string, args: string[], opts: { cwd: string; env: NodeJS.ProcessEnv }): Promise<Run> {
  return new Promise((res, rej) => {
    const child = spawn(command, args, { cwd: opts.cwd, env: opts.env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", rej);
    child.on("close", (code) => res({ code: code ?? -1, stdout, stderr }));
  });
}
