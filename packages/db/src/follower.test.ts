import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createCheckpointedFollower, readDeadLetters } from "./follower.js";
import { createTemplate, type DatabaseTemplate } from "./template.js";
import type { Db } from "./db.js";

interface Msg {
  seq: number;
  at: string;
}

let template: DatabaseTemplate;
beforeAll(async () => {
  template = await createTemplate();
});
afterAll(async () => {
  await template?.close();
});

/** A source in the follower's own terms: the messages from a sequence on, in order; a throw ends it. */
function source(messages: Msg[], opened = { count: 0 }) {
  return (fromSeq: number, handler: (m: Msg) => Promise<void>, onError: (err: unknown) => void) => {
    let stopped = false;
    opened.count++;
    void (async () => {
      for (const m of messages.filter((x) => x.seq >= fromSeq)) {
        if (stopped) return;
        await handler(m);
      }
    })().catch((err: unknown) => {
      if (!stopped) onError(err);
    });
    return {
      stop: () => {
        stopped = true;
        return Promise.resolve();
      },
    };
  };
}

const quiet = { info: () => undefined, error: () => undefined };

async function until<T>(what: string, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function follower(db: Db, messages: Msg[], name: string, opened = { count: 0 }) {
  return createCheckpointedFollower<Msg>({
    db,
    logger: quiet,
    name,
    retryMs: 10,
    open: source(messages, opened),
    apply: async (tx, m) => {
      await tx.query("INSERT INTO seen (seq, at) VALUES ($1, $2::timestamptz)", [m.seq, m.at]);
    },
    deadLetter: { after: 3, describe: (m) => ({ subject: `test.${m.seq}`, payload: JSON.stringify(m) }) },
  });
}

describe("checkpointed follower: dead letters", () => {
  it("[views] [security] a message the database refuses (a year-0000 date) is kept as a dead letter after 3 tries and the next ones are applied: the follower (projector, audit) never stops on it", async () => {
    const db = await template.fresh();
    await db.exec("CREATE TABLE seen (seq int PRIMARY KEY, at timestamptz NOT NULL)");
    const messages = [
      { seq: 1, at: "2026-01-01T00:00:00Z" },
      { seq: 2, at: "0000-01-01T00:00:00Z" },
      { seq: 3, at: "2026-01-02T00:00:00Z" },
    ];
    const f = follower(db, messages, "poison");
    await f.start();
    const status = await until("the follower to pass the poison", async () => {
      const s = await f.status();
      return s.checkpoint === 3 ? s : undefined;
    });
    await f.stop();
    expect(status).toMatchObject({ checkpoint: 3, deadLetters: 1 });
    expect((await db.query("SELECT seq FROM seen ORDER BY seq")).rows).toEqual([{ seq: 1 }, { seq: 3 }]);
    const [dead] = await readDeadLetters(db, "poison");
    expect(dead).toMatchObject({ seq: 2, subject: "test.2", attempts: 3, payload: JSON.stringify(messages[1]) });
    expect(dead?.error).toMatch(/out of range|invalid|0000/i);
  });

  it("[views] a failure that is not the message's (a missing table) is waited out, never dead-lettered", async () => {
    const db = await template.fresh();
    const opened = { count: 0 };
    const f = follower(db, [{ seq: 1, at: "2026-01-01T00:00:00Z" }], "env", opened);
    await f.start();
    // Twice as many tries as `after`: a poison would have been buried by now.
    await until("6 tries", () => Promise.resolve(opened.count >= 6 ? true : undefined));
    expect(await f.status()).toMatchObject({ checkpoint: 0, deadLetters: 0 });
    await db.exec("CREATE TABLE seen (seq int PRIMARY KEY, at timestamptz NOT NULL)");
    await until("the message to be applied", async () => ((await f.status()).checkpoint === 1 ? true : undefined));
    await f.stop();
    expect((await f.status()).error).toBeNull();
  });
});

describe("checkpointed follower: batches", () => {
  it("[scale-faults] a burst of messages is applied in a few transactions, each message once, in order, with the checkpoint at the last", async () => {
    const base = await template.fresh();
    await base.exec("CREATE TABLE seen (seq int PRIMARY KEY, at timestamptz NOT NULL)");
    let transactions = 0;
    const db: Db = { ...base, transaction: (fn) => (transactions++, base.transaction(fn)) };
    const messages = Array.from({ length: 500 }, (_, i) => ({ seq: i + 1, at: "2026-01-01T00:00:00Z" }));
    const applied: number[] = [];
    const f = createCheckpointedFollower<Msg>({
      db,
      logger: quiet,
      name: "burst",
      retryMs: 10,
      open: source(messages),
      apply: async (tx, m) => {
        await tx.query("INSERT INTO seen (seq, at) VALUES ($1, $2::timestamptz)", [m.seq, m.at]);
      },
      onApplied: (m) => applied.push(m.seq),
    });
    await f.start();
    await until("every message", async () => ((await f.status()).checkpoint === 500 ? true : undefined));
    await f.stop();
    expect(applied).toEqual(messages.map((m) => m.seq));
    expect((await base.query<{ n: number }>("SELECT count(*)::int AS n FROM seen")).rows[0]?.n).toBe(500);
    // One transaction per message before; a burst now shares them (the bound leaves room for timing).
    expect(transactions).toBeLessThanOrEqual(50);
  });

  it("[scale-faults] a batch that fails on one poison message is retried message by message: the poison is dead-lettered, the rest applied once", async () => {
    const db = await template.fresh();
    await db.exec("CREATE TABLE seen (seq int PRIMARY KEY, at timestamptz NOT NULL)");
    const messages = Array.from({ length: 300 }, (_, i) => ({ seq: i + 1, at: i === 149 ? "0000-01-01T00:00:00Z" : "2026-01-01T00:00:00Z" }));
    const f = follower(db, messages, "poison-in-batch");
    await f.start();
    const status = await until("the follower to pass the poison", async () => {
      const s = await f.status();
      return s.checkpoint === 300 ? s : undefined;
    });
    await f.stop();
    expect(status).toMatchObject({ checkpoint: 300, deadLetters: 1 });
    expect((await db.query<{ n: number }>("SELECT count(*)::int AS n FROM seen")).rows[0]?.n).toBe(299);
    expect((await readDeadLetters(db, "poison-in-batch")).map((d) => d.seq)).toEqual([150]);
  });
});

describe("checkpointed follower: linger", () => {
  it("[scale-faults] messages trickling in a few ms apart share a transaction when the run lingers for them", async () => {
    const base = await template.fresh();
    await base.exec("CREATE TABLE seen (seq int PRIMARY KEY, at timestamptz NOT NULL)");
    let transactions = 0;
    const db: Db = { ...base, transaction: (fn) => (transactions++, base.transaction(fn)) };
    const trickle = (fromSeq: number, handler: (m: Msg) => Promise<void>) => {
      let stopped = false;
      void (async () => {
        for (let seq = fromSeq; seq <= 40 && !stopped; seq++) {
          await handler({ seq, at: "2026-01-01T00:00:00Z" });
          await new Promise((r) => setTimeout(r, 2));
        }
      })();
      return { stop: () => ((stopped = true), Promise.resolve()) };
    };
    const f = createCheckpointedFollower<Msg>({
      db,
      logger: quiet,
      name: "trickle",
      lingerMs: 200,
      open: trickle,
      apply: async (tx, m) => {
        await tx.query("INSERT INTO seen (seq, at) VALUES ($1, $2::timestamptz)", [m.seq, m.at]);
      },
    });
    await f.start();
    await until("every message", async () => ((await f.status()).checkpoint === 40 ? true : undefined));
    await f.stop();
    expect((await base.query<{ n: number }>("SELECT count(*)::int AS n FROM seen")).rows[0]?.n).toBe(40);
    // 40 messages ~2 ms apart (~80 ms or more) against a 200 ms linger: a few runs, not 40 transactions.
    expect(transactions).toBeLessThanOrEqual(10);
  });
});
