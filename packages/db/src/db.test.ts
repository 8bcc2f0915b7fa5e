import { writeFileSync } from "node:fs";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTemplate, DataDirBusyError, migrate, openDatabase, pgSafe, type Db, type DatabaseTemplate } from "./index.js";

let n = 0;
const uniq = (p: string) => `${p}_${process.pid}_${Date.now().toString(36)}_${++n}`;

/** The same checks against every backend: the services' SQL must mean the same on both. */
function contract(name: string, open: () => Promise<Db>) {
  describe(`db contract: ${name}`, () => {
    let db: Db;
    beforeAll(async () => {
      db = await open();
    });
    afterAll(async () => {
      await db?.close();
    });

    it("[spine] returns int8 as numbers, jsonb as values, timestamptz as Date, alike on both drivers", async () => {
      const r = await db.query<{ big: number; j: unknown; at: Date; f: number; c: number }>(
        "SELECT 9007199254740991::int8 AS big, $1::jsonb AS j, $2::timestamptz AS at, 1.5::float8 AS f, count(*)::int AS c FROM (VALUES (1), (2)) v(x)",
        [JSON.stringify({ a: [1, "x"], b: null }), "2025-01-02T03:04:05.678Z"],
      );
      expect(r.rows).toEqual([{ big: 9007199254740991, j: { a: [1, "x"], b: null }, at: new Date("2025-01-02T03:04:05.678Z"), f: 1.5, c: 2 }]);
    });

    it("pgSafe makes NUL and lone surrogates storable in text and jsonb", async () => {
      const bad: Record<string, string[]> = { "k\u0000": ["a\u0000b", "\ud800x", "ok \u{1F600}"] };
      const safe = pgSafe(bad);
      const r = await db.query<{ t: string; j: unknown }>("SELECT $1::text AS t, $2::jsonb AS j", [pgSafe("a\u0000b"), JSON.stringify(safe)]);
      expect(r.rows[0]).toEqual({ t: "a\uFFFDb", j: { "k\uFFFD": ["a\uFFFDb", "\uFFFDx", "ok \u{1F600}"] } });
    });

    it("[spine] a transaction commits all or nothing", async () => {
      const t = uniq("t");
      await db.exec(`CREATE TABLE ${t} (id int PRIMARY KEY); CREATE INDEX ON ${t} (id)`);
      await db.transaction(async (tx) => {
        await tx.query(`INSERT INTO ${t} VALUES ($1)`, [1]);
        await tx.query(`INSERT INTO ${t} VALUES ($1)`, [2]);
      });
      await expect(
        db.transaction(async (tx) => {
          await tx.query(`INSERT INTO ${t} VALUES ($1)`, [3]);
          await tx.query(`INSERT INTO ${t} VALUES ($1)`, [1]); // duplicate key: the whole transaction goes
        }),
      ).rejects.toThrow(/duplicate key/);
      // The SQLSTATE comes along (followers dead-letter what the database refuses by its code).
      await expect(db.query(`INSERT INTO ${t} VALUES ($1)`, [1])).rejects.toMatchObject({ code: "23505" });
      await expect(
        db.transaction(async (tx) => {
          await tx.query(`INSERT INTO ${t} VALUES ($1)`, [4]);
          throw new Error("handler failed");
        }),
      ).rejects.toThrow("handler failed");
      const rows = await db.query<{ id: number }>(`SELECT id FROM ${t} ORDER BY id`);
      expect(rows.rows.map((r) => r.id)).toEqual([1, 2]);
    });

    it("[spine] migrate applies each statement once and only the new ones later", async () => {
      const set = uniq("set");
      const t = uniq("m");
      const v1 = [`CREATE TABLE ${t} (id int PRIMARY KEY)`, `ALTER TABLE ${t} ADD COLUMN name text`];
      expect(await migrate(db, set, v1)).toEqual({ applied: 2 });
      expect(await migrate(db, set, v1)).toEqual({ applied: 0 });
      expect(await migrate(db, set, [...v1, `INSERT INTO ${t} VALUES (1, 'one'); INSERT INTO ${t} VALUES (2, 'two')`])).toEqual({ applied: 1 });
      expect((await db.query(`SELECT count(*)::int AS c FROM ${t}`)).rows).toEqual([{ c: 2 }]);
      // A failing statement leaves no trace and is retried next time.
      await expect(migrate(db, set, [...v1, "x", "SELECT broken syntax here"])).rejects.toThrow();
      const versions = await db.query<{ version: number }>("SELECT version FROM schema_migrations WHERE name = $1 ORDER BY version", [set]);
      expect(versions.rows.map((r) => r.version)).toEqual([1, 2, 3]);
    });
  });
}

