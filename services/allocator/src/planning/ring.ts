import { createHash } from "node:crypto";

/** Points per batch on the ring: enough that batch shares stay within ~15 % of each other. */
export const VNODES = 64;

const point = (s: string): bigint => BigInt(`0x${createHash("sha256").update(s).digest("hex").slice(0, 15)}`);

/** A host's stable position, also used to choose the canary (the lowest positions). */
export const hostPoint = (hostId: string): bigint => point(`host\n${hostId}`);

/**
 * Batch membership by consistent hashing: each batch owns VNODES points on a ring and a host
 * belongs to the batch owning the first point at or after its own. Adding hosts moves no
 * existing host while the batch count stays; one more batch takes about 1/(B+1) of the hosts.
 * Returns the batch number (0-based) of each host, in input order.
 */
export function ringAssign(hostIds: readonly string[], batches: number): number[] {
  if (batches <= 1) return hostIds.map(() => 0);
  const ring: Array<{ at: bigint; batch: number }> = [];
  for (let b = 0; b < batches; b++) for (let v = 0; v < VNODES; v++) ring.push({ at: point(`batch\n${b}\n${v}`), batch: b });
  ring.sort((x, y) => (x.at < y.at ? -1 : x.at > y.at ? 1 : 0));
  return hostIds.map((h) => {
    const p = hostPoint(h);
    let lo = 0;
    let hi = ring.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (ring[mid]!.at < p) lo = mid + 1;
      else hi = mid;
    }
    return ring[lo === ring.length ? 0 : lo]!.batch;
  });
}
