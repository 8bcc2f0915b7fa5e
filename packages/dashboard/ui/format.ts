import type { DeploymentSummary, TaskView } from "@molt/contracts/views";

export type Counts = Partial<Record<TaskView["state"], number>>;

const FINISHED: ReadonlyArray<TaskView["state"]> = ["succeeded", "failed", "rejected", "timed-out", "cancelled"];
const BAD: ReadonlyArray<TaskView["state"]> = ["failed", "rejected", "timed-out"];
export const TERMINAL = new Set(["completed", "failed", "cancelled"]);

export function finished(counts: Counts): number {
  return FINISHED.reduce((n, s) => n + (counts[s] ?? 0), 0);
}

export function failedCount(counts: Counts): number {
  return BAD.reduce((n, s) => n + (counts[s] ?? 0), 0);
}

/** Percent of planned hosts whose task has ended (any outcome); a completed deployment is 100. */
export function progressPercent(d: DeploymentSummary, counts: Counts): number {
  if (d.state === "completed") return 100;
  if (d.hostsTotal === 0) return 0;
  return Math.min(100, Math.floor((finished(counts) * 100) / d.hostsTotal));
}

export function duration(ms: number | null): string {
  if (ms === null) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

export function time(iso: string | null): string {
  return iso ? new Date(iso).toLocaleString() : "–";
}
