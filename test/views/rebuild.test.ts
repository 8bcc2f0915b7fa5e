import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { createEventStore, type EventStore } from "@molt/event-store";
import { startNatsServer, startProcess, startSystem, waitFor, type RunningProcess, type SecureNatsServer, type System } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { history, operatorApi, simIds, teardown } from "../roll-engine/harness.js";
import { projectorViews } from "./compare.js";

/**
 * The whole system, 16 simulated hosts of which two fail their download: the projector's views
 * after a rollout equal the views replayed from the start (rebuild-and-swap, an audited admin
 * command), and a projector SIGKILLed in the middle of a rollout resumes to views equal to a rebuild.
 */
const ADMIN = "admin-token-rebuild-00001";
const OPERATOR = "operator-token-rebuild-01";
const HOSTS = simIds("sim-", 16);
const FAILING = ["sim-004", "sim-011"];

let nats: SecureNatsServer;
let nc: NatsConnection;
let store: EventStore;
let system: System;
let dataDir: string;
let env: Record<string, string>;
const extra: RunningProcess[] = [];
const admin = operatorApi(() => system, ADMIN);
const operator = operatorApi(() => system, OPERATOR);

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "molt-rebuild-"));
  const faultFile = join(dataDir, "fault.json");
  await writeFile(faultFile, JSON.stringify({ hosts: FAILING, step: "download", message: "injected: mirror down" }));
  nats = await startNatsServer({ secure: true });
  nc = await nats.bus.connect("admin");
  store = createEventStore(nc);
  env = { MOLT_HEARTBEAT_MS: "500", MOLT_POLL_MS: "1000", MOLT_RETRY_DELAY_MS: "100", MOLT_SIM_FAULT_FILE: faultFile };
  system = await startSystem({
    nats,
    dataDir,
    tokens: { [ADMIN]: { actor: "ada", role: "admin" }, [OPERATOR]: { actor: "otto", role: "operator" } },
    sim: { count: HOSTS.length, seed: "metrics-agent@1.0.0", stepDelayMs: 100 },
    env,
  });
  await waitFor(`${HOSTS.length} hosts in the fleet view`, async () => {
    const r = await admin.api<{ hosts: unknown[] }>("GET", "/v1/hosts?limit=100");
    return r.body.hosts.length === HOSTS.length ? true : undefined;
  }, { timeoutMs: 60_000 });
  await admin.upload("2.0.0");
  await admin.upload("3.0.0");
}, 180_000);

afterAll(() => teardown({ extra, system, nc, nats, dataDir }));

const { settled, views, rebuild } = projectorViews(admin, HOSTS, () => store);

describe("projector rebuild against the whole system", () => {
  it("[views] after a rollout with failures, the views rebuilt from the start (an audited admin command) equal the live ones", async () => {
    const id = await operator.deploy({ version: "2.0.0", hosts: HOSTS, strategy: { maxUnavailable: { percent: 25 } } }, "rebuild-1");
    const done = await history(store).waitFor(id, "DeploymentCompleted", 90_000);
    expect(done.e.type === "DeploymentCompleted" && done.e.data).toMatchObject({ succeeded: HOSTS.length - FAILING.length, failed: FAILING.length });
    await settled("2.0.0", HOSTS.length - FAILING.length);
    const live = await views();
    expect(JSON.stringify(live)).toContain("injected: mirror down");

    expect((await operator.api("POST", "/v1/projector/rebuild")).status).toBe(403);
    await rebuild();
    expect(await views()).toEqual(live);

    // Recorded in the audit: who rebuilt, and the operator refused.
    await waitFor("the rebuild in the audit", async () => {
      const r = await admin.api<{ entries: Array<{ actor: string; outcome: string }> }>("GET", "/v1/audit?kind=projector-rebuild");
      const accepted = r.body.entries?.find((e) => e.actor === "ada" && e.outcome === "accepted");
      const refused = r.body.entries?.find((e) => e.actor === "otto" && e.outcome === "refused");
      return accepted && refused ? true : undefined;
    }, { timeoutMs: 20_000 });
  }, 180_000);

  it("[views] the projector SIGKILLed in the middle of a rollout resumes, and its views equal a rebuild", async () => {
    const h = history(store);
    const id = await operator.deploy({ version: "3.0.0", hosts: HOSTS, strategy: { maxUnavailable: { percent: 25 } } }, "rebuild-2");
    await waitFor("a few outcomes of the rollout", async () => ((await h.events(id)).filter(({ e }) => e.type === "HostOutcomeRecorded").length >= 3 ? true : undefined), {
      timeoutMs: 60_000,
      intervalMs: 50,
    });
    const projector = system.processes.find((p) => p.name === "projector")!;
    await projector.kill();
    expect(await h.first(id, "DeploymentCompleted"), "the rollout was still running at the kill").toBeUndefined();
    const port = new URL(system.urls.projector).port;
    extra.push(
      await startProcess(
        "projector-restarted",
        "projector",
        {
          MOLT_TOKEN_FILE: join(dataDir, "tokens.json"),
          ...env,
          ...(await nats.bus.env("projector")),
          MOLT_HTTP_PORT: port,
          MOLT_DATA_DIR: join(dataDir, "projector"),
        },
        join(dataDir, "logs"),
        /"msg":"listening"/,
      ),
    );
    await h.waitFor(id, "DeploymentCompleted", 90_000);
    await settled("3.0.0", HOSTS.length - FAILING.length);
    const resumed = await views();
    expect(Object.keys(resumed.deployments)).toHaveLength(2);
    await rebuild();
    expect(await views()).toEqual(resumed);
  }, 180_000);
});
