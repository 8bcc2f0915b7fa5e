import { copyFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const UI = fileURLToPath(new URL("../ui", import.meta.url));

/**
 * Bundles the dashboard for the browser: one minified app.js (Preact, the router and the view
 * schemas from contracts), plus index.html and app.css. Everything is served by the gateway;
 * nothing is fetched from a CDN.
 */
export async function buildDashboard(outdir: string): Promise<void> {
  await mkdir(outdir, { recursive: true });
  await build({
    entryPoints: [join(UI, "main.tsx")],
    outfile: join(outdir, "app.js"),
    bundle: true,
    format: "esm",
    platform: "browser",
    target: ["chrome110", "firefox110", "safari16"],
    minify: true,
    sourcemap: true,
    jsx: "automatic",
    jsxImportSource: "preact",
    logLevel: "warning",
  });
  await copyFile(join(UI, "index.html"), join(outdir, "index.html"));
  await copyFile(join(UI, "app.css"), join(outdir, "app.css"));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const out = fileURLToPath(new URL("../dist", import.meta.url));
  await buildDashboard(out);
  process.stdout.write(`dashboard built into ${out}\n`);
}
