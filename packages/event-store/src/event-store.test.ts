import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { startNatsServer, type NatsServer } from "@molt/testkit";
import type { MoltEvent } from "@molt/contracts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CommitTooLargeError, ConcurrencyError, createEventStore, ensureEventStream, InvalidCommitError, type EventStore } from "./index.js";

let server: NatsServer;
let nc: NatsConnection;
let store: EventStore;
let n = 0;
const uniq = () => `agg${++n}-${Date.now().toString(36)}`;

const ev = (id: string, deploymentId = "d1"): MoltEvent => ({
  id,
  type: "DeploymentResumed",
  data: { deploymentId },
  metadata: { occurredAt: new Date().toISOString(), actor: "test", correlationId: "c" },
});

beforeAll(async () => {
  server = await startNatsServer();
  nc = await connect({ servers: server.url });
  await ensureEventStream(nc);
  store = createEventStore(nc);
});
afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

describe("event store on JetStream (contract)", () => {
  it("[spine] 20 concurrent appenders with one expectation: exactly one wins, the rest get ConcurrencyError", async () => {
    const subject = `molt.es.deployment.${uniq()}`;
    const first = await store.append(subject, { commitId: `${subject}-0`, events: [ev("e0")] }, { expectedSequence: 0 });
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) =>
        store.append(subject, { commitId: `${subject}-c${i}`, events: [ev(`e${i}`)] }, { expectedSequence: first.seq }),
      ),
    );
    const won = results.filter((r) => r.status === "fulfilled");
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(19);
    for (const r of lost) expect(r.reason).toBeInstanceOf(ConcurrencyError);
    expect(await store.read(subject)).toHaveLength(2);
  });

  it("[spine] a new aggregate is expected at sequence 0; a second 'new' append conflicts", async () => {
    const subject = `molt.es.deployment.${uniq()}`;
    await store.append(subject, { commitId: `${subject}-a`, events: [ev("a")] }, { expectedSequence: 0 });
    await expect(store.append(subject, { commitId: `${subject}-b`, events: [ev("b")] }, { expectedSequence: 0 })).rejects.toBeInstanceOf(
      ConcurrencyError,
    );
  });

  it("[spine] one commit id sent twice is stored once", async () => {
    const subject = `molt.es.deployment.${uniq()}`;
    const a = await store.append(subject, { commitId: `${subject}-x`, events: [ev("x")] }, { expectedSequence: 0 });
    // The retry carries the same commit id and the same (now stale) expectation, as a client
    // that lost the ack would send it: it is answered as a duplicate, not stored again.
    const b = await store.append(subject, { commitId: `${subject}-x`, events: [ev("x")] }, { expectedSequence: 0 });
    expect(a.duplicate).toBe(false);
    expect(b.duplicate).toBe(true);
    expect(b.seq).toBe(a.seq);
    // A retry that re-read first (fresh expectation) is caught by the msgID window.
    const c = await store.append(subject, { commitId: `${subject}-x`, events: [ev("x")] }, { expectedSequence: a.seq });
    expect(c).toEqual({ seq: a.seq, duplicate: true });
    expect(await store.read(subject)).toHaveLength(1);
  });

  it("[spine] keeps order; readLast returns the last commit with its state; a timeline filter replays in order", async () => {
    const host = uniq();
    const s1 = `molt.es.host.${host}.task.agent`;
    const s2 = `molt.es.host.${host}.meta`;
    let seq1 = 0;
    let seq2 = 0;
    for (let i = 0; i < 30; i++) {
      if (i % 3 === 0) seq2 = (await store.append(s2, { commitId: `${host}-m${i}`, events: [ev(`m${i}`)] }, { expectedSequence: seq2 })).seq;
      else seq1 = (await store.append(s1, { commitId: `${host}-t${i}`, events: [ev(`t${i}`)], state: { i } }, { expectedSequence: seq1 })).seq;
    }
    const all = await store.read(s1);
    expect(all.map((c) => c.commit.events[0]!.id)).toEqual(
      Array.from({ length: 30 }, (_, i) => i).filter((i) => i % 3 !== 0).map((i) => `t${i}`),
    );
    const last = await store.readLast(s1);
    expect(last?.seq).toBe(seq1);
    expect(last?.commit.state).toEqual({ i: 29 });
    const timeline = await store.read(`molt.es.host.${host}.>`);
    expect(timeline).toHaveLength(30);
    expect(timeline.map((c) => c.seq)).toEqual([...timeline.map((c) => c.seq)].sort((a, b) => a - b));
    expect(await store.read(`molt.es.host.${uniq()}.>`)).toEqual([]);
    expect(await store.readLast(`molt.es.deployment.${uniq()}`)).toBeNull();

    // A replay between two sequences, stopped early by its reader; it answers the filter's last sequence.
    const seqs = timeline.map((c) => c.seq);
    const seen: number[] = [];
    const bound = await store.replay(`molt.es.host.${host}.>`, { fromSeq: seqs[5]!, toSeq: seqs[20]! }, (m) => {
      seen.push(m.seq);
    });
    expect(bound).toBe(seqs[29]);
    expect(seen).toEqual(seqs.slice(5, 21));
    const stopped: number[] = [];
    await store.replay(`molt.es.host.${host}.>`, {}, (m) => stopped.push(m.seq) < 3);
    expect(stopped).toEqual(seqs.slice(0, 3));
    expect(await store.replay(`molt.es.host.${host}.>`, { toSeq: seqs[0]! - 1 }, () => expect.fail("nothing to replay"))).toBe(seqs[29]);
    expect(await store.replay(`molt.es.host.${uniq()}.>`, {}, () => expect.fail("nothing to replay"))).toBe(0);
  });

  it("[roll-engine] reading the few commits an aggregate got since it was cached takes direct gets, not a consumer; a longer read still takes one", async () => {
    // An aggregate's cache reads on from its last sequence: during a rollout the deployment moves
    // with every group commit of outcomes, and a consumer per read (create, pull, delete) was a
    // large share of the allocator's and nats-server's work per host.
    const created: string[] = [];
    const watch = nc.subscribe("$JS.API.CONSUMER.CREATE.>", { callback: (_e, m) => void created.push(m.subject) });
    await nc.flush();
    try {
      const subject = `molt.es.deployment.${uniq()}`;
      const other = `molt.es.deployment.${uniq()}`;
      let seq = 0;
      let otherSeq = 0;
      const seqs: number[] = [];
      for (let i = 0; i < 30; i++) {
        seq = (await store.append(subject, { commitId: `${subject}-${i}`, events: [ev(`e${i}`)] }, { expectedSequence: seq })).seq;
        seqs.push(seq);
        // Another subject's commits in between: a next-by-subject read steps over them.
        otherSeq = (await store.append(other, { commitId: `${other}-${i}`, events: [ev(`o${i}`)] }, { expectedSequence: otherSeq })).seq;
      }
      await nc.flush();
      const before = created.length;
      const tail = await store.read(subject, { fromSeq: seqs[26]! });
      expect(tail.map((c) => c.seq)).toEqual(seqs.slice(26));
      expect(tail.map((c) => c.commit.events[0]!.id)).toEqual(["e26", "e27", "e28", "e29"]);
      expect(await store.read(subject, { fromSeq: seq + 1 })).toEqual([]);
      // A range that holds only another subject's commit: nothing, and no consumer to learn that.
      expect(await store.replay(subject, { fromSeq: seqs[3]! + 1, toSeq: seqs[4]! - 1 }, () => expect.fail("nothing in range"))).toBe(seq);
      await nc.flush();
      expect(created.length - before).toBe(0);
      // A whole history: the first commits by direct gets, the rest by one consumer, in order, none twice.
      const all = await store.read(subject);
      expect(all.map((c) => c.seq)).toEqual(seqs);
      await nc.flush();
      expect(created.length - before).toBe(1);
    } finally {
      watch.unsubscribe();
    }
  });

  it("[spine] catch-up subscription delivers from a stream position, then live", async () => {
    const subject = `molt.es.deployment.${uniq()}`;
    const a = await store.append(subject, { commitId: `${subject}-1`, events: [ev("1")] }, { expectedSequence: 0 });
    const b = await store.append(subject, { commitId: `${subject}-2`, events: [ev("2")] }, { expectedSequence: a.seq });
    const seen: string[] = [];
    let resolve!: () => void;
    const got3 = new Promise<void>((r) => (resolve = r));
    const sub = store.subscribe({
      filter: subject,
      fromSeq: b.seq,
      handler: (c) => {
        seen.push(c.commit.events[0]!.id);
        if (seen.length === 2) resolve();
      },
    });
    await store.append(subject, { commitId: `${subject}-3`, events: [ev("3")] }, { expectedSequence: b.seq });
    await got3;
    await sub.stop();
    expect(seen).toEqual(["2", "3"]);
  });

  it("[spine] the stream refuses delete and purge", async () => {
    const subject = `molt.es.deployment.${uniq()}`;
    const a = await store.append(subject, { commitId: `${subject}-1`, events: [ev("1")] }, { expectedSequence: 0 });
    const jsm = await jetstreamManager(nc);
    await expect(jsm.streams.deleteMessage(store.stream, a.seq)).rejects.toThrow();
    await expect(jsm.streams.purge(store.stream)).rejects.toThrow();
    expect(await store.read(subject)).toHaveLength(1);
  });

  it("[spine] refuses, before storing, a commit that readers would refuse or that is too large", async () => {
    const subject = `molt.es.deployment.${uniq()}`;
    const bad = { ...ev("bad"), data: { deploymentId: "Not Valid!" } } as unknown as MoltEvent;
    await expect(store.append(subject, { commitId: `${subject}-bad`, events: [bad] }, { expectedSequence: 0 })).rejects.toBeInstanceOf(InvalidCommitError);
    const huge = Array.from({ length: 4000 }, (_, i) => ({ ...ev(`h${i}`), type: "DeploymentPaused" as const, data: { deploymentId: "d1", reason: "x".repeat(400) } }));
    await expect(store.append(subject, { commitId: `${subject}-huge`, events: huge }, { expectedSequence: 0 })).rejects.toBeInstanceOf(CommitTooLargeError);
    expect(await store.readLast(subject)).toBeNull();
  });
});
