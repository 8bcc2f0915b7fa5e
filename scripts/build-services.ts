/**
 * Builds each service (not the agent: `pnpm build:agent` makes its one file) as one ESM file, for
 * test beds that start hundreds of service processes: `tsx scripts/build-services.ts --outdir DIR`.
 * A service then starts as `node DIR/<name>.mjs` in ~0.2 CPU-seconds instead of ~0.9 under tsx
 * (measured here for action, projector, gateway and audit: module loading through tsx's hooks).
 * The services themselves run from sources under tsx everywhere else (demo, README).
 *
 * What is saved is tsx's part: its hooks on every module loaded and its transform of the sources.
 */
import { isBuiltin } from "node:module";
import { readFile } from "node:fs/promises";
import { dirname, join, resolve, sep } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { build, type Plugin } from "esbuild";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const BUNDLED_SERVICES = ["gateway", "action", "allocator", "package-repo", "feedback", "projector", "audit", "release-events"] as const;

/**
 * Only the workspace's own TypeScript goes into a bundle. Every npm dependency stays a module of
 * its own, imported by the absolute path esbuild resolves it to from the importing package (so
 * pnpm's strict layout holds, and packages that find their files from `__dirname` — PGlite's
 * WebAssembly, swagger-ui's assets, pino's workers — load as they do from sources).
 */
const npmByPath: Plugin = {
  name: "molt-npm-by-path",
  setup(b) {
    b.onResolve({ filter: /^[^./]/ }, async (args) => {
      if (args.path.startsWith("node:") || args.path.startsWith("@molt/") || args.pluginData === "npm-by-path") return undefined;
      if (isBuiltin(args.path)) return { path: args.path, external: true };
      const found = await b.resolve(args.path, { kind: args.kind, resolveDir: args.resolveDir, importer: args.importer, pluginData: "npm-by-path" });
      if (found.errors.length > 0) return { errors: found.errors };
      return { path: pathToFileURL(found.path).href, external: true };
    });
  },
};

/**
 * A workspace module's `import.meta.url` stays its own source file's URL, not the bundle's: paths
 * found from it (the dashboard's dist/) stay right, and "am I the main module" checks stay false.
 */
const ownUrl: Plugin = {
  name: "molt-own-import-meta-url",
  setup(b) {
    b.onLoad({ filter: /\.tsx?$/ }, async (args) => {
      if (args.path.includes(`${sep}node_modules${sep}`)) return undefined;
      const source = await readFile(args.path, "utf8");
      return { contents: source.replaceAll("import.meta.url", JSON.stringify(pathToFileURL(args.path).href)), loader: args.path.endsWith(".tsx") ? "tsx" : "ts" };
    });
  },
};

export async function buildServiceBundles(outdir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  await Promise.all(
    BUNDLED_SERVICES.map(async (name) => {
      const outfile = join(outdir, `${name}.mjs`);
      await build({
        entryPoints: [join(repoRoot, "services", name, "src", "index.ts")],
        outfile,
        bundle: true,
        platform: "node",
        format: "esm",
        target: "node20",
        plugins: [npmByPath, ownUrl],
        legalComments: "none",
        logLevel: "warning",
      });
      out[name] = outfile;
    }),
  );
  return out;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { outdir: { type: "string" } }, strict: true });
  if (!values.outdir) throw new Error("usage: tsx scripts/build-services.ts --outdir DIR");
  process.stdout.write(`${JSON.stringify(await buildServiceBundles(resolve(values.outdir)))}\n`);
}
