import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { decodeHostToken, SlotState, subjects, type PackageRef, type Selector } from "@molt/contracts";
import type { EventStore } from "@molt/event-store";
import { pool } from "../engine/deps.js";
import { readHostState, type FleetHost, type FleetIndex } from "./fleet-index.js";
import type { Candidate } from "./plan.js";

export interface FleetReader {
  /** Host ids online now (keys of `molt_presence`), or null when presence is not known here. */
  online(): Promise<ReadonlySet<string> | null>;
  /** The fleet from the host events (named hosts and selectors resolve here); null: read each named host's last commit. */
  index: FleetIndex | null;
}

/**
 * The fleet as the allocator reads it. `presenceBucket` is feedback's (it owns the TTL): opened
 * on each use, so an allocator started before feedback still sees it once it exists.
 */
export function fleetReader(nc: NatsConnection, presenceBucket: string, index: FleetIndex | null): FleetReader {
  return {
    index,
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
  };
}

const NOT_REGISTERED = "not registered: no heartbeat from this host yet";

/**
 * Candidates for a plan: the named hosts or the hosts a selector matches, from the fleet index
 * once it has caught up with the host events (without an index, each named host's last meta
 * commit), then presence and quarantine.
 */
export async function loadCandidates(
  deps: { store: EventStore; fleet: FleetReader },
  request: { component: string; hosts: readonly string[]; selector: Selector | null },
): Promise<Candidate[]> {
  let found: FleetHost[] = [];
  const index = deps.fleet.index;
  if (index !== null) await index.caughtUp();
  if (request.selector !== null) {
    found = index === null ? [] : index.select(request.selector, request.component);
    if (request.hosts.length > 0) {
      const named = new Set(request.hosts);
      found = found.filter((h) => named.has(h.hostId));
    }
  } else if (index !== null) {
    found = request.hosts.map((hostId) => index.get(hostId) ?? { hostId, skip: NOT_REGISTERED });
  } else {
    const byHost = new Map<string, FleetHost>();
    await pool(request.hosts, 32, async (hostId) => {
      const last = await deps.store.readLast(subjects.hostMeta(hostId));
      byHost.set(hostId, last ? readHostState(hostId, last.commit.state) : { hostId, skip: NOT_REGISTERED });
    });
    found = request.hosts.map((h) => byHost.get(h)!);
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

/**
 * The published, not yanked, variants of one component version, by platform, each with the
 * component's latest signed repository metadata (the host checks yank, rollback and freeze with
 * it); and the yanked platforms with the yank's reason, so a plan can say why it skipped a host.
 */
export async function loadPackages(
  store: EventStore,
  component: string,
  version: string,
  downloadUrl: (platform: string) => string,
): Promise<{ packages: Map<string, PackageRef>; yanked: Map<string, string> }> {
  const out = new Map<string, PackageRef>();
  const yanked = new Map<string, string>();
  let metadata: PackageRef["metadata"];
  for (const c of await store.read(subjects.package(component))) {
    for (const e of c.commit.events) {
      if (e.type === "PackagePublished" && e.data.version === version) {
        const d = e.data;
        // The signed manifest goes to the host, which checks it against its own trusted keys.
        const signed = d.signature !== undefined && d.keyId !== undefined ? { manifest: d.manifest, signature: d.signature, keyId: d.keyId } : undefined;
        out.set(d.platform, { platform: d.platform, sha256: d.sha256, size: d.size, url: downloadUrl(d.platform), ...(signed ? { signed } : {}) });
      }
      if (e.type === "PackageYanked" && e.data.version === version) {
        for (const platform of e.data.platform ? [e.data.platform] : [...out.keys()]) {
          if (out.delete(platform)) yanked.set(platform, e.data.reason);
        }
      }
      if (e.type === "PackageMetadataSigned") metadata = e.data.signed;
    }
  }
  if (metadata) for (const [platform, ref] of out) out.set(platform, { ...ref, metadata });
  return { packages: out, yanked };
}
