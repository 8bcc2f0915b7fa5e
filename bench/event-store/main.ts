/**
 * Event-store append vs raw JetStream async publish, measured in one run on one server.
 * Baseline: js.publish of ~512 B messages with ~1,000 in flight. Measured: EventStore.append
 * (validate, encode, expected subject sequence + msgID) over 1,000 aggregates, each appending in
 * turn, so about 1,000 appends are in flight. Target: append rate / raw rate >= 0.7.
 * Also measured, for what the store's guarantees cost on their own: the same raw publishes sent
 * through the store's publisher (jetStreamPublisher: append's transport, no headers, no checks).
 * Usage: pnpm bench:event-store [--messages 40000] [--rounds 5] [--async-traces] [--only raw|lean|append]
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { jetstream, jetstreamManager, StorageType } from "@nats-io/jetstream";
import { connect, headers } from "@nats-io/transport-node";
import type { MoltEvent } from "@molt/contracts";
import { createEventStore, ensureEventStream, jetStreamPublisher } from "@molt/event-store";
import { startNatsServer } from "@molt/testkit";

const { values } = parseArgs({
  options: {
    messages: { type: "string", default: "40000" },
    aggregates: { type: "string", default: "1000" },
    inflight: { type: "string", default: "1000" },
    rounds: { type: "string", default: "5" },
    // nats.js's default (an Error per request for its async stack); the services connect without it.
    "async-traces": { type: "boolean", default: false },
    // One side alone (for `node --cpu-prof`); no ratio then.
    only: { type: "string" },
  },
});
const total = Number(values.messages);
const rounds = Number(values.rounds);
const aggregates = Number(values.aggregates);
const inflight = Number(values.inflight);
const asyncTraces = values["async-traces"];
type Side = "raw" | "lean" | "append";
const sides: Side[] = ["raw", "lean", "append"];
const only = values.only as Side | undefined;
if (only !== undefined && !sides.includes(only)) throw new Error(`--only ${sides.join("|")}, not ${only}`);

const server = await startNatsServer();
// The services' client setting (connectNats): no Error built per request for its async stack.
const nc = await connect({ servers: server.url, noAsyncTraces: !asyncTraces });
const jsm = await jetstreamManager(nc);
const js = jetstream(nc);
const lean = jetStreamPublisher(nc);

// A commit of one event, padded so the stored message is about 512 B like the raw baseline.
const event = (agg: number, n: number): MoltEvent => ({
  id: `bench-${agg}-${n}/0`,
  type: "DeploymentPaused",
  data: { deploymentId: `d-${agg}`, reason: "x".repeat(300) },
  metadata: { occurredAt: new Date().toISOString(), actor: "bench", correlationId: `c-${agg}` },
});
const probe = JSON.stringify({ commitId: "bench-0-0", events: [event(0, 0)] });
const payload = new Uint8Array(probe.length).fill(97);

/** One round of one side: its rate, and the CPU it cost per message in this client and in nats-server. */
interface Round {
  rate: number;
  clientUs: number;
  serverUs: number;
}

