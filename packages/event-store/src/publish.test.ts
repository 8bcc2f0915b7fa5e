import { JetStreamApiError, jetstreamManager, StorageType } from "@nats-io/jetstream";
import { ClosedConnectionError, connect, headers, NoRespondersError, PermissionViolationError, RequestError, TimeoutError, type NatsConnection } from "@nats-io/transport-node";
import { readdirSync, readFileSync } from "node:fs";
import { startNatsServer, waitFor, type NatsServer } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createEventStore, ensureEventStream, jetStreamPublisher } from "./index.js";

let server: NatsServer;
let nc: NatsConnection;
let n = 0;
const uniq = () => `p${++n}${Date.now().toString(36)}`;
const body = new TextEncoder().encode("{}");
const msg = (id?: string, expected?: number) => {
  const h = headers();
  if (id !== undefined) h.set("Nats-Msg-Id", id);
  if (expected !== undefined) h.set("Nats-Expected-Last-Subject-Sequence", String(expected));
  return h;
};
/** A stream of its own on `<name>.>`. */
const stream = async (c: NatsConnection) => {
  const name = uniq();
  await (await jetstreamManager(c)).streams.add({ name, subjects: [`${name}.>`], storage: StorageType.File });
  return name;
};

beforeAll(async () => {
  server = await startNatsServer();
  nc = await connect({ servers: server.url, noAsyncTraces: true });
});
afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

/**
 * SIGSTOP, then wait until every thread of the server is stopped: kill() returns once the signal is
 * queued, and a thread already running can still answer a publish sent right after (it did once on
 * Node 22: the "frozen" publish was acked).
 */
async function freeze(pid: number): Promise<void> {
  process.kill(pid, "SIGSTOP");
  const stopped = () => readdirSync(`/proc/${pid}/task`).every((t) => /^\d+ \(.*\) [Tt] /.test(readFileSync(`/proc/${pid}/task/${t}/stat`, "utf8")));
  await waitFor(`nats-server ${pid} stopped`, () => (stopped() ? true : undefined), { timeoutMs: 5_000, intervalMs: 5 });
}

describe("nats.js requests", () => {
  it("[scale-faults] a request that is answered builds no error (nats-core 3.4.0 is patched: patches/)", async () => {
    // nats-core's RequestOne ended every request, answered or not, with cancel(), which rejects
    // the settled promise with a new RequestError: a stack captured per request, ~4 % of the
    // allocator's and feedback's CPU in bench/rollout. The constructor sets `name`, so a setter on
    // the prototype counts the errors built.
    let built = 0;
    Object.defineProperty(RequestError.prototype, "name", { configurable: true, get: () => "RequestError", set: () => void built++ });
    try {
      const sub = nc.subscribe(`echo.${uniq()}`, { callback: (_e, m) => void m.respond(m.data) });
      for (let i = 0; i < 50; i++) expect((await nc.request(sub.getSubject(), "ping", { timeout: 5_000 })).string()).toBe("ping");
      sub.unsubscribe();
      expect(built).toBe(0);
      // The counter counts: a request nobody answers still fails with its error.
      await expect(nc.request(`nobody.${uniq()}`, "ping", { timeout: 5_000 })).rejects.toThrow();
      expect(built).toBeGreaterThan(0);
    } finally {
      delete (RequestError.prototype as { name?: string }).name;
    }
  });
});

