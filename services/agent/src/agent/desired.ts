import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { describeIssues, DesiredState, KV_DESIRED } from "@molt/contracts";

/** One read of a desired-state key. */
export type DesiredRead =
  | { readonly kind: "absent" }
  /** Deleted or purged: the allocator withdrew the task. */
  | { readonly kind: "withdrawn"; readonly revision: number }
  | { readonly kind: "task"; readonly task: DesiredState; readonly revision: number }
  | { readonly kind: "invalid"; readonly problem: string; readonly revision: number };

export interface DesiredSource {
  /** A plain get of one key (no watcher, no consumer). Throws when the bucket cannot be read yet. */
  read(key: string): Promise<DesiredRead>;
}

/**
 * Desired state from KV `molt_desired`. The bucket belongs to the allocator: it is opened, never
 * created, so until it exists every read fails and the caller retries.
 */
export function kvDesiredSource(nc: NatsConnection): DesiredSource {
  let kv: Promise<KV> | undefined;
  return {
    async read(key) {
      // Direct gets name the key in the subject, so a host's identity can be allowed its own keys
      // only (open() binds without asking the server, and would otherwise use STREAM.MSG.GET).
      kv ??= new Kvm(nc).open(KV_DESIRED, { allow_direct: true });
      let bucket: KV;
      try {
        bucket = await kv;
      } catch (err) {
        kv = undefined;
        throw err;
      }
      const entry = await bucket.get(key);
      if (!entry) return { kind: "absent" };
      if (entry.operation === "DEL" || entry.operation === "PURGE") return { kind: "withdrawn", revision: entry.revision };
      let raw: unknown;
      try {
        raw = entry.json();
      } catch (err) {
        return { kind: "invalid", problem: `not JSON: ${(err as Error).message}`, revision: entry.revision };
      }
      const parsed = DesiredState.safeParse(raw);
      if (!parsed.success)
        return {
          kind: "invalid",
          problem: describeIssues(parsed.error),
          revision: entry.revision,
        };
      return { kind: "task", task: parsed.data, revision: entry.revision };
    },
  };
}
