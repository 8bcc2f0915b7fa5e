/**
 * Event-store append vs raw JetStream async publish, measured in one run on one server.
 * Baseline: js.publish of 512 B messages with ~1,000 in flight. Measured: EventStore.append
 * (expected subject sequence + msgID) over 1,000 aggregates, each appending in turn, so about
 * 1,000 appends are in flight. Target: append rate / raw rate >= 0.7.
 * Usage: pnpm bench:event-store [--messages 40000]
 */
import { parseArgs } from "node:util";
import { jetstream, jetstreamManager, StorageType } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import type { MoltEvent } from "@molt/contracts";
import { createEventStore, ensureEventStream } from "@molt/event-store";
import { startNatsServer } from "@molt/testkit";

const { values } = parseArgs({
  options: { messages: { type: "string", default: "40000" }, aggregates: { type: "string", default: "1000" }, inflight: { type: "string", default: "1000" } },
});
const total = Number(values.messages);
const aggregates = Number(values.aggregates);
const inflight = Number(values.inflight);

const server = await startNatsServer();
const nc = await connect({ servers: server.url });
const jsm = await jetstreamManager(nc);
const js = jetstream(nc);

// A commit of one event, padded so the stored message is about 512 B like the raw baseline.
const event = (agg: number, n: number): MoltEvent => ({
  id: `bench-${agg}-${n}/0`,
  type: "DeploymentResumed",
  data: { deploymentId: `d-${agg}` },
  metadata: { occurredAt: new Date().toISOString(), actor: "bench", correlationId: "x".repeat(300) },
});
const probe = JSON.stringify({ commitId: "bench-0-0", events: [event(0, 0)] });
const payload = new Uint8Array(probe.length).fill(97);

async function raw(): Promise<number> {
  await jsm.streams.add({ name: "BENCH_RAW", subjects: ["bench.raw.>"], storage: StorageType.File });
  const t0 = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < total) {
      const i = next++;
      await js.publish(`bench.raw.${i % aggregates}`, payload);
    }
  };
  await Promise.all(Array.from({ length: inflight }, worker));
  return total / ((performance.now() - t0) / 1000);
}

async function appends(): Promise<number> {
  await ensureEventStream(nc, { stream: "BENCH_EVENTS", subjects: ["molt.es.>"] });
  const store = createEventStore(nc, { stream: "BENCH_EVENTS" });
  const perAgg = Math.ceil(total / aggregates);
  const t0 = performance.now();
  let done = 0;
  // One writer per aggregate: it must wait for its own ack to know the next expected sequence.
  await Promise.all(
    Array.from({ length: aggregates }, async (_, a) => {
      let seq = 0;
      for (let n = 0; n < perAgg && done < total; n++) {
        done++;
        seq = (await store.append(`molt.es.deployment.d-${a}`, { commitId: `bench-${a}-${n}`, events: [event(a, n)] }, { expectedSequence: seq })).seq;
      }
    }),
  );
  return done / ((performance.now() - t0) / 1000);
}

const rawRate = await raw();
const appendRate = await appends();
const ratio = appendRate / rawRate;
console.log(`raw async publish: ${rawRate.toFixed(0)} msg/s (${total} × ${payload.length} B, ${inflight} in flight)`);
console.log(`event store append: ${appendRate.toFixed(0)} commits/s (${aggregates} aggregates, expected sequence + msgID)`);
console.log(`ratio: ${ratio.toFixed(2)} (target >= 0.7)`);
await nc.close();
await server.stop();
console.log(JSON.stringify({ bench: "event-store", messages: total, bytes: payload.length, aggregates, rawPerSec: Math.round(rawRate), appendPerSec: Math.round(appendRate), ratio: Number(ratio.toFixed(3)), target: 0.7, pass: ratio >= 0.7 }));
