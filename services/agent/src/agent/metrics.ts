import { type DesiredState, type JournalEntry } from "@molt/contracts";
import { stepDurations } from "@molt/runtime";
import { Counter, type Registry } from "prom-client";

const VERDICTS: ReadonlySet<string> = new Set(["succeeded", "failed", "rejected"]);

/**
 * The agent's metrics (one set for every simulated host of a process), counted from what
 * feedback answered, so a re-sent report counts once: task verdicts, step durations, the bytes
 * of the packages downloaded, and heartbeats by answer.
 */
export function agentMetrics(registry: Registry) {
  const tasks = new Counter({ name: "molt_agent_tasks_total", help: "Task verdicts reported, by outcome", labelNames: ["outcome"] as const, registers: [registry] });
  const steps = stepDurations(registry, "molt_agent_step_duration_seconds", "Upgrade step durations, by step and outcome");
  const bytes = new Counter({ name: "molt_agent_download_bytes_total", help: "Bytes of the packages downloaded and verified", registers: [registry] });
  const heartbeats = new Counter({ name: "molt_agent_heartbeats_total", help: "Heartbeats sent, by answer (ok, refused, unanswered)", labelNames: ["status"] as const, registers: [registry] });
  return {
    /** Entries feedback has answered (accepted or duplicate), in seq order. */
    forwarded(task: DesiredState, entries: readonly JournalEntry[]): void {
      for (const e of entries) {
        if (e.kind === "step-succeeded") {
          steps.observe({ step: e.step, outcome: "succeeded" }, e.durationMs / 1000);
          if (e.step === "download" && task.package) bytes.inc(task.package.size);
        } else if (e.kind === "step-failed") steps.observe({ step: e.step, outcome: "failed" }, e.durationMs / 1000);
        else if (VERDICTS.has(e.kind)) tasks.inc({ outcome: e.kind });
      }
    },
    heartbeat(status: "ok" | "refused" | "unanswered"): void {
      heartbeats.inc({ status });
    },
  };
}
export type AgentMetrics = ReturnType<typeof agentMetrics>;
