import { CommandRecord, Commit, decodeHostToken, parseEventSubject, type MoltEvent } from "@molt/contracts";
import { pgSafe } from "@molt/db";
import type { EntryFields } from "../log/chain.js";

import type { RawMessage } from "@molt/event-store";

const RAW_KEPT = 64 * 1024;
const decoder = new TextDecoder();

/** timestamptz keeps milliseconds as JavaScript gives them back: hash what will be read back. */
const ms = (iso: string) => new Date(iso).toISOString();

/**
 * One entry per event of a commit. A message that is not a valid commit is still recorded, as
 * `invalid-commit`: the log keeps everything that reached the store and never stalls on it.
 */
export function eventEntries(stream: string, m: RawMessage): EntryFields[] {
  const text = decoder.decode(m.data);
  const parsed = Commit.safeParse(parseJson(text));
  if (!parsed.success) return [invalid(stream, m, "event", "invalid-commit", text, parsed.error.issues[0]?.message ?? "not JSON")];
  const { commitId, events } = parsed.data;
  return events.map((event, idx) =>
    pgSafe({
      source: "event" as const,
      sourceStream: stream,
      sourceSeq: m.seq,
      sourceIdx: idx,
      at: ms(event.metadata.occurredAt),
      actor: event.metadata.actor,
      kind: event.type,
      target: targetOf(m.subject, event),
      outcome: null,
      data: { subject: m.subject, commitId, event },
    }),
  );
}

/** An operator command (accepted, replayed or refused) as action recorded it on MOLT_AUDIT. */
export function commandEntries(stream: string, m: RawMessage): EntryFields[] {
  const text = decoder.decode(m.data);
  const parsed = CommandRecord.safeParse(parseJson(text));
  if (!parsed.success) return [invalid(stream, m, "command", "invalid-command", text, parsed.error.issues[0]?.message ?? "not JSON")];
  const r = parsed.data;
  return [
    pgSafe({
      source: "command" as const,
      sourceStream: stream,
      sourceSeq: m.seq,
      sourceIdx: 0,
      at: ms(r.at),
      actor: r.actor,
      kind: r.kind,
      target: r.target,
      outcome: r.outcome,
      data: r,
    }),
  ];
}

/** Deployment id for deployment events, host id for a host's subjects, else the subject. */
function targetOf(subject: string, event: MoltEvent): string {
  const s = parseEventSubject(subject);
  if (s?.kind === "deployment") return s.deploymentId;
  if (s?.kind === "slot" || s?.kind === "hostMeta") {
    try {
      return decodeHostToken(s.hostToken);
    } catch {
      return subject;
    }
  }
  return "deploymentId" in event.data ? event.data.deploymentId : subject;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

function invalid(stream: string, m: RawMessage, source: "event" | "command", kind: string, text: string, error: string): EntryFields {
  return pgSafe({
    source,
    sourceStream: stream,
    sourceSeq: m.seq,
    sourceIdx: 0,
    at: m.time.toISOString(),
    actor: "unknown",
    kind,
    target: m.subject,
    outcome: "invalid",
    data: { subject: m.subject, error, raw: text.slice(0, RAW_KEPT), truncated: text.length > RAW_KEPT },
  });
}
