import { mkdirSync } from "node:fs";
import { PGlite, type PGliteInterface } from "@electric-sql/pglite";
import pg from "pg";
import { claimDataDir } from "./owner-lock.js";
import { openPGliteThread } from "./pglite-thread.js";

export interface QueryResult<T> {
  rows: T[];
}

/** What a projection needs to read and write: the database itself or an open transaction. */
export interface Queryable {
  /** One statement with `$1…` parameters. Pass JSON as a string and cast it (`$1::jsonb`): the two drivers serialise objects differently. */
  query<T = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<QueryResult<T>>;
  /** Several statements without parameters (migrations, DDL). */
  exec(sql: string): Promise<void>;
}

export interface Db extends Queryable {
  readonly kind: "pglite" | "postgres";
  /** BEGIN … COMMIT around `fn`; any throw rolls back and rethrows. */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

export interface OpenDatabaseOptions {
  /** A PostgreSQL connection string (DATABASE_URL). When set, dataDir is ignored. */
  url?: string | undefined;
  /** PGlite's directory; in memory when neither url nor dataDir is given. */
  dataDir?: string | undefined;
  /**
   * PGlite in a worker thread of its own (pglite-thread.ts): statements run beside the caller's
   * JavaScript instead of blocking it. For a process whose own work per statement is large (the
   * projector decoding commits); ignored for PostgreSQL.
   */
  thread?: boolean | undefined;
  /** Pool size for PostgreSQL (default 10). */
  maxConnections?: number;
  /** Errors of idle pooled connections (a restarted server); without it they would crash the process. */
  onIdleError?: (err: Error) => void;
}

/** PostgreSQL with `url`, else PGlite (embedded) at `dataDir` or in memory. The SQL is the same for both. */
export async function openDatabase(opts: OpenDatabaseOptions = {}): Promise<Db> {
  if (opts.url) return openPostgres(opts.url, opts);
  if (!opts.dataDir) return opts.thread ? openPGliteThread(undefined) : fromPGlite(await PGlite.create());
  mkdirSync(opts.dataDir, { recursive: true });
  // PGlite has no server to arbitrate: two processes on one directory would corrupt it.
  const release = claimDataDir(opts.dataDir);
  try {
    return opts.thread ? await openPGliteThread(opts.dataDir, release) : fromPGlite(await PGlite.create(opts.dataDir), release);
  } catch (err) {
    release();
    throw err;
  }
}

/** Wraps an open PGlite instance (tests pass `clone()`s of one migrated template). */
export function fromPGlite(instance: PGliteInterface, onClose?: () => void): Db {
  return {
    kind: "pglite",
    async query<T>(sql: string, params?: readonly unknown[]) {
      const r = await instance.query<T>(sql, params ? [...params] : undefined);
      return { rows: r.rows };
    },
    async exec(sql) {
      await instance.exec(sql);
    },
    transaction<T>(fn: (tx: Queryable) => Promise<T>) {
      // PGlite is one session: its transaction() also holds off other queries until COMMIT.
      return instance.transaction((tx) =>
        fn({
          async query<R>(sql: string, params?: readonly unknown[]) {
            const r = await tx.query<R>(sql, params ? [...params] : undefined);
            return { rows: r.rows };
          },
          async exec(sql) {
            await tx.exec(sql);
          },
        }),
      );
    },
    async close() {
      if (!instance.closed) await instance.close();
      onClose?.();
    },
  };
}

const INT8_OID = 20;

/** PGlite returns int8 as a number when it fits; node-postgres would return a string. Keep them alike. */
function parseInt8(text: string): number | bigint {
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : BigInt(text);
}

const getTypeParser = ((oid: number, format?: "text" | "binary"): unknown =>
  oid === INT8_OID && format !== "binary" ? parseInt8 : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser;

function openPostgres(url: string, opts: OpenDatabaseOptions): Db {
  const pool = new pg.Pool({
    connectionString: url,
    max: opts.maxConnections ?? 10,
    types: { getTypeParser },
  });
  pool.on("error", (err) => opts.onIdleError?.(err));
  const wrap = (c: pg.Pool | pg.PoolClient): Queryable => ({
    async query<T>(sql: string, params?: readonly unknown[]) {
      const r = await c.query(sql, params ? [...params] : undefined);
      return { rows: r.rows as T[] };
    },
    async exec(sql) {
      await c.query(sql);
    },
  });
  return {
    kind: "postgres",
    ...wrap(pool),
    async transaction<T>(fn: (tx: Queryable) => Promise<T>) {
      const client = await pool.connect();
      let broken: Error | undefined;
      // A checked-out client has no listener of the pool's: when the server goes away (crash,
      // restart, a terminated backend) node-postgres emits 'error' on it, which would end the
      // process. Kept here instead: the statement under way fails (or the next one does, "not
      // queryable"), the transaction rejects, and the client is destroyed, never pooled again.
      const onError = (err: Error) => {
        broken ??= err;
      };
      client.on("error", onError);
      try {
        await client.query("BEGIN");
        const out = await fn(wrap(client));
        await client.query("COMMIT");
        return out;
      } catch (err) {
        try {
          await client.query("ROLLBACK");
        } catch (rollbackErr) {
          // A connection that cannot roll back must not go back to the pool.
          broken = rollbackErr as Error;
        }
        throw err;
      } finally {
        client.removeListener("error", onError);
        client.release(broken);
      }
    },
    async close() {
      await pool.end();
    },
  };
}

/**
 * The same database with `schema` first on the search path: every statement runs in a
 * transaction that sets it (SET LOCAL), so unqualified table names resolve there on any pooled
 * connection. For building a copy of a set of tables beside the live ones (a projection rebuild).
 */
export function inSchema(db: Db, schema: string): Db {
  if (!/^[a-z_][a-z0-9_]{0,62}$/i.test(schema)) throw new Error(`not a plain schema name: ${schema}`);
  const enter = (tx: Queryable) => tx.exec(`SET LOCAL search_path TO ${schema}`);
  const transaction = <T>(fn: (tx: Queryable) => Promise<T>) =>
    db.transaction(async (tx) => {
      await enter(tx);
      return fn(tx);
    });
  return {
    kind: db.kind,
    query: <T>(sql: string, params?: readonly unknown[]) => transaction((tx) => tx.query<T>(sql, params)),
    exec: (sql) => transaction((tx) => tx.exec(sql)),
    transaction,
    // A view of a database someone else owns: its owner closes it.
    close: () => Promise.resolve(),
  };
}
