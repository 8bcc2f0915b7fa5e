import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { PGlite } from "@electric-sql/pglite";
import { fromPGlite, openDatabase, type Db } from "./db.js";

export interface DatabaseTemplate {
  /** A new database holding a copy of the template (about 0.5 s instead of 2–5 s for a fresh PGlite). */
  fresh(): Promise<Db>;
  close(): Promise<void>;
}

/**
 * For tests: one in-memory PGlite per test file, prepared once (e.g. migrated), then cloned per
 * test, so each test owns its database without paying PGlite's start-up every time.
 */
export async function createTemplate(prepare?: (db: Db) => Promise<void>): Promise<DatabaseTemplate> {
  const base = await emptyPglite();
  if (prepare) await prepare(fromPGlite(base));
  const clones: Db[] = [];
  return {
    async fresh() {
      const db = fromPGlite(await base.clone());
      clones.push(db);
      return db;
    },
    async close() {
      await Promise.all(clones.map((c) => c.close()));
      await base.close();
    },
  };
}

const cacheDir = join(dirname(fileURLToPath(import.meta.url)), "../node_modules/.cache/molt-db");

/** The PGlite version in use: a data dir dumped by another version is not loaded. */
function pgliteVersion(): string {
  const pkg = join(dirname(fileURLToPath(import.meta.resolve("@electric-sql/pglite"))), "../package.json");
  return (JSON.parse(readFileSync(pkg, "utf8")) as { version: string }).version;
}

/**
 * An empty in-memory PGlite: loaded from a dump of a fresh one, kept under node_modules/.cache
 * (about 0.8 CPU-s, against 3.5 for initdb; every test file with a template paid that, on each of
 * CI's three Node lines). The first process to need it makes it; a process that races it writes
 * its own whole copy, renamed into place.
 */
async function emptyPglite(): Promise<PGlite> {
  const file = join(cacheDir, `pglite-${pgliteVersion()}.tar.gz`);
  const dump = await readFile(file).catch(() => undefined);
  if (dump) return PGlite.create({ loadDataDir: new Blob([dump]) });
  const db = await PGlite.create();
  const made = Buffer.from(await (await db.dumpDataDir("gzip")).arrayBuffer());
  await mkdir(cacheDir, { recursive: true });
  const tmp = `${file}.${randomBytes(6).toString("hex")}`;
  await writeFile(tmp, made);
  await rename(tmp, file);
  return db;
}

/**
 * For tests on a real PostgreSQL (`MOLT_TEST_DATABASE_URL`): `fresh()` creates a database of its
 * own on that server (dropped by `close()`), so tests written for PGlite templates run unchanged.
 */
export async function createPostgresTemplate(url: string): Promise<DatabaseTemplate> {
  const admin = await openDatabase({ url, maxConnections: 1 });
  const made: Array<{ name: string; db: Db }> = [];
  return {
    async fresh() {
      const name = `molt_t_${process.pid}_${Date.now().toString(36)}_${made.length}`;
      await admin.exec(`CREATE DATABASE ${name}`);
      const u = new URL(url);
      u.pathname = `/${name}`;
      const opened = await openDatabase({ url: u.toString() });
      let closing: Promise<void> | undefined;
      // A test may close its database itself; the template's close then leaves it be.
      const db: Db = { ...opened, close: () => (closing ??= opened.close()) };
      made.push({ name, db });
      return db;
    },
    async close() {
      for (const { name, db } of made) {
        await db.close();
        await admin.exec(`DROP DATABASE IF EXISTS ${name}`);
      }
      await admin.close();
    },
  };
}
