import type { Db, Queryable } from "./db.js";

/**
 * Applies the statements of migration set `name` that have not run yet, each in its own
 * transaction with its row in schema_migrations. Statements are append-only: never edit or
 * reorder one that has shipped, add a new one. Replicas sharing a PostgreSQL database may start
 * together, so every step holds a transaction-scoped advisory lock and re-checks under it.
 */
export async function migrate(db: Db, name: string, statements: readonly string[]): Promise<{ applied: number }> {
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
