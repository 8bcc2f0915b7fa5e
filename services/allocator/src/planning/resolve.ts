import { DeliverPolicy, jetstream } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { decodeHostToken, HostState, SlotState, STREAM_EVENTS, subjects, type PackageRef, type Selector } from "@molt/contracts";
import { describeIssues } from "@molt/contracts";
import type { EventStore } from "@molt/event-store";
import { pool } from "../engine/deps.js";
import type { Candidate } from "./plan.js";

/** A stored host state the contracts refuse becomes a skip with the reason, never a stuck plan. */
function readHostState(hostId: string, raw: unknown): { state: HostState } | { skip: string } {
  const parsed = HostState.safeParse(raw);
  return parsed.success ? { state: parsed.data } : { skip: `host state cannot be read: ${describeIssues(parsed.error).slice(0, 300)}` };
}

export interface FleetReader {
  /** Host ids online now (keys of `molt_presence`), or null when presence is not known here. */
  online(): Promise<ReadonlySet<string> | null>;
  /** Every host's current state, from the last commit of each host meta subject (an index JetStream keeps). */
  all(): Promise<Array<{ hostId: string; state: HostState } | { hostId: string; skip: string }>>;
}

/**
 * The fleet as the allocator reads it. `presenceBucket` is feedback's (it owns the TTL): opened
 * on each use, so an allocator started before feedback still sees it once it exists.
 */
export function fleetReader(nc: NatsConnection, presenceBucket: string): FleetReader {
  return {
    async online() {
      let presence: KV;
      try {
        presence = await new Kvm(nc).open(presenceBucket);
        await presence.status();
      } catch {
        return null;
      }
      const out = new Set<string>();
      for await (const key of await presence.keys()) {
        try {
          out.add(decodeHostToken(key));
        } catch {
          // A foreign key in the bucket is not a host.
        }
      }
      return out;
    },
    async all() {
      const js = jetstream(nc);
      const consumer = await js.consumers.get(STREAM_EVENTS, {
        filter_subjects: ["molt.es.host.*.meta"],
        deliver_policy: DeliverPolicy.LastPerSubject,
      });
      const out: Array<{ hostId: string; state: HostState } | { hostId: string; skip: string }> = [];
      if ((await consumer.info()).num_pending === 0) return out;
      const messages = await consumer.consume();
      for await (const m of messages) {
        const hostId = decodeHostToken(m.subject.split(".")[3]!);
        try {
          out.push({ hostId, ...readHostState(hostId, m.json<{ state?: unknown }>().state) });
        } catch (err) {
          out.push({ hostId, skip: `host state cannot be read: ${(err as Error).message}` });
        }
        if (m.info.pending === 0) break;
      }
      await messages.close();
      return out;
    },
  };
}

export function matches(state: HostState, component: string, selector: Selector): boolean {
  if (selector.platform !== undefined && state.platform !== selector.platform) return false;
  if (selector.cluster !== undefined && state.labels["cluster"] !== selector.cluster) return false;
  for (const [k, v] of Object.entries(selector.labels ?? {})) if (state.labels[k] !== v) return false;
  if (selector.version !== undefined && (state.components[component] ?? null) !== selector.version) return false;
  return true;
}

/**
 * Candidates for a plan: each named host's state (one direct get of its meta subject) or the
 * hosts a selector matches (one pass over the fleet index), then presence and quarantine.
 */
export async function loadCandidates(
  deps: { store: EventStore; fleet: FleetReader },
  request: { component: string; hosts: readonly string[]; selector: Selector | null },
): Promise<Candidate[]> {
  const found: Array<{ hostId: string; state: HostState } | { hostId: string; skip: string }> = [];
  if (request.selector !== null) {
    for (const h of await deps.fleet.all()) if (!("state" in h) || matches(h.state, request.component, request.selector)) found.push(h);
    if (request.hosts.length > 0) {
      const named = new Set(request.hosts);
      for (let i = found.length - 1; i >= 0; i--) if (!named.has(found[i]!.hostId)) found.splice(i, 1);
    }
  } else {
    const byHost = new Map<string, { hostId: string; state: HostState } | { hostId: string; skip: string }>();
    await pool(request.hosts, 32, async (hostId) => {
      const last = await deps.store.readLast(subjects.hostMeta(hostId));
      byHost.set(hostId, last ? { hostId, ...readHostState(hostId, last.commit.state) } : { hostId, skip: "not registered: no heartbeat from this host yet" });
    });
    for (const h of request.hosts) found.push(byHost.get(h)!);
  }
  const online = await deps.fleet.online();
  const quarantine = new Map<string, string | null>();
  await pool(found, 32, async (h) => {
    if (!("state" in h)) return;
    const last = await deps.store.readLast(subjects.slot(h.hostId, request.component));
    const parsed = last ? SlotState.safeParse(last.commit.state) : null;
    quarantine.set(h.hostId, parsed?.success ? (parsed.data.quarantined?.reason ?? null) : null);
  });
  return found.map((h) =>
    "state" in h ? { hostId: h.hostId, state: h.state, online: online === null || online.has(h.hostId), quarantined: quarantine.get(h.hostId) ?? null } : h,
  );
}

/** The published, not yanked, variants of one component version, by platform. */
export async function loadPackages(
  store: EventStore,
  component: string,
  version: string,
  downloadUrl: (platform: string) => string,
): Promise<Map<string, PackageRef>> {
  const out = new Map<string, PackageRef>();
  for (const c of await store.read(subjects.package(component))) {
    for (const e of c.commit.events) {
      if (e.type === "PackagePublished" && e.data.version === version) {
        const d = e.data;
        // The signed manifest goes to the host, which checks it against its own trusted keys.
        const signed = d.signature !== undefined && d.keyId !== undefined ? { manifest: d.manifest, signature: d.signature, keyId: d.keyId } : undefined;
        out.set(d.platform, { platform: d.platform, sha256: d.sha256, size: d.size, url: downloadUrl(d.platform), ...(signed ? { signed } : {}) });
      }
      if (e.type === "PackageYanked" && e.data.version === version) {
        if (e.data.platform) out.delete(e.data.platform);
        else out.clear();
      }
    }
  }
  return out;
}
