/**
 * Builds the `molt` CLI as ONE file: `pnpm build:cli [--outfile dist/molt.mjs]`. Node ≥ 20 runs it
 * alone (`node dist/molt.mjs --help`): no tsx, no sources, no node_modules. esbuild as for the agent
 * (scripts/build-agent.ts).
 */
import { chmod } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { build } from "esbuild";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..");

export async function buildCliBundle(opts: { outfile?: string } = {}): Promise<{ outfile: string; bytes: number }> {
  const outfile = resolve(opts.outfile ?? join(repoRoot, "dist", "molt.mjs"));
  const result = await build({
    entryPoints: [join(repoRoot, "packages", "cli", "src", "bin.ts")],
    outfile,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    // CommonJS dependencies (commander, cli-table3) call require() for Node built-ins; an ES module lacks it.
    banner: { js: 'import { createRequire as __moltCreateRequire } from "node:module"; const require = __moltCreateRequire(import.meta.url);' },
    legalComments: "none",
    metafile: true,
    logLevel: "warning",
  });
  await chmod(outfile, 0o755);
  return { outfile, bytes: Object.values(result.metafile.outputs)[0]?.bytes ?? 0 };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { outfile: { type: "string" } }, strict: true });
  process.stdout.write(`${JSON.stringify(await buildCliBundle(values.outfile ? { outfile: values.outfile } : {}))}\n`);
}
