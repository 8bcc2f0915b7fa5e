import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { cp, mkdir, mkdtemp, rename, rm } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");

/** The PGlite the services run (through @molt/db): a template made by another version is not used. */
function pgliteVersion(): string {
  const pkg = join(repoRoot, "packages/db/node_modules/@electric-sql/pglite/package.json");
  return (JSON.parse(readFileSync(pkg, "utf8")) as { version: string }).version;
}

let made: Promise<string> | undefined;

/**
 * An empty PGlite data directory, initialised once per checkout and PGlite version (under
 * node_modules/.cache): a service starting on a copy of it skips initdb (about 6 CPU-seconds for a
 * fresh PGlite directory, 1 for an existing one). The services still run their own migrations on it,
 * as they do after any restart. Made in a temp dir and renamed into place, so processes that race
 * to make it each end up with a whole one.
 */
export async function pgliteTemplate(): Promise<string> {
  made ??= (async () => {
    const cache = join(repoRoot, "node_modules/.cache/molt-testkit");
    const dir = join(cache, `pglite-${pgliteVersion()}`);
    if (existsSync(join(dir, "PG_VERSION"))) return dir;
    await mkdir(cache, { recursive: true });
    const tmp = await mkdtemp(join(cache, "pglite-making-"));
    // Made by a node process in packages/db, where the services' PGlite resolves: the test kit does
    // not import @molt/db (every program that imports the test kit would then hold PGlite's types
    // too, and type-checked lint already needs ~4 GB).
    const init = 'import { PGlite } from "@electric-sql/pglite"; const db = await PGlite.create(process.argv[1]); await db.query("SELECT 1"); await db.close();';
    await promisify(execFile)(process.execPath, ["--input-type=module", "-e", init, join(tmp, "data")], { cwd: join(repoRoot, "packages/db") });
    try {
      await rename(join(tmp, "data"), dir);
    } catch (err) {
      // Another process renamed its own first: theirs is as good.
      if (!existsSync(join(dir, "PG_VERSION"))) throw err;
    }
    await rm(tmp, { recursive: true, force: true });
    return dir;
  })();
  return made;
}

/**
 * Seeds `dataDir` (a service's PGlite directory, not yet created) with the template. Off with
 * MOLT_TEST_PGLITE_TEMPLATE=0: every service then runs PGlite's initdb itself.
 */
export async function seedPglite(dataDir: string): Promise<void> {
  if (process.env["MOLT_TEST_PGLITE_TEMPLATE"] === "0" || existsSync(dataDir)) return;
  const template = await pgliteTemplate();
  await mkdir(dirname(dataDir), { recursive: true });
  await cp(template, dataDir, { recursive: true });
}
