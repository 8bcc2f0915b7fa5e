import { parseEventSubject, subjects, type TimelineEvent } from "@molt/contracts";
import type { EventStore, RawMessage } from "@molt/event-store";
import type { Logger } from "@molt/runtime";

/**
 * A host's timeline is not a table: it is replayed from the event store, where a host's whole
 * story is one filter (`molt.es.host.<host>.>`, DESIGN "Events"), with one ordered consumer per
 * page. The projector only keeps the index of the host's tasks (the tasks view); a table of every
 * event was half of each projection run's database time (bench/projection) for rows the stream
 * already holds in order.
 */

/** Applied by the projector's start: the table the timeline was until 2026-12-06 goes (append-only). */
export const RETIRED_TIMELINE_MIGRATIONS = ["DROP TABLE IF EXISTS host_timeline"];

/** What the timeline reads of each stored event: the envelope, and of the data the fields it shows. */
interface TimelineSource {
  id: string;
  type: string;
  data: { taskId?: string; step?: string; at?: string; component?: string } & Record<string, unknown>;
  metadata: { occurredAt: string };
}

/** The timeline entries of one stored commit on a host's subjects, in the commit's order. */
export function timelineEntries(c: { seq: number; subject: string; commit: { events: readonly TimelineSource[] } }): TimelineEvent[] {
  const slotComponent = componentOfSubject(c.subject);
  return c.commit.events.map(({ id, type, data, metadata }) => ({
    streamSeq: c.seq,
    eventId: id,
    type,
    // When it happened: the host's own time for what the host reported (the events with an `at`), else when it was decided.
    occurredAt: canonicalTime(data.at ?? metadata.occurredAt),
    taskId: data.taskId ?? null,
    component: slotComponent ?? data.component ?? null,
    step: data.step ?? null,
    data,
  }));
}

/** A page reads a few subjects many times over: each is taken apart once. */
let lastSubject: { subject: string; component: string | null } = { subject: "", component: null };
function componentOfSubject(subject: string): string | null {
  if (lastSubject.subject !== subject) {
    const parsed = parseEventSubject(subject);
    lastSubject = { subject, component: parsed?.kind === "slot" ? parsed.component : null };
  }
  return lastSubject.component;
}

/** UTC, to the millisecond: how the contracts' writers write times, so most need no rewriting. */
const CANONICAL = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
/** A time as `toISOString` writes it (the timeline's one format, whatever precision was stored). */
function canonicalTime(at: string): string {
  return CANONICAL.test(at) ? at : new Date(at).toISOString();
}

const decoder = new TextDecoder();
const isText = (v: unknown): v is string => typeof v === "string";
const isTime = (v: unknown): v is string => isText(v) && (CANONICAL.test(v) || !Number.isNaN(Date.parse(v)));

/**
 * A raw message as the timeline reads it; throws when it is not such a commit. Only what the
 * timeline reads is checked (each envelope, and of its data `taskId`, `step`, `at` and
 * `component` where present); the data is passed on as stored. Every commit was checked whole
 * against the contracts when it was appended, and the projector checks it again (one it cannot
 * read is dead-lettered): checking each of a 10,000-event page's commits whole with zod again
 * took a third of the page's time (bench/projection: the API against a raw read of the subject).
 */
function readCommit(m: RawMessage): { seq: number; subject: string; commit: { events: TimelineSource[] } } {
  const commit: unknown = JSON.parse(decoder.decode(m.data));
  const events = (commit as { events?: unknown } | null)?.events;
  if (!Array.isArray(events) || events.length === 0) throw new Error(`message ${m.seq} on ${m.subject} is not a commit: no events`);
  for (const e of events as Array<Partial<Record<keyof TimelineSource, unknown>>>) {
    const data = e.data as Record<string, unknown> | null | undefined;
    const ok =
      isText(e.id) &&
      isText(e.type) &&
      typeof data === "object" &&
      data !== null &&
      isTime((e.metadata as { occurredAt?: unknown } | null | undefined)?.occurredAt) &&
      (data["taskId"] === undefined || isText(data["taskId"])) &&
      (data["step"] === undefined || isText(data["step"])) &&
      (data["component"] === undefined || isText(data["component"])) &&
      (data["at"] === undefined || isTime(data["at"]));
    if (!ok) throw new Error(`message ${m.seq} on ${m.subject} is not a commit: an event is malformed`);
  }
  return { seq: m.seq, subject: m.subject, commit: { events: events as TimelineSource[] } };
}

export interface TimelineQuery {
  /** Only commits after this stream sequence. */
  after: number;
  /** Only commits before this stream sequence (newest-first pages pass the last page's `next`). */
  before?: number | undefined;
  /** The timeline as the event store held it then: commits stored at or before this time. */
  asOf?: Date | undefined;
  /** Events per page at most; a page holds whole commits (one commit larger than this is sent whole). */
  limit: number;
  order: "oldest" | "newest";
}

export interface TimelinePage {
  /** Whole commits, in the page's order (each commit's events newest first too when the page is). */
  commits: Array<{ streamSeq: number; events: TimelineEvent[] }>;
  /** Pass as `after` (oldest first) or `before` (newest first) for the next page; null on the last. */
  next: number | null;
  /** Whether the host has any event at all (else the route answers 404). */
  known: boolean;
}

/**
 * One page of a host's timeline from the event store. A page ends at a commit's edge, so a
 * cursor never splits a commit. Newest first reads the range oldest first and keeps the last
 * `limit` events' commits (one pass, memory bounded by the page). A commit no reader can parse is
 * left out and reported (the projection dead-letters it the same way).
 */
export async function readTimeline(store: EventStore, hostId: string, q: TimelineQuery, onUnreadable: (seq: number, err: unknown) => void): Promise<TimelinePage> {
  const kept: TimelinePage["commits"] = [];
  let count = 0;
  let more = false;
  const asOf = q.asOf?.getTime();
  const take = (m: RawMessage): boolean => {
    if (asOf !== undefined && m.time.getTime() > asOf) return false;
    let entries: TimelineEvent[];
    try {
      entries = timelineEntries(readCommit(m));
    } catch (err) {
      onUnreadable(m.seq, err);
      return true;
    }
    if (q.order === "oldest" && count > 0 && count + entries.length > q.limit) {
      more = true;
      return false;
    }
    // Newest first: the oldest commits kept make room for this one.
    while (kept.length > 0 && count + entries.length > q.limit) {
      count -= kept.shift()!.events.length;
      more = true;
    }
    kept.push({ streamSeq: m.seq, events: entries });
    count += entries.length;
    return true;
  };
  const last = await store.replay(
    subjects.hostTimeline(hostId),
    { fromSeq: q.after + 1, ...(q.before !== undefined ? { toSeq: q.before - 1 } : {}) },
    take,
  );
  if (q.order === "newest") {
    kept.reverse();
    for (const c of kept) c.events.reverse();
  }
  return { commits: kept, next: more ? kept.at(-1)!.streamSeq : null, known: last > 0 };
}

/** How both timeline routes report a commit they leave out. */
export function warnUnreadable(log: Pick<Logger, "warn">, hostId: string): (seq: number, err: unknown) => void {
  return (seq, err) => log.warn({ err, seq, hostId }, "a timeline commit cannot be read: left out");
}
