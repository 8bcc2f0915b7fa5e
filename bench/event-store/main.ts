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
  options: {
    messages: { type: "string", default: "40000" },
    aggregates: { type: "string", default: "1000" },
    inflight: { type: "string", default: "1000" },
    rounds: { type: "string", default: "5" },
  },
});
const total = Number(values.messages);
const rounds = Number(values.rounds);
const aggregates = Number(values.aggregates);
const inflight = Number(values.inflight);

const server = await startNatsServer();
// The services' client setting (connectNats): no Error built per request for its async stack.
const nc = await connect({ servers: server.url, noAsyncTraces: true });
const jsm = await jetstreamManager(nc);
const js = jetstream(nc);

// A commit of one event, padded so the stored message is about 512 B like the raw baseline.
const event = (agg: number, n: number): MoltEvent => ({
  id: `bench-${agg}-${n}/0`,
  type: "DeploymentPaused",
  data: { deploymentId: `d-${agg}`, reason: "x".repeat(300) },
  metadata: { occurredAt: new Date().toISOString(), actor: "bench", correlationId: `c-${agg}` },
});
const probe = JSON.stringify({ commitId: "bench-0-0", events: [event(0, 0)] });
const payload = new Uint8Array(probe.length).fill(97);

async function raw(round: number, count: number): Promise<number> {
  await jsm.streams.add({ name: `BENCH_RAW_${round}`, subjects: [`bench.raw${round}.>`], storage: StorageType.File });
  const t0 = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      await js.publish(`bench.raw${round}.${i % aggregates}`, payload);
    }
  };
  await Promise.all(Array.from({ length: inflight }, worker));
  return count / ((performance.now() - t0) / 1000);
}

async function appends(round: number, count: number): Promise<number> {
  // Same subject shape as the real store (molt.es.<aggregate>.<id>), one stream per round.
  await ensureEventStream(nc, { stream: `BENCH_EVENTS_${round}`, subjects: [`molt${round}.es.>`] });
  const store = createEventStore(nc, { stream: `BENCH_EVENTS_${round}` });
  const perAgg = Math.ceil(count / aggregates);
  // The caller's work (building events) is done before the clock starts, as the baseline's
  // payload is: what is timed is the store's append (validate, encode, publish, await the ack).
  const commits = Array.from({ length: aggregates }, (_, a) => Array.from({ length: perAgg }, (_, n) => ({ commitId: `bench-${a}-${n}`, events: [event(a, n)] })));
  const t0 = performance.now();
  let done = 0;
  // One writer per aggregate: it must wait for its own ack to know the next expected sequence.
  await Promise.all(
    Array.from({ length: aggregates }, async (_, a) => {
      let seq = 0;
      for (let n = 0; n < perAgg && done < count; n++) {
        done++;
        seq = (await store.append(`molt${round}.es.deployment.d-${a}`, commits[a]![n]!, { expectedSequence: seq })).seq;
      }
    }),
  );
  return done / ((performance.now() - t0) / 1000);
}

// Warm both paths up (JIT, server file creation), then alternate rounds so that drift in the
// machine's load hits both sides alike; the median of each side is reported.
await raw(0, 5000);
await appends(0, 5000);
const rawRates: number[] = [];
const appendRates: number[] = [];
for (let r = 1; r <= rounds; r++) {
  rawRates.push(await raw(r, total));
  appendRates.push(await appends(r, total));
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const rawRate = median(rawRates);
const appendRate = median(appendRates);
const ratio = appendRate / rawRate;
console.log(`raw async publish: median ${rawRate.toFixed(0)} msg/s of [${rawRates.map((x) => x.toFixed(0)).join(", ")}] (${total} × ${payload.length} B, ${inflight} in flight)`);
console.log(`event store append: median ${appendRate.toFixed(0)} commits/s of [${appendRates.map((x) => x.toFixed(0)).join(", ")}] (${aggregates} aggregates, expected sequence + msgID)`);
console.log(`ratio: ${ratio.toFixed(2)} (target >= 0.7)`);
await nc.close();
await server.stop();
console.log(JSON.stringify({ bench: "event-store", messages: total, bytes: payload.length, aggregates, rounds, rawPerSec: Math.round(rawRate), appendPerSec: Math.round(appendRate), ratio: Number(ratio.toFixed(3)), target: 0.7, pass: ratio >= 0.7 }));
