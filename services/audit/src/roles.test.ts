import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream } from "@nats-io/jetstream";
import { subjects, type CommandRecord } from "@molt/contracts";
import { advanceCheckpoint, migrate, openDatabase, type Db } from "@molt/db";
import { freePort, provisionBus, startNatsServer, startProcess, waitFor } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { appendEntries } from "./log/append.js";
import type { EntryFields } from "./log/chain.js";
import { migrateAsOwner } from "./log/roles.js";
import { AUDIT_MIGRATIONS } from "./log/schema.js";
import { verifyChain } from "./log/verify.js";

const pgUrl = process.env["MOLT_TEST_DATABASE_URL"];

const entry = (seq: number): EntryFields => ({
  source: "command",
  sourceStream: "MOLT_AUDIT",
  sourceSeq: seq,
  sourceIdx: 0,
  at: new Date(Date.UTC(2026, 0, 1, 0, 0, seq)).toISOString(),
  actor: "alice",
  kind: "create-deployment",
  target: `d-${seq}`,
  outcome: "accepted",
  data: { seq },
});

/** A URL for the same server as `role`, on database `name`. */
function urlAs(role: string, password: string, name: string): string {
  const u = new URL(pgUrl!);
  u.username = role;
  u.password = password;
  u.pathname = `/${name}`;
  return u.toString();
}

