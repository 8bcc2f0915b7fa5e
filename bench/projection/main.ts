/**
 * The projector against raw reads of the same stream, measured in one run on one server:
 * 1. throughput: project N events (a filled MOLT_EVENTS: rollouts of simulated hosts, every
 *    commit a real one) into a fresh in-memory PGlite, vs a raw ordered-consumer read of the
 *    same stream (the subscription the projector itself uses, doing nothing with a message);
 *    target ratio ≥ 0.2.
 * 2. lag: a live rollout of H hosts appended at the pace of a real one (each host's commits in
 *    order, hosts overlapping); for every commit, the time from its append's ack to the runner
 *    telling it is in the views (onApplied, the hook SSE uses); p50/p99, target p99 ≤ 1 s.
 * 3. a host timeline of T events read through the API (GET /v1/hosts/:id/timeline) vs a raw
 *    ordered read of that host's filter (`molt.es.host.<host>.>`); target ≤ 3×.
 * Usage: pnpm bench:projection [--events 200000] [--hosts 2000] [--timeline 10000] [--batch N (default: the app's)] [--pglite thread|main]
 *   [--database-url postgres://…]: the views in a fresh database on that PostgreSQL (created and
 *   dropped by the bench) instead of an in-memory PGlite.
 */
import { parseArgs } from "node:util";
import { connect } from "@nats-io/transport-node";
import { subjects, type MoltEvent } from "@molt/contracts";
import { createPostgresTemplate, openDatabase, type Db, type Queryable } from "@molt/db";
import { createEventStore, ensureEventStream } from "@molt/event-store";
import { buildApp } from "@molt/projector/app";
import { createLogger, parseTokens } from "@molt/runtime";
import { startNatsServer } from "@molt/testkit";

const { values } = parseArgs({
  options: {
    events: { type: "string", default: "200000" },
    hosts: { type: "string", default: "2000" },
    timeline: { type: "string", default: "10000" },
    "lag-rate": { type: "string", default: "200" },
    batch: { type: "string" },
    "database-url": { type: "string" },
    /** PGlite in a worker thread, as the projector's composition root opens it (`thread`), or in the bench's own thread (`main`). */
    pglite: { type: "string", default: "thread" },
    /** Time every statement of the throughput phase and print where the time went. */
    "profile-sql": { type: "boolean", default: false },
  },
});
const BATCH = values.batch === undefined ? undefined : Number(values.batch);
const DATABASE_URL = values["database-url"];
const EVENTS = Number(values.events);
const LAG_HOSTS = Number(values.hosts);
const TIMELINE = Number(values.timeline);
/** Commits per second the live rollout appends (the rollout bench closes ~18 hosts/s, 12 slot commits each: ~200/s). */
const LAG_RATE = Number(values["lag-rate"]);

const logger = createLogger("bench-projection");
logger.level = "warn";
const TOKEN = "bench-token-0123456789";
const tokens = parseTokens(JSON.stringify({ [TOKEN]: { actor: "bench", role: "viewer" } }), "bench");
const server = await startNatsServer();
const nc = await connect({ servers: server.url, noAsyncTraces: true });
await ensureEventStream(nc);
const store = createEventStore(nc);

const PKG = { platform: "linux-amd64", sha256: "a".repeat(64), size: 1024, url: "https://repo.example.com/p.tar.gz" };
const STEPS = ["begin", "backup", "download", "override", "stop", "start", "verify", "end-action"] as const;
const T0 = Date.parse("2026-12-06T00:00:00.000Z");
let clock = 0;
const now = () => new Date(T0 + ++clock).toISOString();
const env = (id: string, type: MoltEvent["type"], data: unknown, actor = "allocator") =>
  ({ id, type, data, metadata: { occurredAt: now(), actor, correlationId: "bench" } }) as MoltEvent;

