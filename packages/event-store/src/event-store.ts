import { appendFileSync } from "node:fs";
import { context, propagation, trace } from "@opentelemetry/api";
import { DeliverPolicy, jetstream, jetstreamManager, JetStreamApiError, PubHeaders, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { headers, type NatsConnection } from "@nats-io/transport-node";
import { Commit, describeIssues, STREAM_EVENTS, type MoltEvent } from "@molt/contracts";
import { followStream, type RawMessage, type Subscription } from "./follow.js";
import { jetStreamPublisher } from "./publish.js";
import { CommitTooLargeError, ConcurrencyError, CorruptCommitError, EventStoreError, InvalidCommitError } from "./errors.js";

/**
 * JetStream's "wrong last sequence" error codes: 10071 (with the subject's sequence), and 10164
 * (no sequence), with which nats-server 2.11+ refuses on a replicated stream an expectation on a
 * subject that already has one in flight. 2.9.10 sends only the first.
 */
const WRONG_LAST_SEQUENCE = new Set([10071, 10164]);
/** 10164: the expectation cannot be checked now, a commit on the subject is in flight. */
const IN_FLIGHT = 10164;
/** Tries again after 20, 40 … 1,280 ms (2.5 s in all) before an in-flight refusal counts as a conflict. */
const IN_FLIGHT_RETRIES = 7;
/** Room left under max_payload for the headers (msgID, expectations). */
const HEADER_ROOM = 1024;

export interface StoredCommit {
  subject: string;
  /** Stream sequence of this commit; the next append on its subject expects it. */
  seq: number;
  time: Date;
  commit: Commit;
}

export interface NewCommit {
  commitId: string;
  events: MoltEvent[];
  state?: unknown;
}

export interface AppendResult {
  seq: number;
  /** The commit id was already stored (JetStream msgID dedupe): nothing new was written. */
  duplicate: boolean;
}


/**
 * The W3C `traceparent` of the active span: none without a tracing SDK or outside a span (the
 * OpenTelemetry API's no-op), so nothing is added then.
 */
export function currentTraceparent(): string | undefined {
  const ctx = context.active();
  if (!trace.getSpanContext(ctx)) return undefined;
  const carrier: Record<string, string> = {};
  propagation.inject(ctx, carrier);
  return carrier["traceparent"];
}

/** Events stamped with the active trace (`metadata.traceparent`) where they carry none, so the next process continues the trace. */
function traced<E extends { metadata: { traceparent?: string | undefined } }>(events: readonly E[]): readonly E[] {
  const traceparent = currentTraceparent();
  if (traceparent === undefined) return events;
  return events.map((e) => (e.metadata.traceparent ? e : { ...e, metadata: { ...e.metadata, traceparent } }));
}

export interface EventStore {
  readonly stream: string;
  /**
   * One commit as one message, with `expect.lastSubjectSequence` (0 for a new aggregate) and
   * msgID = commitId. A stale expectation throws ConcurrencyError.
   */
  append(subject: string, commit: NewCommit, opts: { expectedSequence: number }): Promise<AppendResult>;
  /** The last commit on a subject with one direct get (or, `consistent`, from the leader), or null for a new aggregate. */
  readLast(subject: string, opts?: { consistent?: boolean }): Promise<StoredCommit | null>;
  /** Every commit of one aggregate (or a wildcard filter such as a host timeline), in order. */
  read(filter: string, opts?: { fromSeq?: number }): Promise<StoredCommit[]>;
  /**
   * The messages of a filter in stream order, unparsed, from `fromSeq` through `toSeq` (or the
   * filter's last message when the replay starts), with one ordered consumer: `take` returns
   * false to stop early. Resolves with the filter's last sequence when it started (0: nothing matches).
   */
  replay(filter: string, opts: { fromSeq?: number; toSeq?: number }, take: (m: RawMessage) => boolean | void): Promise<number>;
  /** Catch-up then live: every commit from `fromSeq` on (matching `filter`), in stream order. */
  subscribe(opts: {
    filter?: string;
    fromSeq: number;
    handler: (c: StoredCommit) => Promise<void> | void;
    onError?: (err: unknown) => void;
  }): Subscription;
  /**
   * The same, unparsed: for followers that decide themselves what to do with a message no reader
   * can parse (a projection keeps it as a dead letter) instead of failing the subscription.
   * Parse with {@link storedCommitOf}.
   */
  subscribeRaw(opts: {
    filter?: string;
    fromSeq: number;
    handler: (m: RawMessage) => Promise<void> | void;
    onError?: (err: unknown) => void;
  }): Subscription;
  /** The stream's last sequence now (0 when empty). */
  lastSequence(filter?: string): Promise<number>;
}

/** A JetStream message of the event stream as a validated commit (for services with their own durable consumers). */
export function decodeCommit(m: { subject: string; seq: number; data: Uint8Array; info: { timestampNanos: number } }): StoredCommit {
  return { subject: m.subject, seq: m.seq, time: new Date(Math.floor(m.info.timestampNanos / 1e6)), commit: parseCommit(m.subject, m.seq, m.data) };
}

/** A raw stream message as a validated commit; throws CorruptCommitError. */
export function storedCommitOf(m: RawMessage): StoredCommit {
  return { subject: m.subject, seq: m.seq, time: m.time, commit: parseCommit(m.subject, m.seq, m.data) };
}

const sharedDecoder = new TextDecoder();
/** Messages a replay reads by direct gets before it takes an ordered consumer for the rest. */
const DIRECT_READS = 4;
const TYPE = /"type":"([A-Za-z]+)"/g;

/**
 * Whether a raw commit names one of `types`, read from its text without decoding it: a reader
 * that acts on a few event types skips the rest of the stream (most of it: step reports) unread.
 * The event store writes commits with JSON.stringify, so an event's type reads `"type":"X"`; a
 * commit without any such text (written otherwise, or malformed) is left to the full decode to
 * judge. A false positive only costs a full decode.
 */
export function concerns(data: Uint8Array, types: ReadonlySet<string>): boolean {
  let any = false;
  for (const m of sharedDecoder.decode(data).matchAll(TYPE)) {
    any = true;
    if (types.has(m[1]!)) return true;
  }
  return !any;
}

function parseCommit(subject: string, seq: number, data: Uint8Array): Commit {
  let raw: unknown;
  try {
    raw = JSON.parse(sharedDecoder.decode(data));
  } catch (err) {
    throw new CorruptCommitError(subject, seq, (err as Error).message);
  }
  const parsed = Commit.safeParse(raw);
  if (!parsed.success) throw new CorruptCommitError(subject, seq, parsed.error.issues[0]?.message ?? "invalid");
  return parsed.data;
}

export function createEventStore(nc: NatsConnection, opts: { stream?: string; ackLog?: string | undefined } = {}): EventStore {
  const stream = opts.stream ?? STREAM_EVENTS;
  const ackLog = opts.ackLog;
  const js: JetStreamClient = jetstream(nc);
  let jsmPromise: Promise<JetStreamManager> | undefined;
  const jsm = () => (jsmPromise ??= jetstreamManager(nc));
  const parse = parseCommit;
  const publish = jetStreamPublisher(nc);

  const readLast = async (subject: string, opts?: { consistent?: boolean }): Promise<StoredCommit | null> => {
    // Direct gets may be answered by any replica (fast, possibly a little behind); a consistent
    // read goes through the stream leader, for answers that must not rest on a stale view.
    const m = opts?.consistent
      ? await (await jsm()).streams.getMessage(stream, { last_by_subj: subject })
      : await (await jsm()).direct.getMessage(stream, { last_by_subj: subject });
    if (!m) return null;
    return { subject: m.subject, seq: m.seq, time: m.time, commit: parse(m.subject, m.seq, m.data) };
  };

  const lastSequence = async (filter?: string): Promise<number> => {
    if (!filter) return (await (await jsm()).streams.info(stream)).state.last_seq;
    // last_by_subj takes wildcards too, so one call bounds a timeline replay.
    const m = await (await jsm()).direct.getMessage(stream, { last_by_subj: filter });
    return m?.seq ?? 0;
  };

  const replay = async (filter: string, opts: { fromSeq?: number; toSeq?: number }, take: (m: RawMessage) => boolean | void): Promise<number> => {
    // The last sequence matching the filter bounds the replay, so an empty or quiet
    // aggregate never waits for a message that will not come.
    const filterLast = await lastSequence(filter);
    const last = Math.min(filterLast, opts.toSeq ?? Number.MAX_SAFE_INTEGER);
    let from = Math.max(1, opts.fromSeq ?? 1);
    if (last < from) return filterLast;
    // The first few messages by direct gets (next by subject): an aggregate read on from its
    // cached sequence usually has one or two new commits, and an ordered consumer (create, pull,
    // delete) costs far more than that on both sides. A longer range goes on with the consumer,
    // and so does a missing answer (a replica behind the one that gave `last`). A next message
    // past `last` means none is in range: a replica holds a prefix of the stream, so one that has
    // a later message has every earlier one.
    for (let i = 0; i < DIRECT_READS; i++) {
      const m = await (await jsm()).direct.getMessage(stream, { seq: from, next_by_subj: filter });
      if (m && m.seq > last) return filterLast;
      if (!m || m.seq < from) break;
      const more = take({ subject: m.subject, seq: m.seq, data: m.data, time: m.time });
      if (more === false || m.seq >= last) return filterLast;
      from = m.seq + 1;
    }
    const consumer = await js.consumers.get(stream, {
      filter_subjects: filter,
      ...(from > 1 ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from } : {}),
    });
    const messages = await consumer.consume();
    try {
      for await (const m of messages) {
        if (m.seq > last) break;
        const more = take({ subject: m.subject, seq: m.seq, data: m.data, time: new Date(Math.floor(m.info.timestampNanos / 1e6)) });
        if (more === false || m.seq >= last || m.info.pending === 0) break;
      }
    } finally {
      await messages.close();
    }
    return filterLast;
  };

  return {
    stream,
    async append(subject, commit, { expectedSequence }) {
      // The stream is immutable: a commit that readers would refuse, or that the server would
      // refuse for its size, must be stopped here, before it is stored for good.
      const checked = Commit.safeParse({ commitId: commit.commitId, events: traced(commit.events), state: commit.state });
      if (!checked.success) throw new InvalidCommitError(subject, describeIssues(checked.error));
      // Buffer.from takes small bodies from Node's pooled slab: cheaper than a TextEncoder's fresh array.
      const body = Buffer.from(JSON.stringify(checked.data));
      const max = nc.info?.max_payload ?? 1024 * 1024;
      if (body.length > max - HEADER_ROOM) throw new CommitTooLargeError(subject, body.length, max - HEADER_ROOM);
      const h = headers();
      h.set(PubHeaders.MsgIdHdr, commit.commitId);
      h.set(PubHeaders.ExpectedLastSubjectSequenceHdr, String(expectedSequence));
      for (let attempt = 0; ; attempt++) {
        try {
          const ack = await publish(subject, body, h);
          // One O_APPEND write per line: lines from several processes never interleave.
          if (ackLog) appendFileSync(ackLog, `${ack.seq} ${subject} ${commit.commitId}\n`);
          return { seq: ack.seq, duplicate: ack.duplicate };
        } catch (err) {
          if (!(err instanceof JetStreamApiError && WRONG_LAST_SEQUENCE.has(err.code))) throw err;
          // 10164: a commit on this subject is still being replicated, maybe this one's own earlier
          // try (a retry after a timeout across a leader change): undecided yet, so asked again
          // until it has landed or not. Seen in the cluster test under load, where a commit that
          // then landed was answered as a conflict.
          if (err.code === IN_FLIGHT && attempt < IN_FLIGHT_RETRIES) {
            await new Promise((r) => setTimeout(r, 20 * 2 ** attempt));
            continue;
          }
          // JetStream checks the expectation before the msgID, so a retried commit whose first
          // try landed looks like a conflict: if it is the subject's last commit, it is a duplicate.
          // Asked of the leader: a replica behind a restart answers a direct get with an older
          // commit, and a commit that landed came back as a conflict (cluster test, under load).
          const last = await readLast(subject, { consistent: true });
          if (last?.commit.commitId === commit.commitId) return { seq: last.seq, duplicate: true };
          throw new ConcurrencyError(subject, expectedSequence);
        }
      }
    },
    readLast,
    async read(filter, readOpts) {
      const out: StoredCommit[] = [];
      await replay(filter, { ...(readOpts?.fromSeq !== undefined ? { fromSeq: readOpts.fromSeq } : {}) }, (m) => {
        out.push(storedCommitOf(m));
      });
      return out;
    },
    replay,
    subscribe({ filter, fromSeq, handler, onError }) {
      return followStream(nc, {
        stream,
        filter: filter ?? "molt.es.>",
        fromSeq,
        handler: (m) => handler(storedCommitOf(m)),
        ...(onError ? { onError } : {}),
      });
    },
    subscribeRaw({ filter, fromSeq, handler, onError }) {
      return followStream(nc, { stream, filter: filter ?? "molt.es.>", fromSeq, handler, ...(onError ? { onError } : {}) });
    },
    lastSequence,
  };
}

export { EventStoreError };
