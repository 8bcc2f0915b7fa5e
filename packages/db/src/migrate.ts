import type { Db, Queryable } from "./db.js";

/**
 * Applies the statements of migration set `name` that have not run yet, each in its own
 * transaction with its row in schema_migrations. Statements are append-only: never edit or
 * reorder one that has shipped, add a new one. Replicas sharing a PostgreSQL database may start
 * together, so every step holds a transaction-scoped advisory lock and re-checks under it.
 */
export async function migrate(db: Db, name: string, statements: readonly string[]): Promise<{ applied: number }> {
  // Up to date: nothing to do, and no DDL either, so a role without CREATE (a writer that does not
  // own the tables, as audit runs on PostgreSQL) starts once its owner has migrated.
  if (await upToDate(db, name, statements.length)) return { applied: 0 };
  const lock = (tx: Queryable) => tx.query("SELECT pg_advisory_xact_lock(hashtext('molt-migrate'))");
  await db.transaction(async (tx) => {
    await lock(tx);
    await tx.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
      name text NOT NULL,
      version integer NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (name, version)
    )`);
  });
  const done = await db.query<{ version: number }>("SELECT version FROM schema_migrations WHERE name = $1", [name]);
  const have = new Set(done.rows.map((r) => r.version));
  let applied = 0;
  for (const [index, sql] of statements.entries()) {
    const version = index + 1;
    if (have.has(version)) continue;
    const ran = await db.transaction(async (tx) => {
      await lock(tx);
      const again = await tx.query("SELECT 1 FROM schema_migrations WHERE name = $1 AND version = $2", [name, version]);
      if (again.rows.length > 0) return false;
      await tx.exec(sql);
      await tx.query("INSERT INTO schema_migrations (name, version) VALUES ($1, $2)", [name, version]);
      return true;
    });
    if (ran) applied++;
  }
  return { applied };
}

async function upToDate(db: Db, name: string, count: number): Promise<boolean> {
  const table = await db.query<{ t: string | null }>("SELECT to_regclass('schema_migrations')::text AS t");
  if (!table.rows[0]?.t) return false;
  const done = await db.query<{ n: number }>("SELECT count(*)::int AS n FROM schema_migrations WHERE name = $1 AND version <= $2", [name, count]);
  return done.rows[0]?.n === count;
}
