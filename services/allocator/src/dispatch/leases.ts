import type { KV, KvEntry } from "@nats-io/kv";
import type { Logger } from "@molt/runtime";
import { z } from "zod";
import { casPut, StaleRevisionError } from "./desired.js";

/** The fleet-wide cap's bucket: key `lease.<n>`, n below the cap, holds the task using it. */
export { KV_LEASES } from "@molt/contracts";

export const Lease = z.object({ taskId: z.string(), deploymentId: z.string(), hostId: z.string(), component: z.string(), deadline: z.string() });
export type Lease = z.infer<typeof Lease>;

export interface FleetLeases {
  readonly cap: number;
  /**
   * Takes a lease for each task, in order, until the cap is reached; returns how many of them
   * (from the first) hold one. A task that holds one already keeps it, so a decision made again
   * (a redelivery, another replica) takes nothing twice.
   */
  acquire(tasks: readonly Lease[], now: Date): Promise<number>;
  /** Gives back the task's lease (its task ended, or it was never allocated). */
  release(taskId: string): Promise<void>;
  /** Leases held now, as this replica sees them. */
  held(): number;
  /** Settles when the watch on the bucket ends (stopped, or lost). */
  done: Promise<void>;
  stop(): Promise<void>;
}

const isWrongRevision = (err: unknown) => /wrong last sequence|10071/i.test((err as Error).message ?? "");
const keyOf = (n: number) => `lease.${n}`;

function decode(e: KvEntry): Lease | null {
  if (e.operation !== "PUT") return null;
  try {
    const parsed = Lease.safeParse(JSON.parse(e.string()));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

/**
 * The fleet-wide cap as leases in a KV bucket. There are exactly `cap` lease keys; a task takes
 * one with a create (or an update at the revision of its delete marker), so two replicas can
 * never hold the same key and no more than `cap` tasks are ever in flight across all
 * deployments. A watch on the bucket keeps this replica's view (which keys are free, which task
 * holds which), a hint only: every write is checked by its expected revision. A lease whose
 * task's deadline has passed and whose task is no longer active on its slot (a replica died
 * between taking it and recording the assignment, or the host was never allocated) is taken over.
 */
export async function fleetLeases(kv: KV, cap: number, isActive: (lease: Lease) => Promise<boolean>, logger: Logger): Promise<FleetLeases> {
  const view = new Map<number, { revision: number; lease: Lease | null }>();
  const byTask = new Map<string, number>();
  const free = new Set<number>(Array.from({ length: cap }, (_, n) => n));

  const apply = (n: number, revision: number, lease: Lease | null) => {
    const known = view.get(n);
    if (known !== undefined && known.revision >= revision) return;
    if (known?.lease && byTask.get(known.lease.taskId) === n) byTask.delete(known.lease.taskId);
    view.set(n, { revision, lease });
    if (lease) {
      byTask.set(lease.taskId, n);
      free.delete(n);
    } else if (n < cap) free.add(n);
  };
  const applyEntry = (e: KvEntry) => {
    const n = Number(e.key.slice("lease.".length));
    if (Number.isInteger(n) && n >= 0) apply(n, e.revision, decode(e));
  };
  const refresh = async (n: number) => {
    const e = await kv.get(keyOf(n));
    if (e) applyEntry(e);
  };

  // The view starts from every key's last value, then follows changes.
  const values = (await kv.status()).values;
  let markReady!: () => void;
  const ready = new Promise<void>((r) => (markReady = r));
  if (values === 0) markReady();
  const watch = await kv.watch({ key: "lease.>" });
  const following = (async () => {
    for await (const e of watch) {
      applyEntry(e);
      if (!e.isUpdate && e.delta === 0) markReady();
      if (e.isUpdate) markReady();
    }
  })().catch((err: unknown) => logger.error({ err }, "fleet lease watch ended"));
  await Promise.race([ready, new Promise((r) => setTimeout(r, 5_000))]);

  const write = async (n: number, lease: Lease, revision: number): Promise<boolean> => {
    try {
      apply(n, await casPut(kv, keyOf(n), JSON.stringify(lease), revision), lease);
      return true;
    } catch (err) {
      if (!(err instanceof StaleRevisionError)) throw err;
      await refresh(n);
      return false;
    }
  };

  const take = async (lease: Lease, now: Date): Promise<boolean> => {
    // A failed write refreshes the key, which leaves the free set when another holds it.
    for (let tries = 0; free.size > 0 && tries < cap + 8; tries++) {
      const n = free.values().next().value!;
      if (await write(n, lease, view.get(n)?.revision ?? 0)) return true;
    }
    // No key free: one whose task is past its deadline and no longer active is taken over.
    for (const [n, held] of view) {
      if (n >= cap || held.lease === null || Date.parse(held.lease.deadline) > now.getTime()) continue;
      if (await isActive(held.lease)) continue;
      if (await write(n, lease, held.revision)) {
        logger.warn({ expired: held.lease.taskId, by: lease.taskId }, "fleet lease of an ended or never-allocated task taken over after its deadline");
        return true;
      }
    }
    return false;
  };

  return {
    cap,
    async acquire(tasks, now) {
      let got = 0;
      for (const t of tasks) {
        if (!byTask.has(t.taskId) && !(await take(t, now))) break;
        got++;
      }
      return got;
    },
    async release(taskId) {
      for (let attempt = 0; ; attempt++) {
        const n = byTask.get(taskId);
        if (n === undefined) return;
        const held = view.get(n)!;
        try {
          await kv.delete(keyOf(n), { previousSeq: held.revision });
          apply(n, held.revision + 1, null);
          await refresh(n);
          return;
        } catch (err) {
          if (!isWrongRevision(err) || attempt > 20) throw err;
          await refresh(n);
        }
      }
    },
    held: () => byTask.size,
    done: following,
    async stop() {
      watch.stop();
      await following;
    },
  };
}
