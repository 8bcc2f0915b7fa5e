import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { DesiredState, desiredKey, subjects } from "@molt/contracts";

/** JetStream's wrong-last-sequence error: another writer moved the key since we read it. */
const isStaleRevision = (err: unknown) => /wrong last sequence|10071/i.test((err as Error).message ?? "");

export class StaleRevisionError extends Error {
  readonly code = "concurrency";
}

/** A key's value as a DesiredState, or null for anything else (a foreign or corrupt value is not ours to act on). */
function decode(e: { string(): string }): DesiredState | null {
  try {
    const parsed = DesiredState.safeParse(JSON.parse(e.string()));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

/** Writes a key only if it is still at `revision` (0: must not exist). A stale revision is refused. */
export async function casPut(kv: KV, key: string, value: string, revision: number): Promise<number> {
  try {
    return revision === 0 ? await kv.create(key, value) : await kv.update(key, value, revision);
  } catch (err) {
    if (isStaleRevision(err) || /key exists/i.test((err as Error).message)) throw new StaleRevisionError(`${key} is no longer at revision ${revision}`);
    throw err;
  }
}

/**
 * The desired state of one host and component, read and written with CAS. The agent reads it
 * on a nudge and on a slow poll; there is no consumer per host.
 */
export function desiredStates(kv: KV, nc: NatsConnection) {
  const read = async (hostId: string, component: string) => {
    const e = await kv.get(desiredKey(hostId, component));
    if (!e || e.operation !== "PUT") return { revision: e?.revision ?? 0, value: null };
    return { revision: e.revision, value: decode(e) };
  };
  return {
    read,
    /**
     * Puts the task's desired state unless it is already there; returns the KV revision holding
     * it, or null when `stillWanted` says the task moved on (checked after reading the key's
     * revision, so a late redelivery can neither overwrite the slot's next task nor bring back a
     * task that already ended).
     */
    async write(stillWanted: () => Promise<boolean>, desired: DesiredState): Promise<number | null> {
      for (let attempt = 0; ; attempt++) {
        const cur = await read(desired.hostId, desired.component);
        if (cur.value?.taskId === desired.taskId) return cur.revision;
        if (!(await stillWanted())) return null;
        try {
          const rev = await casPut(kv, desiredKey(desired.hostId, desired.component), JSON.stringify(desired), cur.revision);
          nc.publish(subjects.nudge(desired.hostId));
          return rev;
        } catch (err) {
          if (!(err instanceof StaleRevisionError) || attempt > 20) throw err;
        }
      }
    },
    /** Removes the key if it still holds this task (a finished, timed-out or cancelled task). */
    async withdraw(hostId: string, component: string, taskId: string): Promise<void> {
      for (let attempt = 0; ; attempt++) {
        const cur = await read(hostId, component);
        if (cur.value?.taskId !== taskId) return;
        try {
          await kv.delete(desiredKey(hostId, component), { previousSeq: cur.revision });
          nc.publish(subjects.nudge(hostId));
          return;
        } catch (err) {
          if (!isStaleRevision(err) || attempt > 20) throw err;
        }
      }
    },
    /** Every key with a task in it (the active tasks), for the timeout tick. */
    async *active(): AsyncIterable<DesiredState> {
      for await (const key of await kv.keys()) {
        const e = await kv.get(key);
        if (!e || e.operation !== "PUT") continue;
        const value = decode(e);
        if (value) yield value;
      }
    },
  };
}
export type DesiredStates = ReturnType<typeof desiredStates>;
