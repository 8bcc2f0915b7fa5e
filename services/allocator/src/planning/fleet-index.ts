import { DeliverPolicy, jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { decodeHostToken, describeIssues, HostState, STREAM_EVENTS, type Selector } from "@molt/contracts";
import type { EventStore } from "@molt/event-store";
import type { Logger } from "@molt/runtime";
import { RetryLater } from "../engine/deps.js";

/** What the fleet knows of one host, or why its stored state cannot be used. */
export type FleetHost = { hostId: string; state: HostState } | { hostId: string; skip: string };

const HOST_META = "molt.es.host.*.meta";
const textDecoder = new TextDecoder();

export interface FleetIndex {
  /**
   * Resolves once the index holds every host meta commit the stream had when it was called, so
   * a plan is never decided on an older fleet than its request saw (one request, no per-host read).
   */
  caughtUp(timeoutMs?: number): Promise<void>;
  get(hostId: string): FleetHost | undefined;
  /** The hosts a selector matches (each a lookup in the smallest matching set), plus unreadable ones, which a plan skips with the reason. */
  select(selector: Selector, component: string): FleetHost[];
  /** Host meta commits applied so far (for tests and metrics). */
  applied(): number;
  /** Settles when the index stops following the host events (stopped, or the consumer ended). */
  done: Promise<void>;
  stop(): Promise<void>;
}

/** A stored host state the contracts refuse becomes a skip with the reason, never a stuck plan. */
export function readHostState(hostId: string, raw: unknown): FleetHost {
  const parsed = HostState.safeParse(raw);
  return parsed.success ? { hostId, state: parsed.data } : { hostId, skip: `host state cannot be read: ${describeIssues(parsed.error).slice(0, 300)}` };
}

export function matches(state: HostState, component: string, selector: Selector): boolean {
  if (selector.platform !== undefined && state.platform !== selector.platform) return false;
  if (selector.cluster !== undefined && state.labels["cluster"] !== selector.cluster) return false;
  for (const [k, v] of Object.entries(selector.labels ?? {})) if (state.labels[k] !== v) return false;
  if (selector.version !== undefined && (state.components[component] ?? null) !== selector.version) return false;
  return true;
}

/** Lookup keys of a host: its platform, each label (cluster is a label) and each component's version. */
function keysOf(state: HostState): string[] {
  const keys = [`p\n${state.platform}`];
  for (const [k, v] of Object.entries(state.labels)) keys.push(`l\n${k}\n${v}`);
  for (const [c, v] of Object.entries(state.components)) keys.push(`v\n${c}\n${v ?? ""}`);
  return keys;
}

/**
 * The fleet as the allocator knows it from the host events: an in-memory index fed by an
 * ordered consumer over the host meta subjects (the last commit of each first, then every new
 * one), with lookups by platform, label, cluster and component version. Plans resolve named
 * hosts and selectors here instead of reading each host's last commit.
 */
export async function fleetIndex(nc: NatsConnection, store: EventStore, logger: Logger): Promise<FleetIndex> {
  const hosts = new Map<string, FleetHost>();
  const byKey = new Map<string, Set<string>>();
  const unreadable = new Set<string>();
  let seq = 0;
  let count = 0;
  const waiters = new Set<{ at: number; done: () => void }>();

  const unindex = (h: FleetHost) => {
    if (!("state" in h)) return void unreadable.delete(h.hostId);
    for (const k of keysOf(h.state)) byKey.get(k)?.delete(h.hostId);
  };
  const index = (h: FleetHost) => {
    if (!("state" in h)) return void unreadable.add(h.hostId);
    for (const k of keysOf(h.state)) {
      const set = byKey.get(k);
      if (set) set.add(h.hostId);
      else byKey.set(k, new Set([h.hostId]));
    }
  };
  const apply = (subject: string, streamSeq: number, data: Uint8Array) => {
    let hostId: string;
    try {
      hostId = decodeHostToken(subject.split(".")[3]!);
    } catch {
      return;
    }
    let next: FleetHost;
    try {
      next = readHostState(hostId, (JSON.parse(textDecoder.decode(data)) as { state?: unknown }).state);
    } catch (err) {
      next = { hostId, skip: `host state cannot be read: ${(err as Error).message}` };
    }
    const prev = hosts.get(hostId);
    if (prev) unindex(prev);
    hosts.set(hostId, next);
    index(next);
    count++;
    seq = Math.max(seq, streamSeq);
    for (const w of waiters)
      if (seq >= w.at) {
        waiters.delete(w);
        w.done();
      }
  };

  const consumer = await jetstream(nc).consumers.get(STREAM_EVENTS, { filter_subjects: HOST_META, deliver_policy: DeliverPolicy.LastPerSubject });
  const messages = await consumer.consume();
  const following = (async () => {
    for await (const m of messages) apply(m.subject, m.seq, m.data);
  })().catch((err: unknown) => logger.error({ err }, "fleet index stopped following the host events"));

  return {
    async caughtUp(timeoutMs = 10_000) {
      const at = await store.lastSequence(HOST_META);
      if (seq >= at) return;
      await new Promise<void>((resolve, reject) => {
        const w = {
          at,
          done: () => {
            clearTimeout(timer);
            resolve();
          },
        };
        const timer = setTimeout(() => {
          waiters.delete(w);
          reject(new RetryLater(`the fleet index is at ${seq}, behind the host events' ${at}, after ${timeoutMs} ms`));
        }, timeoutMs);
        waiters.add(w);
      });
    },
    get: (hostId) => hosts.get(hostId),
    select(selector, component) {
      const keys: string[] = [];
      if (selector.platform !== undefined) keys.push(`p\n${selector.platform}`);
      if (selector.cluster !== undefined) keys.push(`l\ncluster\n${selector.cluster}`);
      for (const [k, v] of Object.entries(selector.labels ?? {})) keys.push(`l\n${k}\n${v}`);
      if (selector.version !== undefined && selector.version !== null) keys.push(`v\n${component}\n${selector.version}`);
      // The smallest set bounds the walk; the full match checks the rest.
      let smallest: Iterable<string> = hosts.keys();
      let size = hosts.size;
      for (const k of keys) {
        const set = byKey.get(k) ?? new Set<string>();
        if (set.size < size) {
          smallest = set;
          size = set.size;
        }
      }
      const out: FleetHost[] = [];
      for (const id of smallest) {
        const h = hosts.get(id)!;
        if ("state" in h && matches(h.state, component, selector)) out.push(h);
      }
      for (const id of unreadable) out.push(hosts.get(id)!);
      return out;
    },
    applied: () => count,
    done: following,
    async stop() {
      await messages.close();
      await following;
    },
  };
}
