import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { createEventStore, type EventStore } from "@molt/event-store";
import { startNatsServer, startPostgres, startSystem, waitFor, type PostgresServer, type SecureNatsServer, type System } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { history, operatorApi, simIds, teardown } from "../roll-engine/harness.js";
import { projectorViews } from "../views/compare.js";

/**
 * The projector on a real PostgreSQL server of its own, which is crashed (`pg_ctl stop -m
 * immediate`) in the middle of a rollout and started again a while later: the projector waits
 * (its status says why), then catches up by itself, and its views equal a rebuild.
 *
 * Timings by the environment: MOLT_PG_DOWN_MS (how long the server stays down, 2,000) and
 * MOLT_PG_RETRY_MS (the projector's first retry, doubling, 50). MOLT_KEEP_DATA=1 keeps the data
 * dir (the services' logs are in its logs/) and says where.
 */
const ADMIN = "admin-token-pgdown-000001";
const OPERATOR = "operator-token-pgdown-001";
const HOSTS = simIds("pg-", 40);
/** How long the database stays down (several of the follower's backoff rounds). */
const DOWN_MS = Number(process.env["MOLT_PG_DOWN_MS"] ?? 2_000);
const RETRY_MS = Number(process.env["MOLT_PG_RETRY_MS"] ?? 50);

let nats: SecureNatsServer;
let nc: NatsConnection;
let store: EventStore;
let system: System;
let pg: PostgresServer;
let dataDir: string;
const admin = operatorApi(() => system, ADMIN);
const operator = operatorApi(() => system, OPERATOR);
const { settled, views, rebuild } = projectorViews(admin, HOSTS, () => store);

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "molt-pgdown-"));
  pg = await startPostgres();
  nats = await startNatsServer({ secure: true });
  nc = await nats.bus.connect("admin");
  store = createEventStore(nc);
  system = await startSystem({
    nats,
    dataDir,
    tokens: { [ADMIN]: { actor: "ada", role: "admin" }, [OPERATOR]: { actor: "otto", role: "operator" } },
    sim: { count: HOSTS.length, prefix: "pg-", seed: "metrics-agent@1.0.0", stepDelayMs: 100 },
    env: { MOLT_HEARTBEAT_MS: "500", MOLT_POLL_MS: "1000", MOLT_RETRY_DELAY_MS: "100" },
    processEnv: { projector: { DATABASE_URL: pg.url, MOLT_PROJECTION_RETRY_MS: String(RETRY_MS) } },
  });
  await waitFor(`${HOSTS.length} hosts in the fleet view`, async () => {
    const r = await admin.api<{ hosts: unknown[] }>("GET", "/v1/hosts?limit=100");
    return r.body.hosts?.length === HOSTS.length ? true : undefined;
  }, { timeoutMs: 60_000 });
  await admin.upload("2.0.0");
  // Starting every service is most of this file's time on a loaded machine (load 30+: minutes).
}, 300_000);

afterAll(async () => {
  const keep = process.env["MOLT_KEEP_DATA"] === "1";
  if (keep) process.stderr.write(`data dir kept: ${dataDir}\n`);
  await teardown({ extra: [], system, nc, nats, ...(keep ? {} : { dataDir }) });
  await pg?.stop();
}, 60_000);

describe("PostgreSQL down under the projector", () => {
  it("[scale-faults] the projector's PostgreSQL crashes mid-rollout and comes back: the projector waits, catches up by itself, and its views equal a rebuild", async () => {
    const h = history(store);
    const id = await operator.deploy({ version: "2.0.0", hosts: HOSTS, strategy: { maxUnavailable: { percent: 25 } } }, "pgdown-1");
    await waitFor("a few outcomes", async () => ((await h.events(id)).filter(({ e }) => e.type === "HostOutcomeRecorded").length >= 5 ? true : undefined), { timeoutMs: 60_000, intervalMs: 50 });
    await pg.crash();
    const crashedAt = await store.lastSequence();
    // While it is down the rollout goes on (the event store does not need the views) and the
    // projector answers that it cannot read its database, instead of pretending.
    await waitFor("the stream moving on while the database is down", async () => ((await store.lastSequence()) > crashedAt + 50 ? true : undefined), { timeoutMs: 60_000 });
    const during = await admin.api<unknown>("GET", `/v1/deployments/${id}`);
    expect(during.status, JSON.stringify(during.body)).toBeGreaterThanOrEqual(500);
    await new Promise((r) => setTimeout(r, DOWN_MS));
    await pg.start();

    await h.waitFor(id, "DeploymentCompleted", 120_000);
    // The same process all along: a lost connection fails a transaction, never the projector
    // (it used to die of node-postgres' 'error' event on a client inside a transaction).
    const projector = system.processes.find((p) => p.name === "projector")!;
    expect(projector.proc.exitCode, projector.tail()).toBeNull();
    // The follower retries from RETRY_MS on, doubling (at most 30 s): a few rounds after the restart.
    await settled("2.0.0", HOSTS.length, 60_000);
    const live = await views();
    expect(live.deadLetters).toEqual({ deadLetters: [] });
    await rebuild();
    expect(await views()).toEqual(live);
  }, 300_000);
});
