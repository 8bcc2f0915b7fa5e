import type { KV } from "@nats-io/kv";
import {
  Heartbeat,
  HostState,
  Platform,
  encodeHostToken,
  platformOf,
  presenceKey,
  subjects,
  type EventOf,
  type HostEvent,
} from "@molt/contracts";
import { retryOnConflict } from "@molt/aggregates";
import type { EventStore } from "@molt/event-store";
import { describeIssues } from "@molt/contracts";

type Answer = { status: "ok" } | { status: "refused"; reason: string };

const sameLabels = (a: Record<string, string>, b: Record<string, string>) =>
  Object.keys(a).length === Object.keys(b).length && Object.entries(a).every(([k, v]) => b[k] === v);

/**
 * A heartbeat refreshes presence (a KV key whose TTL is the grace period) and, only when
 * something changed, appends host events: registered on the first one, labels changed,
 * component version observed. Each meta commit carries the host's state after it.
 */
export async function observeHeartbeat(
  deps: { store: EventStore; presence: KV },
  input: { subjectHostToken: string; payload: unknown; receivedAt: string },
): Promise<Answer> {
  const parsed = Heartbeat.safeParse(input.payload);
  if (!parsed.success)
    return { status: "refused", reason: `invalid heartbeat: ${describeIssues(parsed.error)}` };
  const hb = parsed.data;
  if (encodeHostToken(hb.hostId) !== input.subjectHostToken)
    return { status: "refused", reason: `host mismatch: heartbeat for ${hb.hostId} sent on another host's subject` };

  const platform = platformOf(hb.os, hb.arch);
  if (!Platform.safeParse(platform).success)
    return { status: "refused", reason: `os ${JSON.stringify(hb.os)} and arch ${JSON.stringify(hb.arch)} do not make a platform like linux-amd64` };

  await deps.presence.put(presenceKey(hb.hostId), JSON.stringify({ at: hb.at, agentVersion: hb.agentVersion }));

  const subject = subjects.hostMeta(hb.hostId);
  await retryOnConflict(async () => {
    const last = await deps.store.readLast(subject);
    const before = last ? HostState.parse(last.commit.state) : null;
    const meta = { occurredAt: input.receivedAt, actor: `host:${hb.hostId}`, correlationId: `heartbeat:${hb.hostId}` };
    const bodies: Array<Omit<HostEvent, "id" | "metadata">> = [];
    if (!before) bodies.push({ type: "HostRegistered", data: { hostId: hb.hostId, os: hb.os, arch: hb.arch, platform, labels: hb.labels } });
    else if (!sameLabels(before.labels, hb.labels)) bodies.push({ type: "HostLabelsChanged", data: { hostId: hb.hostId, labels: hb.labels } });
    for (const [component, version] of Object.entries(hb.components)) {
      const previous = before?.components[component] ?? null;
      if (before && component in before.components && previous === version) continue;
      const observed: Omit<EventOf<"ComponentVersionObserved">, "id" | "metadata"> = {
        type: "ComponentVersionObserved",
        data: { hostId: hb.hostId, component, version, previous },
      };
      bodies.push(observed);
    }
    if (bodies.length === 0) return;
    const state: HostState = {
      hostId: hb.hostId,
      os: hb.os,
      arch: hb.arch,
      platform,
      labels: hb.labels,
      components: { ...before?.components, ...hb.components },
      registeredAt: before?.registeredAt ?? input.receivedAt,
    };
    const seq = last?.seq ?? 0;
    // The commit id names the state it moves from, so a retried heartbeat cannot apply twice.
    const commitId = `hostmeta:${encodeHostToken(hb.hostId)}:${seq}`;
    const events = bodies.map((b, i) => ({ ...b, id: `${commitId}/${i}`, metadata: meta })) as HostEvent[];
    await deps.store.append(subject, { commitId, events, state }, { expectedSequence: seq });
  });
  return { status: "ok" };
}
