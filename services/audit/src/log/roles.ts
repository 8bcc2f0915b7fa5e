import { migrate, migrateCheckpoints, openDatabase, type Db } from "@molt/db";
import { AUDIT_MIGRATIONS } from "./schema.js";

/** A PostgreSQL role name as written in a URL: quoted as an identifier, so any name is safe. */
function ident(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/**
 * The migrate step: creates or upgrades the log's tables over `db`, whose role then owns them.
 * With `writer`, grants that role only what the service needs: SELECT and INSERT on audit_log
 * (never UPDATE, DELETE or TRUNCATE), the id sequence, and its checkpoints and dead letters.
 * Not owning the table, the writer can neither disable nor drop the append-only triggers.
 */
export async function migrateAudit(db: Db, opts: { writer?: string | undefined } = {}): Promise<void> {
  await migrate(db, "audit", AUDIT_MIGRATIONS);
  await migrateCheckpoints(db);
  if (!opts.writer) return;
  const w = ident(opts.writer);
  await db.exec(`
    GRANT USAGE ON SCHEMA public TO ${w};
    GRANT SELECT, INSERT ON audit_log TO ${w};
    GRANT USAGE ON SEQUENCE audit_log_id_seq TO ${w};
    GRANT SELECT, INSERT, UPDATE ON checkpoints TO ${w};
    GRANT SELECT, INSERT ON dead_letters TO ${w};
    GRANT SELECT ON schema_migrations TO ${w};`);
}

/** The role a PostgreSQL URL logs in as (the writer the migrate step grants to). */
export function roleOf(url: string): string {
  return decodeURIComponent(new URL(url).username);
}

/**
 * Runs the migrate step over its own connection as the owner (`migrateUrl`), granting the role of
 * `writerUrl` (the service's DATABASE_URL) what it needs, then closes that connection.
 */
export async function migrateAsOwner(migrateUrl: string, writerUrl: string): Promise<void> {
  const owner = await openDatabase({ url: migrateUrl, maxConnections: 1 });
  try {
    await migrateAudit(owner, { writer: roleOf(writerUrl) });
  } finally {
    await owner.close();
  }
}