describe.skipIf(!pgUrl)("audit roles against PostgreSQL (MOLT_TEST_DATABASE_URL; skipped when unset)", () => {
  // Roles are per server: names of this run's own, dropped at the end.
  const suffix = `${process.pid}_${Date.now().toString(36)}`;
  const name = `molt_audit_roles_${suffix}`;
  const owner = `molt_audit_owner_${suffix}`;
  const writer = `molt_audit_writer_${suffix}`;
  let admin: Db;
  let ownerDb: Db;
  let writerDb: Db;

  beforeAll(async () => {
    admin = await openDatabase({ url: pgUrl, maxConnections: 1 });
    await admin.exec(`CREATE DATABASE ${name}`);
    // The shipped SQL, with this run's role names.
    const sql = readFileSync(new URL("../../../infra/postgres/audit-roles.sql", import.meta.url), "utf8")
      .replaceAll("molt_audit_owner", owner)
      .replaceAll("molt_audit_writer", writer);
    const superuser = await openDatabase({ url: urlAs(new URL(pgUrl!).username, decodeURIComponent(new URL(pgUrl!).password), name), maxConnections: 1 });
    await superuser.exec(sql);
    await superuser.close();
    ownerDb = await openDatabase({ url: urlAs(owner, "change-me-owner", name), maxConnections: 2 });
    writerDb = await openDatabase({ url: urlAs(writer, "change-me-writer", name), maxConnections: 2 });
    // The migrate step, as the owner; the service then runs as the writer.
    await migrateAsOwner(urlAs(owner, "change-me-owner", name), urlAs(writer, "change-me-writer", name));
    await writerDb.transaction((tx) => appendEntries(tx, [entry(1), entry(2)]));
  });

  afterAll(async () => {
    await Promise.all([ownerDb?.close(), writerDb?.close()]);
    if (!admin) return;
    await admin.exec(`DROP DATABASE IF EXISTS ${name}`);
    await admin.exec(`DROP ROLE IF EXISTS ${writer}`);
    await admin.exec(`DROP ROLE IF EXISTS ${owner}`);
    await admin.close();
  });

  it("[security] the writer role appends to the chain and moves its checkpoints; the chain verifies", async () => {
    // What the service does at start as the writer: migrations already applied are not re-run (no DDL).
    await expect(migrate(writerDb, "audit", AUDIT_MIGRATIONS)).resolves.toEqual({ applied: 0 });
    await writerDb.transaction(async (tx) => {
      expect(await advanceCheckpoint(tx, "MOLT_AUDIT", 3)).toBe(true);
      await appendEntries(tx, [entry(3)]);
    });
    const verified = await verifyChain(writerDb);
    expect(verified).toMatchObject({ ok: true, headId: 3 });
  });

  it("[security] the writer role cannot delete, rewrite, truncate or disable or drop the append-only triggers", async () => {
    const attacks = [
      "DELETE FROM audit_log WHERE id = (SELECT max(id) FROM audit_log)",
      "UPDATE audit_log SET actor = 'mallory' WHERE id = 1",
      "TRUNCATE audit_log",
      "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
      "ALTER TABLE audit_log DISABLE TRIGGER ALL",
      "DROP TRIGGER audit_log_append_only ON audit_log",
      "DROP TRIGGER audit_log_no_truncate ON audit_log",
      "ALTER TABLE audit_log OWNER TO CURRENT_USER",
      "DROP TABLE audit_log",
      "CREATE TABLE audit_shadow (id int)",
      "CREATE OR REPLACE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
    ];
    const before = await writerDb.query<{ n: number }>("SELECT count(*)::int AS n FROM audit_log");
    for (const sql of attacks) {
      // 42501: insufficient_privilege (no such right, or "must be owner").
      await expect(writerDb.query(sql), sql).rejects.toMatchObject({ code: "42501" });
    }
    const after = await writerDb.query<{ n: number }>("SELECT count(*)::int AS n FROM audit_log");
    expect(after.rows[0]!.n).toBe(before.rows[0]!.n);
    const triggers = await writerDb.query<{ tgname: string; tgenabled: string }>(
      "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'audit_log'::regclass AND NOT tgisinternal ORDER BY tgname",
    );
    expect(triggers.rows).toEqual([
      { tgname: "audit_log_append_only", tgenabled: "O" },
      { tgname: "audit_log_no_truncate", tgenabled: "O" },
    ]);
    expect(await verifyChain(writerDb)).toMatchObject({ ok: true });
  });

  it("[security] the audit service itself runs as the writer (migrating as the owner at start): it records commands and verifies, and its role cannot disable the triggers", async () => {
    const nats = await startNatsServer({ secure: true });
    const dir = await mkdtemp(join(tmpdir(), "molt-audit-roles-"));
    try {
      await provisionBus(nats.bus);
      const port = await freePort();
      const audit = await startProcess(
        "audit",
        "audit",
        {
          ...(await nats.bus.env("audit")),
          MOLT_HTTP_PORT: String(port),
          MOLT_DATA_DIR: dir,
          DATABASE_URL: urlAs(writer, "change-me-writer", name),
          MOLT_DATABASE_MIGRATE_URL: urlAs(owner, "change-me-owner", name),
          MOLT_TOKENS: JSON.stringify({ "admin-token-audit-roles-01": { actor: "ada", role: "admin" } }),
          MOLT_AUDIT_LINGER_MS: "0",
        },
        join(dir, "logs"),
        /"msg":"listening"/,
      );
      try {
        // Command records as the HTTP services publish them; the earlier tests moved MOLT_AUDIT's
        // checkpoint to 3, so the first three sequence numbers are taken as already recorded.
        const action = await nats.bus.connect("action");
        const js = jetstream(action);
        const records: CommandRecord[] = Array.from({ length: 4 }, (_, i) => ({ id: randomUUID(), kind: "create-deployment", actor: "otto", role: "operator", at: new Date().toISOString(), target: `d-writer-${i}`, outcome: "accepted", status: 202, body: null }));
        for (const r of records) await js.publish(subjects.command(r.kind), JSON.stringify(r), { msgID: r.id });
        await action.close();
        const get = async <T>(path: string) => (await fetch(`http://127.0.0.1:${port}${path}`, { headers: { authorization: "Bearer admin-token-audit-roles-01" } })).json() as Promise<T>;
        await waitFor("the service recorded the command", async () => ((await get<{ entries: Array<{ target: string | null }> }>("/v1/audit?kind=create-deployment")).entries.some((e) => e.target === "d-writer-3") ? true : undefined), { timeoutMs: 30_000 });
        expect(await get("/v1/audit/verify?full=true")).toMatchObject({ ok: true });
        // The service's own login (DATABASE_URL) is the writer, and cannot switch the triggers off.
        await expect(writerDb.query("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")).rejects.toMatchObject({ code: "42501" });
        await expect(writerDb.query("DELETE FROM audit_log WHERE target = 'd-writer-3'")).rejects.toMatchObject({ code: "42501" });
        expect(audit.proc.exitCode).toBeNull();
      } finally {
        await audit.stop();
      }
    } finally {
      await nats.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("[security] the owner role owns the log: its triggers still refuse a delete from it", async () => {
    const owned = await ownerDb.query<{ owner: string }>("SELECT tableowner AS owner FROM pg_tables WHERE tablename = 'audit_log'");
    expect(owned.rows[0]!.owner).toBe(owner);
    await expect(ownerDb.query("DELETE FROM audit_log WHERE id = 1")).rejects.toMatchObject({ code: "42501" });
  });
});
