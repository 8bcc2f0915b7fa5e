import { execFile } from "node:child_process";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const run = promisify(execFile);

export interface BuiltAgentBundle {
  outfile: string;
  version: string;
  bytes: number;
}

/**
 * `pnpm build:agent` as its own process: the one-file agent (and client) hosts run, written to
 * `outfile` and reporting `version` (default: the agent package's). Tests copy it where they like.
 */
export async function buildAgentBundle(outfile: string, opts: { version?: string } = {}): Promise<BuiltAgentBundle> {
  const args = ["--import", "tsx", join(repoRoot, "scripts", "build-agent.ts"), "--outfile", outfile];
  if (opts.version) args.push("--version", opts.version);
  const { stdout } = await run(process.execPath, args, { cwd: repoRoot });
  return JSON.parse(stdout) as BuiltAgentBundle;
}