// The machine is shared (load averages of 20+ while other suites run), so wall-clock rates swing
// by ±50 % between rounds; CPU per message, in the client and in the server, swings less and
// says where the time goes.
const serverCpuMs = (): number => {
  // utime + stime: fields 14 and 15 of /proc/<pid>/stat (counted after the parenthesised command name), in ticks of 10 ms.
  const fields = readFileSync(`/proc/${server.pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
};
async function timed(run: () => Promise<number>): Promise<Round> {
  const c0 = process.cpuUsage();
  const s0 = serverCpuMs();
  const t0 = performance.now();
  const done = await run();
  const seconds = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  return { rate: done / seconds, clientUs: (c.user + c.system) / done, serverUs: ((serverCpuMs() - s0) * 1000) / done };
}

/** Plain publishes (no msgID, no expectation) of the same size, `inflight` at a time, with `send`. */
async function raw(name: string, round: number, count: number, send: (subject: string) => Promise<unknown>): Promise<Round> {
  await jsm.streams.add({ name: `BENCH_${name}_${round}`, subjects: [`bench.${name}${round}.>`], storage: StorageType.File });
  return timed(async () => {
    let next = 0;
    const worker = async () => {
      while (next < count) {
        const i = next++;
        await send(`bench.${name}${round}.${i % aggregates}`);
      }
    };
    await Promise.all(Array.from({ length: inflight }, worker));
    return count;
  });
}

async function appends(round: number, count: number): Promise<Round> {
  // Same subject shape as the real store (molt.es.<aggregate>.<id>), one stream per round.
  await ensureEventStream(nc, { stream: `BENCH_EVENTS_${round}`, subjects: [`molt${round}.es.>`] });
  const store = createEventStore(nc, { stream: `BENCH_EVENTS_${round}` });
  const perAgg = Math.ceil(count / aggregates);
  // Each writer builds its commit just before appending it, as the services do (a decision's
  // events, then append); the parts that do not change are built before the clock starts, as the
  // baseline's payload is. (Building all 40,000 commits first kept them alive through the round,
  // and the garbage collector's copying of them was billed to append.)
  const parts = Array.from({ length: aggregates }, (_, a) => event(a, 0));
  return timed(async () => {
    let done = 0;
    // One writer per aggregate: it must wait for its own ack to know the next expected sequence.
    await Promise.all(
      Array.from({ length: aggregates }, async (_, a) => {
        const { type, data, metadata } = parts[a]!;
        let seq = 0;
        for (let n = 0; n < perAgg && done < count; n++) {
          done++;
          const commitId = `bench-${a}-${n}`;
          const commit = { commitId, events: [{ id: `${commitId}/0`, type, data, metadata } as MoltEvent] };
          seq = (await store.append(`molt${round}.es.deployment.d-${a}`, commit, { expectedSequence: seq })).seq;
        }
      }),
    );
    return done;
  });
}

const run: Record<Side, (round: number, count: number) => Promise<Round>> = {
  raw: (round, count) => raw("RAW", round, count, (subject) => js.publish(subject, payload)),
  lean: (round, count) => raw("LEAN", round, count, (subject) => lean(subject, payload, headers())),
  append: appends,
};

// Warm every side up (JIT, server file creation), then alternate rounds so that drift in the
// machine's load hits every side alike; the median of each side is reported.
const measured = only ? [only] : sides;
for (const side of measured) await run[side](0, 5000);
const results: Record<Side, Round[]> = { raw: [], lean: [], append: [] };
for (let r = 1; r <= rounds; r++) for (const side of measured) results[side].push(await run[side](r, total));
await nc.close();
await server.stop();

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const summary = (rs: Round[]) => ({
  rate: median(rs.map((r) => r.rate)),
  clientUs: median(rs.map((r) => r.clientUs)),
  serverUs: median(rs.map((r) => r.serverUs)),
  rates: rs.map((r) => r.rate.toFixed(0)).join(", "),
});
type Summary = ReturnType<typeof summary>;
const line = (s: Summary) => `median ${s.rate.toFixed(0)}/s of [${s.rates}]; CPU per message: client ${s.clientUs.toFixed(1)} µs, nats-server ${s.serverUs.toFixed(1)} µs`;
if (only) {
  console.log(`${only}: ${line(summary(results[only]))}`);
  process.exit(0);
}
const [rawS, leanS, appendS] = [summary(results.raw), summary(results.lean), summary(results.append)];
const ratio = appendS.rate / rawS.rate;
// The ratio the rates would have if the machine's cores did nothing else: CPU per message, client and server together.
const cpuTotal = (s: Summary) => s.clientUs + s.serverUs;
const cpuRatio = cpuTotal(rawS) / cpuTotal(appendS);
console.log(`client: noAsyncTraces ${!asyncTraces}; ${total} messages × ${payload.length} B per round, ${inflight} in flight, ${aggregates} aggregates`);
console.log(`raw js.publish:                         ${line(rawS)}`);
console.log(`raw via the store's publisher:          ${line(leanS)}`);
console.log(`append (validate, msgID, expected seq): ${line(appendS)}`);
console.log(`ratio append / raw js.publish: ${ratio.toFixed(2)} (target >= 0.7); by CPU per message (client + server): ${cpuRatio.toFixed(2)}`);
console.log(`ratio append / raw via the store's publisher (what the checks and guarantees cost): ${(appendS.rate / leanS.rate).toFixed(2)}; by CPU: ${(cpuTotal(leanS) / cpuTotal(appendS)).toFixed(2)}`);
const cpu = (s: Summary) => ({ client: Number(s.clientUs.toFixed(1)), server: Number(s.serverUs.toFixed(1)) });
console.log(
  JSON.stringify({
    bench: "event-store",
    noAsyncTraces: !asyncTraces,
    messages: total,
    bytes: payload.length,
    aggregates,
    rounds,
    rawPerSec: Math.round(rawS.rate),
    leanRawPerSec: Math.round(leanS.rate),
    appendPerSec: Math.round(appendS.rate),
    ratio: Number(ratio.toFixed(3)),
    ratioToLeanRaw: Number((appendS.rate / leanS.rate).toFixed(3)),
    cpuUsPerMessage: { raw: cpu(rawS), leanRaw: cpu(leanS), append: cpu(appendS) },
    cpuRatio: Number(cpuRatio.toFixed(3)),
    target: 0.7,
    pass: ratio >= 0.7,
  }),
);
