import { jetstream } from "@nats-io/jetstream";
import { afterAll, describe, expect, it } from "vitest";
import { subjects, type MoltEvent } from "@molt/contracts";
import { openDatabase, type Db, type DatabaseTemplate } from "@molt/db";
import { createLogger } from "@molt/runtime";
import { waitFor } from "@molt/testkit";
import { buildApp } from "./app.js";
import { projectorTestBed, testDatabases, viewerHeaders as headers, viewerTokens as tokens } from "./testing.js";

// Its own server and stream: the poison stays out of the other projector tests' stream.
// The projector logs each failed try at error: that is the behaviour under test, not noise to show.
const logger = createLogger("projector-dead-letter-test");
logger.level = "silent";
const bed = projectorTestBed();

const requested = (id: string): MoltEvent => ({
    id: `${id}/0`,
    type: "DeploymentRequested",
    data: { deploymentId: id, component: "metrics-agent", version: "2.1.0", hosts: ["web-1"], idempotencyKey: "k", requestHash: "b".repeat(64), taskTimeoutMs: 60_000 },
    metadata: { occurredAt: "2026-03-01T10:00:00.000Z", actor: "alice", correlationId: "c-1" },
});

// The file's stream is shared: a fresh database replays the poison of every run before its own.
let poisons = 0;

// Also as the projector's composition root opens it: PGlite in a worker thread (a fresh one per test).
const threaded: Db[] = [];
afterAll(async () => {
  await Promise.all(threaded.map((db) => db.close()));
});
const inThread: DatabaseTemplate = {
  fresh: async () => {
    const db = await openDatabase({ thread: true });
    threaded.push(db);
    return db;
  },
  close: () => Promise.resolve(),
};

describe.each([...testDatabases(), ["pglite-thread", () => inThread] as const])("projector on %s: poison commits", (kind, template) => {
  it("[views] a commit no reader can parse lands in the dead-letter table and later commits are still projected", async () => {
    const db = await template().fresh();
    const app = await buildApp({ db, store: bed.store, logger, tokens, retryMs: 20 });
    try {
      // Written past the event store's validation, as a buggy or hostile writer on the bus could.
      const poisonSubject = subjects.deployment(`d-poison-${kind}`);
      const ack = await jetstream(bed.nc).publish(poisonSubject, new TextEncoder().encode('{"commitId":"x","events":[{"type":"Nope"}]}'));
      poisons++;
      const id = `d-after-${kind}`;
      const after = await bed.store.append(subjects.deployment(id), { commitId: `${id}#1`, events: [requested(id)] }, { expectedSequence: 0 });

      const status = await waitFor("the projector to pass the poison", async () => {
        const s = (await app.inject({ url: "/v1/projector/status", headers })).json<{ checkpoint: number }>();
        return s.checkpoint >= after.seq ? s : undefined;
      });
      expect(status).toMatchObject({ error: null, lag: 0, deadLetters: poisons });
      const view = await app.inject({ url: `/v1/deployments/${id}`, headers });
      expect(view.statusCode).toBe(200);
      expect(view.json()).toMatchObject({ deployment: { id } });
      const dead = (await app.inject({ url: "/v1/projector/dead-letters", headers })).json<{ deadLetters: Array<{ seq: number }> }>();
      expect(dead.deadLetters).toHaveLength(poisons);
      const mine = dead.deadLetters.find((d) => d.seq === ack.seq);
      expect(mine).toEqual(expect.objectContaining({ seq: ack.seq, subject: poisonSubject, attempts: 3, payload: expect.stringContaining('"Nope"') as unknown }));
      expect(mine).toMatchObject({ error: expect.stringMatching(/not a valid commit/) as unknown });
    } finally {
      await app.close();
    }
  });
});

describe("host timelines and poison commits", () => {
  it("[views] a host's timeline leaves out a commit it cannot read and serves the rest", async () => {
    const db = await inThread.fresh();
    const app = await buildApp({ db, store: bed.store, logger, tokens, retryMs: 20 });
    try {
      const host = "web-9.poison.example.com";
      const registered: MoltEvent = {
        id: "hr/0",
        type: "HostRegistered",
        data: { hostId: host, os: "linux", arch: "amd64", platform: "linux-amd64", labels: {} },
        metadata: { occurredAt: "2026-03-01T10:00:00.000Z", actor: `host:${host}`, correlationId: "c-2" },
      };
      const first = await bed.store.append(subjects.hostMeta(host), { commitId: "hr#1", events: [registered] }, { expectedSequence: 0 });
      await jetstream(bed.nc).publish(subjects.hostMeta(host), new TextEncoder().encode('{"commitId":"x","events":[{"type":"Nope"}]}'));
      const labels: MoltEvent = { ...registered, id: "hl/0", type: "HostLabelsChanged", data: { hostId: host, labels: { tier: "web" } } };
      const last = await bed.store.append(subjects.hostMeta(host), { commitId: "hl#1", events: [labels] }, { expectedSequence: first.seq + 1 });
      const page = (await app.inject({ url: `/v1/hosts/${host}/timeline`, headers })).json<{ events: Array<{ streamSeq: number; type: string }>; next: number | null }>();
      expect(page.events.map((e) => [e.streamSeq, e.type])).toEqual([
        [first.seq, "HostRegistered"],
        [last.seq, "HostLabelsChanged"],
      ]);
      expect(page.next).toBeNull();
    } finally {
      await app.close();
    }
  });
});
