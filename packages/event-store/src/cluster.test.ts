import { jetstreamManager } from "@nats-io/jetstream";
import { STREAM_EVENTS, type MoltEvent } from "@molt/contracts";
import { startNatsCluster, waitFor, type NatsCluster } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConcurrencyError, createEventStore, ensureEventStream } from "./index.js";

let cluster: NatsCluster;

beforeAll(async () => {
  cluster = await startNatsCluster();
  const admin = await cluster.bus.connect("admin");
  await ensureEventStream(admin, { replicas: 3 });
  await admin.close();
}, 120_000);
afterAll(async () => {
  await cluster?.stop();
});

const event = (id: string): MoltEvent => ({
  id,
  type: "DeploymentResumed",
  data: { deploymentId: "d1" },
  metadata: { occurredAt: new Date().toISOString(), actor: "test", correlationId: "c" },
});

describe("event store on a 3-node cluster", () => {
  it("[scale-faults] appends go on while the event stream's leader is SIGKILLed and restarted: every acknowledged commit is stored where its ack said, none twice", async () => {
    // An event-store writer's identity, reconnecting as the services do.
    const nc = await cluster.bus.connect("allocator", { maxReconnectAttempts: -1, reconnectTimeWait: 250, noAsyncTraces: true });
    try {
      const store = createEventStore(nc);
      const acked = new Map<string, number>();
      const WRITERS = 12;
      const PER_WRITER = 25;
      let stop = false;
      const writer = async (w: number) => {
        const subject = `molt.es.deployment.w${w}`;
        let seq = 0;
        for (let n = 0; n < PER_WRITER && !stop; ) {
          const commitId = `w${w}-${n}`;
          try {
            const ack = await store.append(subject, { commitId, events: [event(`${commitId}/0`)] }, { expectedSequence: seq });
            acked.set(commitId, ack.seq);
            seq = ack.seq;
            n++;
          } catch (err) {
            // A timeout or no leader (an election): the commit may or may not have landed, so the
            // same commit is sent again; the store answers a landed one as a duplicate.
            if (err instanceof ConcurrencyError) throw err;
            await new Promise((r) => setTimeout(r, 100));
          }
        }
      };
      let ackedAtKill = 0;
      const writing = Promise.all(Array.from({ length: WRITERS }, (_, w) => writer(w)));
      try {
        await waitFor("a third of the appends", () => (acked.size >= (WRITERS * PER_WRITER) / 3 ? true : undefined), { timeoutMs: 60_000, intervalMs: 50 });
        const leader = await cluster.leaderOf(STREAM_EVENTS);
        await cluster.nodes[leader]!.kill();
        ackedAtKill = acked.size;
        await waitFor("a new leader", async () => ((await cluster.leaderOf(STREAM_EVENTS).catch(() => leader)) !== leader ? true : undefined), { timeoutMs: 60_000, intervalMs: 250 });
        await cluster.nodes[leader]!.start();
        await writing;
      } finally {
        stop = true;
      }
      // The kill landed while appends were under way: some were acknowledged before it, the rest after.
      expect(ackedAtKill).toBeGreaterThan(0);
      expect(ackedAtKill).toBeLessThan(WRITERS * PER_WRITER);
      expect(acked.size).toBe(WRITERS * PER_WRITER);
      // Read back from the stream's leader (a replica's direct get may lag behind a restart).
      const jsm = await jetstreamManager(nc);
      for (const [commitId, seq] of acked) {
        const m = await jsm.streams.getMessage(STREAM_EVENTS, { seq });
        expect(m ? (m.json<{ commitId: string }>()).commitId : null, `${commitId} at ${seq}`).toBe(commitId);
      }
      // Every stored message is one acknowledged commit: none was stored twice. The count must be
      // the leader's: a replica that thinks its group has no leader answers STREAM.INFO too, at once
      // and from its own store, with no leader in its cluster info (nats-server's jsStreamInfoRequest).
      // Right after the restart the restarted node was such a replica, still catching up, and its
      // answer often came first (155 of 300 in CI on Node 22, 127 on Node 24 for more than 30 s; every
      // commit was found at its seq above), so every answer is gathered and the leader's is taken.
      const leadersCount = async () => {
        const answers = await nc.requestMany(`$JS.API.STREAM.INFO.${STREAM_EVENTS}`, undefined, { strategy: "timer", maxWait: 1_000 });
        for await (const m of answers) {
          const info = m.json<{ cluster?: { leader?: string }; state?: { messages: number } }>();
          if (info.cluster?.leader && info.state) return info.state.messages;
        }
        return undefined;
      };
      const stored = await waitFor("the stream leader's count", leadersCount, { timeoutMs: 60_000, intervalMs: 100 });
      expect(stored).toBe(acked.size);
    } finally {
      await nc.close();
    }
  }, 240_000);
  // After the leader test, which counts the stream's messages.
  it("[scale-faults] appends racing on one subject of the replicated stream: one lands, every other is a ConcurrencyError", async () => {
    // nats-server 2.11+ refuses the losers of such a race on a replicated stream with err_code 10164
    // (wrong last sequence, no number), not 10071: append passed it on raw, so a decider took a
    // conflict for a failure instead of re-reading (found by the esread engineer; 4 of 4 runs red).
    const nc = await cluster.bus.connect("allocator", { noAsyncTraces: true });
    try {
      const store = createEventStore(nc);
      for (let round = 0; round < 5; round++) {
        const subject = `molt.es.deployment.race${round}`;
        const results = await Promise.allSettled(
          Array.from({ length: 8 }, (_, w) => store.append(subject, { commitId: `race${round}-${w}`, events: [event(`race${round}-${w}/0`)] }, { expectedSequence: 0 })),
        );
        const refused = results.flatMap((r) => (r.status === "rejected" ? [r.reason as Error] : []));
        expect(results.length - refused.length, `round ${round}: appends that landed`).toBe(1);
        for (const err of refused) expect(err, `round ${round}: ${err.name} ${err.message}`).toBeInstanceOf(ConcurrencyError);
      }
    } finally {
      await nc.close();
    }
  });
});