/** One host's upgrade as its slot commits: allocated, dispatched, accepted, each step's start+end, the verdict (12 commits, 20 events). */
function hostCommits(deploymentId: string, hostId: string, n: number): MoltEvent[][] {
  const taskId = `t-${deploymentId}-${n}`;
  const at = now;
  const out: MoltEvent[][] = [
    [env(`${taskId}/a`, "TaskAllocated", { taskId, deploymentId, hostId, component: "metrics-agent", version: "2.0.0", fromVersion: "1.0.0", attempt: 1, deadline: "2027-01-01T00:00:00.000Z", package: PKG })],
    [env(`${taskId}/d`, "TaskDispatched", { taskId, revision: 1 })],
    [env(`${taskId}/acc`, "TaskAccepted", { taskId, seq: 1, at: at() }, `host:${hostId}`)],
  ];
  let seq = 2;
  for (const step of STEPS)
    out.push([
      env(`${taskId}/${step}/s`, "TaskStepStarted", { taskId, seq: seq++, step, at: at() }, `host:${hostId}`),
      env(`${taskId}/${step}/e`, "TaskStepSucceeded", { taskId, seq: seq++, step, at: at(), durationMs: 5 }, `host:${hostId}`),
    ]);
  out.push([env(`${taskId}/ok`, "TaskSucceeded", { taskId, seq: seq++, at: at(), version: "2.0.0" }, `host:${hostId}`)]);
  return out;
}

/** A deployment's own commits: requested, planned, one batch started (the hosts' commits follow). */
async function startDeployment(id: string, hosts: string[]): Promise<void> {
  const subject = subjects.deployment(id);
  let last = 0;
  const put = async (...events: MoltEvent[]) => {
    last = (await store.append(subject, { commitId: `${id}#${last + 1}`, events }, { expectedSequence: last })).seq;
  };
  await put(env(`${id}/r`, "DeploymentRequested", { deploymentId: id, component: "metrics-agent", version: "2.0.0", hosts: [], selector: {}, idempotencyKey: null, requestHash: "b".repeat(64), taskTimeoutMs: 60_000 }, "bench"));
  await put(env(`${id}/p`, "DeploymentPlanned", { deploymentId: id, planId: "p1", parts: 0, packages: { [PKG.platform]: PKG }, batches: [{ index: 0, kind: "batch", size: hosts.length }], skipped: 0 }));
  await put(env(`${id}/b`, "BatchStarted", { deploymentId: id, index: 0 }));
}

/** Appends each host's commits in order, `parallel` hosts at a time; `onAppended` gets each commit's seq and ack time. */
async function appendHosts(deploymentId: string, hosts: string[], opts: { parallel: number; perSecond?: number; onAppended?: (seq: number, at: number) => void }): Promise<number> {
  let events = 0;
  let next = 0;
  const started = performance.now();
  let appended = 0;
  const worker = async () => {
    while (next < hosts.length) {
      const i = next++;
      const hostId = hosts[i]!;
      const subject = subjects.slot(hostId, "metrics-agent");
      let last = (await store.readLast(subject))?.seq ?? 0;
      for (const [k, c] of hostCommits(deploymentId, hostId, i).entries()) {
        if (opts.perSecond) {
          // Paced like a live rollout: the nth commit of the run is not appended before n / rate seconds.
          const due = started + (appended++ / opts.perSecond) * 1000;
          const wait = due - performance.now();
          if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        }
        last = (await store.append(subject, { commitId: `${deploymentId}-${i}#${k}`, events: c }, { expectedSequence: last })).seq;
        opts.onAppended?.(last, performance.now());
        events += c.length;
      }
    }
  };
  await Promise.all(Array.from({ length: opts.parallel }, worker));
  return events;
}

