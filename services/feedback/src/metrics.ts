import type { Registry } from "prom-client";
import { Counter } from "prom-client";

/** What feedback answered: reports (each a batch of journal entries) and heartbeats, by answer. */
export function feedbackMetrics(registry: Registry) {
  const reports = new Counter({ name: "molt_feedback_reports_total", help: "Step reports answered, by answer", labelNames: ["status"] as const, registers: [registry] });
  const heartbeats = new Counter({ name: "molt_feedback_heartbeats_total", help: "Heartbeats answered, by answer; shed: dropped unanswered, more were waiting than MOLT_HEARTBEAT_MAX_PENDING", labelNames: ["status"] as const, registers: [registry] });
  const verdicts = new Counter({
    name: "molt_feedback_task_verdicts_total",
    help: "Task verdicts hosts reported and feedback accepted, by outcome",
    labelNames: ["outcome"] as const,
    registers: [registry],
  });
  return {
    report(status: string, verdict: string | undefined): void {
      reports.inc({ status });
      if (verdict !== undefined && status === "accepted") verdicts.inc({ outcome: verdict });
    },
    heartbeat(status: string): void {
      heartbeats.inc({ status });
    },
  };
}
export type FeedbackMetrics = ReturnType<typeof feedbackMetrics>;
