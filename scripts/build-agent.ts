/**
 * Builds the host agent as ONE file: `pnpm build:agent [--outfile dist/molt-agent.mjs] [--version V]`.
 * The bundle holds the agent and its upgrade client (services/agent/src/molt-agent.ts dispatches)
 * and every dependency, so a host runs it with Node ≥ 20 alone: no tsx, no sources, no node_modules.
 *
 * esbuild (from npm) because it bundles TypeScript ESM with top-level await into one ESM file in
 * about a second and needs no config file; the agent's own code is unchanged by it.
 */
import { readFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { build, type Plugin } from "esbuild";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const agentDir = join(repoRoot, "services", "agent");

/**
 * index.ts reads its version from `../package.json` next to the sources; a bundle has no such
 * file, so the version is written into the bundle (the agent's package.json version, or
 * `--version` for a release build, which is what a self-upgrade's heartbeat then reports).
 * A source change that moves the read fails the build here instead of failing on a host.
 */
function stampVersion(version: string): Plugin {
  const read = 'JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"))';
  return {
    name: "molt-agent-version",
    setup(b) {
      b.onLoad({ filter: /[\\/]services[\\/]agent[\\/]src[\\/]index\.ts$/ }, async (args) => {
        const source = await readFile(args.path, "utf8");
        if (!source.includes(read)) throw new Error(`${args.path} no longer reads its version with ${read}: update scripts/build-agent.ts`);
        return { contents: source.replace(read, JSON.stringify({ version })), loader: "ts" };
      });
    },
  };
}

export interface AgentBundle {
  outfile: string;
  version: string;
  bytes: number;
}

export async function buildAgentBundle(opts: { outfile?: string; version?: string } = {}): Promise<AgentBundle> {
  const outfile = resolve(opts.outfile ?? join(repoRoot, "dist", "molt-agent.mjs"));
  const pkg = JSON.parse(await readFile(join(agentDir, "package.json"), "utf8")) as { version: string };
  const version = opts.version ?? pkg.version;
  const result = await build({
    entryPoints: [join(agentDir, "src", "molt-agent.ts")],
    outfile,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    // ESM output: CommonJS dependencies (pino, tar's helpers) still call require() for Node
    // built-ins, which an ES module lacks; give them one.
    banner: { js: 'import { createRequire as __moltCreateRequire } from "node:module"; const require = __moltCreateRequire(import.meta.url);' },
    plugins: [stampVersion(version)],
    legalComments: "none",
    metafile: true,
    logLevel: "warning",
  });
  const bytes = Object.values(result.metafile.outputs)[0]?.bytes ?? 0;
  return { outfile, version, bytes };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { outfile: { type: "string" }, version: { type: "string" } }, strict: true });
  const bundle = await buildAgentBundle({
    ...(values.outfile ? { outfile: values.outfile } : {}),
    ...(values.version ? { version: values.version } : {}),
  });
  process.stdout.write(`${JSON.stringify(bundle)}\n`);
}