// One PGlite per file, cloned per suite: a fresh PGlite costs seconds.
let template: DatabaseTemplate;
beforeAll(async () => {
  template = await createTemplate((db) => migrate(db, "tpl", ["CREATE TABLE tpl (v int)"]).then(() => undefined));
});
afterAll(async () => {
  await template?.close();
});

contract("PGlite", () => template.fresh());
contract("PGlite in a worker thread", () => openDatabase({ thread: true }));

const pgUrl = process.env["MOLT_TEST_DATABASE_URL"];
describe.skipIf(!pgUrl)("against PostgreSQL (MOLT_TEST_DATABASE_URL)", () => {
  contract("PostgreSQL", () => openDatabase({ url: pgUrl }));

  it("[scale-faults] a connection lost inside a transaction fails that transaction only: the process goes on and the next transaction gets a fresh connection", async () => {
    // What a crashed or restarted server does to a projector mid-transaction: node-postgres emits
    // 'error' on the checked-out client, which nobody listened to, so the whole process died.
    const db = await openDatabase({ url: pgUrl, onIdleError: () => undefined });
    try {
      const lost = db.transaction(async (tx) => {
        const { rows } = await tx.query<{ pid: number }>("SELECT pg_backend_pid() AS pid");
        await db.query("SELECT pg_terminate_backend($1)", [rows[0]!.pid]);
        await tx.query("SELECT 1");
      });
      await expect(lost).rejects.toThrow(/terminat|not queryable|Connection/i);
      expect(await db.transaction((tx) => tx.query<{ one: number }>("SELECT 1 AS one"))).toEqual({ rows: [{ one: 1 }] });
    } finally {
      await db.close();
    }
  });
});

describe("PGlite on disk", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "molt-db-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("[spine] keeps data across reopen and refuses a second owner while open", async () => {
    const dataDir = join(dir, "views");
    const a = await openDatabase({ dataDir });
    await a.exec("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('x')");
    await a.close();
    // Another live process holding the directory is refused (our own pid would count as stale).
    writeFileSync(`${dataDir}.owner.pid`, String(process.ppid));
    await expect(openDatabase({ dataDir })).rejects.toBeInstanceOf(DataDirBusyError);
    writeFileSync(`${dataDir}.owner.pid`, "999999999");
    const b = await openDatabase({ dataDir });
    expect((await b.query("SELECT v FROM kept")).rows).toEqual([{ v: "x" }]);
    await b.close();
    await expect(stat(`${dataDir}.owner.pid`)).rejects.toThrow();
  });

  it("[spine] in a worker thread: the same directory and owner file, released on close", async () => {
    const dataDir = join(dir, "threaded");
    const a = await openDatabase({ dataDir, thread: true });
    await a.exec("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('x')");
    await expect(stat(`${dataDir}.owner.pid`)).resolves.toBeTruthy();
    await a.close();
    await expect(stat(`${dataDir}.owner.pid`)).rejects.toThrow();
    const b = await openDatabase({ dataDir });
    expect((await b.query("SELECT v FROM kept")).rows).toEqual([{ v: "x" }]);
    await b.close();
  });
});

describe("template", () => {
  it("[spine] clones are migrated and independent", async () => {
    const a = await template.fresh();
    const b = await template.fresh();
    await a.query("INSERT INTO tpl VALUES (1)");
    expect((await a.query("SELECT count(*)::int AS c FROM tpl")).rows).toEqual([{ c: 1 }]);
    expect((await b.query("SELECT count(*)::int AS c FROM tpl")).rows).toEqual([{ c: 0 }]);
  });
});