describe("jetStreamPublisher: js.publish's answers over one reply subscription", () => {
  it("[scale-faults] acks with the sequence; a msgID stored already is answered duplicate; 200 in flight each get their own ack", async () => {
    const s = await stream(nc);
    const publish = jetStreamPublisher(nc);
    const first = await publish(`${s}.a`, body, msg("one"));
    expect(first).toEqual({ stream: s, seq: 1, duplicate: false });
    expect(await publish(`${s}.a`, body, msg("one"))).toEqual({ stream: s, seq: 1, duplicate: true });
    const acks = await Promise.all(Array.from({ length: 200 }, (_, i) => publish(`${s}.b${i}`, body, msg(`m${i}`))));
    expect(acks.map((a) => a.seq).sort((x, y) => x - y)).toEqual(Array.from({ length: 200 }, (_, i) => i + 2));
  });

  it("[scale-faults] a stale expectation is the server's JetStreamApiError 10071", async () => {
    const s = await stream(nc);
    const publish = jetStreamPublisher(nc);
    await publish(`${s}.a`, body, msg("x", 0));
    const err = await publish(`${s}.a`, body, msg("y", 0)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(JetStreamApiError);
    expect((err as JetStreamApiError).code).toBe(10071);
  });

  it("[scale-faults] no stream on the subject: NoRespondersError at once", async () => {
    const err = await jetStreamPublisher(nc, { timeoutMs: 10_000 })(`nostream.${uniq()}`, body, msg()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NoRespondersError);
  });

  it("[scale-faults] replies come back under the connection's inbox prefix", async () => {
    const c = await connect({ servers: server.url, inboxPrefix: "_INBOX_custom" });
    try {
      const s = await stream(c);
      const seen = c.subscribe(`${s}.>`, { max: 1 });
      await jetStreamPublisher(c)(`${s}.a`, body, msg());
      for await (const m of seen) expect(m.reply).toMatch(/^_INBOX_custom\./);
    } finally {
      await c.close();
    }
  });

  it("[scale-faults] a frozen server: TimeoutError after timeoutMs; a closed connection rejects what is pending; after a restart the next publish is acked", async () => {
    const own = await startNatsServer();
    try {
      const c = await connect({ servers: own.url, maxReconnectAttempts: -1, reconnectTimeWait: 50 });
      const s = await stream(c);
      const publish = jetStreamPublisher(c, { timeoutMs: 300 });
      expect((await publish(`${s}.a`, body, msg("before"))).seq).toBe(1);

      await freeze(own.pid!);
      try {
        const t0 = Date.now();
        await expect(publish(`${s}.a`, body, msg("frozen"))).rejects.toBeInstanceOf(TimeoutError);
        expect(Date.now() - t0).toBeLessThan(3_000);
      } finally {
        process.kill(own.pid!, "SIGCONT");
      }

      // The reply subscription is set up again after a reconnect.
      await own.restart();
      await expect
        .poll(async () => (await publish(`${s}.a`, body, msg("after")).catch(() => null))?.duplicate === false, { timeout: 15_000, interval: 200 })
        .toBe(true);

      const slow = jetStreamPublisher(c, { timeoutMs: 60_000 });
      await freeze(own.pid!);
      try {
        const pendingPublish = slow(`${s}.a`, body, msg("closing")).catch((e: unknown) => e);
        await c.close();
        expect(await pendingPublish).toBeInstanceOf(ClosedConnectionError);
      } finally {
        process.kill(own.pid!, "SIGCONT");
      }
    } finally {
      await own.stop();
    }
  }, 60_000);

  it("[scale-faults] a publish the server refuses (no permission) fails with the permission error, not a timeout", async () => {
    const secure = await startNatsServer({ secure: true });
    try {
      const admin = await secure.bus.connect("admin");
      await ensureEventStream(admin);
      await admin.close();
      // The projector reads the event store and may not write to it.
      const projector = await secure.bus.connect("projector");
      try {
        const t0 = Date.now();
        const refused = await jetStreamPublisher(projector, { timeoutMs: 20_000 })(`molt.es.deployment.${uniq()}`, body, msg("c", 0)).catch((e: unknown) => e);
        expect(refused).toBeInstanceOf(PermissionViolationError);
        // The store's append surfaces the same refusal.
        const event = { id: "e", type: "DeploymentResumed", data: { deploymentId: "d1" }, metadata: { occurredAt: new Date().toISOString(), actor: "test", correlationId: "c" } } as const;
        const viaStore = await createEventStore(projector)
          .append(`molt.es.deployment.${uniq()}`, { commitId: "c2", events: [event] }, { expectedSequence: 0 })
          .catch((e: unknown) => e);
        expect(viaStore).toBeInstanceOf(PermissionViolationError);
        expect(Date.now() - t0).toBeLessThan(10_000);
      } finally {
        await projector.close();
      }
    } finally {
      await secure.stop();
    }
  }, 60_000);
});
