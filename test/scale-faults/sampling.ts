import { readFile } from "node:fs/promises";

/** Resident set size of a live process, in MiB (VmRSS of /proc/<pid>/status). */
export async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kb = /VmRSS:\s+(\d+) kB/.exec(status)?.[1];
  if (kb === undefined) throw new Error(`no VmRSS for pid ${pid} (has it exited?)`);
  return Number(kb) / 1024;
}

export interface Flatness {
  /** Whether the last third's peak is within the tolerance of the earlier thirds' peak. */
  flat: boolean;
  /** Peak of each third (the first is the warm-up, not judged), MiB. */
  peaksMiB: [number, number, number];
  /** Least-squares slope of the samples after the warm-up, MiB per minute (at one sample per `sampleMs`). */
  slopeMiBPerMin: number;
  samples: number;
}

/**
 * Is a series of RSS samples flat after its warm-up? In thirds: the last third's peak may exceed
 * the highest peak before it (warm-up or middle) by `ratio` or `floorMiB`, whichever is larger. A
 * garbage-collected heap saws up and down (a collection can make the middle third's peak the
 * lowest); what must not happen is a new high that keeps rising.
 * The slope after warm-up is reported beside it, not judged: one GC at the right moment tilts it.
 */
export function flatness(samples: readonly number[], tolerance: { ratio: number; floorMiB: number }, sampleMs = 1_000): Flatness {
  const third = Math.floor(samples.length / 3);
  if (third < 2) throw new Error(`too few samples (${samples.length}) to judge memory: sample longer`);
  const parts = [samples.slice(0, third), samples.slice(third, 2 * third), samples.slice(2 * third)];
  const peaks = parts.map((p) => Math.max(...p)) as [number, number, number];
  const before = Math.max(peaks[0], peaks[1]);
  const allowed = before + Math.max(before * tolerance.ratio, tolerance.floorMiB);
  const after = samples.slice(third);
  const n = after.length;
  const meanX = (n - 1) / 2;
  const meanY = after.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (i - meanX) * (after[i]! - meanY);
    den += (i - meanX) ** 2;
  }
  const perSample = den === 0 ? 0 : num / den;
  return {
    flat: peaks[2] <= allowed,
    peaksMiB: peaks.map((p) => Number(p.toFixed(1))) as [number, number, number],
    slopeMiBPerMin: Number(((perSample * 60_000) / sampleMs).toFixed(2)),
    samples: samples.length,
  };
}

/**
 * Projection lag as an operator feels it: the stream's last sequence is noted with the time it
 * was read; once the projector's checkpoint is seen at or past it, the lag of that append is the
 * time between. (Appends between two readings are covered by the later reading.)
 */
export function lagTracker() {
  const open: Array<{ at: number; seq: number }> = [];
  const lags: number[] = [];
  return {
    appended(at: number, seq: number): void {
      if (seq > (open.at(-1)?.seq ?? 0)) open.push({ at, seq });
    },
    applied(at: number, checkpoint: number): void {
      while (open.length > 0 && open[0]!.seq <= checkpoint) lags.push(at - open.shift()!.at);
    },
    summary(now = Date.now()) {
      const oldestOpen = open[0];
      const all = [...lags, ...(oldestOpen ? [now - oldestOpen.at] : [])].sort((a, b) => a - b);
      const q = (p: number) => all[Math.min(all.length - 1, Math.floor(p * all.length))] ?? 0;
      return { appendsSeen: lags.length, stillOpen: open.length, p50Ms: q(0.5), p95Ms: q(0.95), maxMs: all.at(-1) ?? 0 };
    },
  };
}
