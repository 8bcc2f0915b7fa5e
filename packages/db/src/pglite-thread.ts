import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import type { Db, Queryable, QueryResult } from "./db.js";

/**
 * The worker's side, plain JavaScript run with `eval` (no loader needed, in tsx, vitest or a
 * bundle alike): it opens PGlite and answers the owner's requests one message each. A
 * transaction is held open here while the owner sends its statements, so the owner's
 * `transaction(fn)` means what it means in one thread; other queries wait for it in PGlite's
 * own queue, as they do in one thread.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const { PGlite } = require(workerData.pglite);
const flat = (err) => {
  const out = { message: err instanceof Error ? err.message : String(err) };
  // SQLSTATE and the other fields of a database error (code, detail, constraint...): strings and numbers only.
  if (err !== null && typeof err === "object")
    for (const [k, v] of Object.entries(err)) if (typeof v === "string" || typeof v === "number") out[k] = v;
  return out;
};
const ROLLBACK = Symbol("rollback");
(async () => {
  let pg;
  try {
    pg = workerData.dataDir ? await PGlite.create(workerData.dataDir) : await PGlite.create();
  } catch (err) {
    parentPort.postMessage({ id: 0, ok: false, error: flat(err) });
    return;
  }
  parentPort.postMessage({ id: 0, ok: true });
  const txs = new Map();
  let nextTx = 0;
  const reply = (id, run) =>
    Promise.resolve()
      .then(run)
      .then((value) => parentPort.postMessage({ id, ok: true, value }), (err) => parentPort.postMessage({ id, ok: false, error: flat(err) }));
  parentPort.on("message", (m) => {
    switch (m.op) {
      case "query":
        return reply(m.id, async () => (await (m.tx ? txs.get(m.tx).tx : pg).query(m.sql, m.params)).rows);
      case "exec":
        return reply(m.id, async () => {
          await (m.tx ? txs.get(m.tx).tx : pg).exec(m.sql);
        });
      case "begin": {
        const n = ++nextTx;
        let opened = false;
        const done = pg.transaction(
          (tx) =>
            new Promise((resolve, reject) => {
              txs.set(n, { tx, resolve, reject, done });
              opened = true;
              parentPort.postMessage({ id: m.id, ok: true, value: n });
            }),
        );
        done.catch((err) => {
          if (!opened) parentPort.postMessage({ id: m.id, ok: false, error: flat(err) });
        });
        return;
      }
      case "end": {
        const t = txs.get(m.tx);
        txs.delete(m.tx);
        if (m.commit) t.resolve();
        else t.reject(ROLLBACK);
        return reply(m.id, () => t.done.catch((err) => { if (err !== ROLLBACK) throw err; }));
      }
      case "close":
        // The owner ends the thread once answered.
        return reply(m.id, async () => {
          if (!pg.closed) await pg.close();
        });
    }
  });
})();
`;

type Request =
  | { op: "query"; sql: string; params: unknown[] | undefined; tx: number | undefined }
  | { op: "exec"; sql: string; tx: number | undefined }
  | { op: "begin" }
  | { op: "end"; tx: number; commit: boolean }
  | { op: "close" };
type Reply = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: { message: string } & Record<string, unknown> };

/**
 * PGlite in a worker thread of its own, behind the same `Db` as PGlite in the caller's thread.
 * PGlite runs each statement synchronously (WebAssembly) on the thread that owns it; here that
 * thread is not the caller's, so the caller's JavaScript (the projector decoding the next run of
 * commits, the NATS client reading them) goes on while a statement runs. Each call costs a
 * message each way (tens of µs), so it pays for statements that carry many rows, not for a
 * chatty caller. Errors keep their fields (`code`: SQLSTATE, `detail`, …) but are new objects.
 */
export async function openPGliteThread(dataDir: string | undefined, onClose?: () => void): Promise<Db> {
  const worker = new Worker(WORKER_SOURCE, {
    eval: true,
    // Not the caller's loaders (tsx, a test runner's): the worker's source is plain JavaScript.
    execArgv: [],
    workerData: { pglite: createRequire(import.meta.url).resolve("@electric-sql/pglite"), dataDir },
  });
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  let nextId = 0;
  let gone: Error | undefined;
  const fail = (err: Error) => {
    gone ??= err;
    for (const p of pending.values()) p.reject(err);
    pending.clear();
  };
  worker.on("message", (r: Reply) => {
    const p = pending.get(r.id);
    if (!p) return;
    pending.delete(r.id);
    if (r.ok) p.resolve(r.value);
    else p.reject(Object.assign(new Error(r.error.message), r.error));
  });
  worker.on("error", (err) => fail(err));
  worker.on("exit", (code) => fail(new Error(`the PGlite thread ended (exit code ${code})`)));
  const call = (req: Request | { op: "open" }, id = ++nextId): Promise<unknown> => {
    if (gone) return Promise.reject(gone);
    return new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject });
      if (req.op !== "open") worker.postMessage({ id, ...req });
    });
  };
  try {
    // The worker posts id 0 once PGlite is open (or could not be).
    await call({ op: "open" }, 0);
  } catch (err) {
    await worker.terminate();
    throw err;
  }
  const on = (tx: number | undefined): Queryable => ({
    async query<T>(sql: string, params?: readonly unknown[]): Promise<QueryResult<T>> {
      return { rows: (await call({ op: "query", sql, params: params ? [...params] : undefined, tx })) as T[] };
    },
    async exec(sql: string) {
      await call({ op: "exec", sql, tx });
    },
  });
  let closing: Promise<void> | undefined;
  return {
    kind: "pglite",
    ...on(undefined),
    async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
      const tx = (await call({ op: "begin" })) as number;
      let out: T;
      try {
        out = await fn(on(tx));
      } catch (err) {
        await call({ op: "end", tx, commit: false }).catch(() => undefined);
        throw err;
      }
      await call({ op: "end", tx, commit: true });
      return out;
    },
    close() {
      closing ??= (async () => {
        if (!gone) await call({ op: "close" }).catch(() => undefined);
        await worker.terminate();
        onClose?.();
      })();
      return closing;
    },
  };
}