const ids = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${String(i + 1).padStart(5, "0")}`);

// ---------- 1. throughput ----------
const fillHosts = ids("fill-", Math.ceil(EVENTS / 20));
await startDeployment("d-fill", fillHosts);
const t0 = performance.now();
const filled = (await appendHosts("d-fill", fillHosts, { parallel: 200 })) + 3;
const last = await store.lastSequence();
console.log(`filled: ${filled} events in ${last} commits (${((performance.now() - t0) / 1000).toFixed(1)} s)`);

async function rawRead(filter: string | undefined, until: number): Promise<number> {
  const start = performance.now();
  await new Promise<void>((resolve, reject) => {
    const sub = store.subscribeRaw({
      ...(filter ? { filter } : {}),
      fromSeq: 1,
      handler: (m) => {
        if (m.seq >= until) void sub.stop().then(resolve);
      },
      onError: reject,
    });
  });
  return (performance.now() - start) / 1000;
}

const rawSeconds = await rawRead(undefined, last);
const rawRate = filled / rawSeconds;
console.log(`raw ordered read: ${last} commits, ${filled} events in ${rawSeconds.toFixed(2)} s = ${rawRate.toFixed(0)} events/s`);

const pgTemplate = DATABASE_URL ? await createPostgresTemplate(DATABASE_URL) : undefined;
if (values.pglite !== "thread" && values.pglite !== "main") throw new Error(`--pglite thread|main, not ${values.pglite}`);
const opened = pgTemplate ? await pgTemplate.fresh() : await openDatabase({ thread: values.pglite === "thread" });
/** Milliseconds and calls per statement (its first words), while `timing` is on. */
const sqlTime = new Map<string, { ms: number; calls: number }>();
let timing = values["profile-sql"];
function timed(q: Queryable): Queryable {
  const label = (sql: string) => sql.replace(/\s+/g, " ").trim().slice(0, 60);
  return {
    async query<T>(sql: string, params?: readonly unknown[]) {
      const start = performance.now();
      try {
        return await q.query<T>(sql, params);
      } finally {
        if (timing) {
          const t = sqlTime.get(label(sql)) ?? { ms: 0, calls: 0 };
          t.ms += performance.now() - start;
          t.calls++;
          sqlTime.set(label(sql), t);
        }
      }
    },
    exec: (sql) => q.exec(sql),
  };
}
const db: Db = values["profile-sql"]
  ? {
      ...opened,
      ...timed(opened),
      transaction: (fn) =>
        opened.transaction(async (tx) => {
          const start = performance.now();
          try {
            return await fn(timed(tx));
          } finally {
            if (timing) {
              const t = sqlTime.get("(transaction, whole)") ?? { ms: 0, calls: 0 };
              t.ms += performance.now() - start;
              t.calls++;
              sqlTime.set("(transaction, whole)", t);
            }
          }
        }),
    }
  : opened;
const projStart = performance.now();
const projCpu = process.cpuUsage();
const app = await buildApp({ db, store, logger, tokens, ...(BATCH === undefined ? {} : { batchSize: BATCH }) });
const applied = await new Promise<number>((resolve) => {
  const check = setInterval(() => {
    void (async () => {
      const s = (await app.inject({ url: "/v1/projector/status", headers: { authorization: `Bearer ${TOKEN}` } })).json<{ checkpoint: number }>();
      if (s.checkpoint >= last) {
        clearInterval(check);
        resolve(performance.now());
      }
    })();
  }, 100);
});
const projSeconds = (applied - projStart) / 1000;
// The process's CPU time while projecting (all its threads): unlike events/s, barely moved by other load on the machine.
const cpu = process.cpuUsage(projCpu);
const projCpuSeconds = (cpu.user + cpu.system) / 1e6;
const projRate = filled / projSeconds;
const ratio = projRate / rawRate;
console.log(
  `projector: ${filled} events in ${projSeconds.toFixed(1)} s = ${projRate.toFixed(0)} events/s, ${projCpuSeconds.toFixed(1)} CPU-s (${((projCpuSeconds / filled) * 1e6).toFixed(0)} µs per event); ratio ${ratio.toFixed(3)} (target >= 0.2)`,
);
if (timing) {
  timing = false;
  console.log("statements during the throughput phase (ms, calls, ms per call):");
  for (const [sql, t] of [...sqlTime].sort((a, b) => b[1].ms - a[1].ms).slice(0, 12))
    console.log(`  ${t.ms.toFixed(0).padStart(7)} ms ${String(t.calls).padStart(6)} × ${(t.ms / t.calls).toFixed(2).padStart(7)}  ${sql}`);
}

// ---------- 2. append → visible lag during a live rollout ----------
const lagHosts = ids("live-", LAG_HOSTS);
await startDeployment("d-live", lagHosts);
const appendedAt = new Map<number, number>();
const lags: number[] = [];
// The runner's onApplied is not exposed by the app; the status route's checkpoint is polled
// every 10 ms instead, so a lag is measured to within 10 ms (an upper bound).
let polling = true;
const poller = (async () => {
  while (polling) {
    const s = (await app.inject({ url: "/v1/projector/status", headers: { authorization: `Bearer ${TOKEN}` } })).json<{ checkpoint: number }>();
    const t = performance.now();
    for (const [seq, at] of appendedAt)
      if (seq <= s.checkpoint) {
        lags.push(t - at);
        appendedAt.delete(seq);
      }
    await new Promise((r) => setTimeout(r, 10));
  }
})();
const liveStart = performance.now();
const liveEvents = await appendHosts("d-live", lagHosts, { parallel: 100, perSecond: LAG_RATE, onAppended: (seq, at) => appendedAt.set(seq, at) });
const liveSeconds = (performance.now() - liveStart) / 1000;
while (appendedAt.size > 0) await new Promise((r) => setTimeout(r, 20));
polling = false;
await poller;
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))]!;
const p50 = pct(lags, 50);
const p99 = pct(lags, 99);
console.log(`live rollout: ${LAG_HOSTS} hosts, ${liveEvents} events in ${lags.length} commits over ${liveSeconds.toFixed(1)} s; append→visible p50 ${p50.toFixed(0)} ms, p99 ${p99.toFixed(0)} ms (target p99 <= 1000)`);

// ---------- 3. a host timeline of T events: API vs raw ordered read ----------
const timelineHost = "timeline-host.example.com";
const rounds = Math.ceil(TIMELINE / 20);
for (let i = 0; i < rounds; i++) await appendHosts(`d-tl${i}`, [timelineHost], { parallel: 1 });
const tlLast = await store.lastSequence();
await new Promise<void>((resolve) => {
  const check = setInterval(() => {
    void (async () => {
      const s = (await app.inject({ url: "/v1/projector/status", headers: { authorization: `Bearer ${TOKEN}` } })).json<{ checkpoint: number }>();
      if (s.checkpoint >= tlLast) {
        clearInterval(check);
        resolve();
      }
    })();
  }, 50);
});
// The baseline reads the same messages the same way the API does: the host's whole timeline is
// one filter, `molt.es.host.<host>.>` (DESIGN). The one slot subject they all sit on here is read
// too and printed, for comparison with the figures before the timeline was read from the stream.
const best = async (f: () => Promise<number>) => Math.min(await f(), await f(), await f());
const rawTl = await best(() => rawRead(subjects.hostTimeline(timelineHost), tlLast));
const rawSlot = await best(() => rawRead(subjects.slot(timelineHost, "metrics-agent"), tlLast));
const apiTl = await best(async () => {
  const s = performance.now();
  const r = await app.inject({ url: `/v1/hosts/${timelineHost}/timeline?limit=10000`, headers: { authorization: `Bearer ${TOKEN}` } });
  const n = r.json<{ events: unknown[] }>().events.length;
  if (n < Math.min(TIMELINE, 10_000)) throw new Error(`the timeline had ${n} events`);
  return (performance.now() - s) / 1000;
});
const tlRatio = apiTl / rawTl;
console.log(
  `host timeline of ${rounds * 20} events: API ${(apiTl * 1000).toFixed(0)} ms vs raw ordered read of the host's filter ${(rawTl * 1000).toFixed(0)} ms = ${tlRatio.toFixed(2)}× (target <= 3); of its one slot subject ${(rawSlot * 1000).toFixed(0)} ms (${(apiTl / rawSlot).toFixed(2)}×)`,
);

await app.close();
await db.close();
await pgTemplate?.close();
await nc.close();
await server.stop();
console.log(
  JSON.stringify({
    bench: "projection",
    database: DATABASE_URL ? db.kind : `pglite (${values.pglite === "thread" ? "worker" : "main"} thread)`,
    batch: BATCH ?? "default",
    events: filled,
    commits: last,
    rawEventsPerSec: Math.round(rawRate),
    projectorEventsPerSec: Math.round(projRate),
    projectorCpuSeconds: Number(projCpuSeconds.toFixed(1)),
    ratio: Number(ratio.toFixed(3)),
    lag: { hosts: LAG_HOSTS, commitsPerSec: LAG_RATE, p50Ms: Math.round(p50), p99Ms: Math.round(p99) },
    timeline: { events: rounds * 20, apiMs: Math.round(apiTl * 1000), rawMs: Math.round(rawTl * 1000), ratio: Number(tlRatio.toFixed(2)), rawSlotMs: Math.round(rawSlot * 1000) },
    pass: { ratio: ratio >= 0.2, lagP99: p99 <= 1000, timeline: tlRatio <= 3 },
  }),
);
