import type { NatsConnection } from "@nats-io/transport-node";
import { type Heartbeat, StepReport, subjects } from "@molt/contracts";

export interface FeedbackStandIn {
  /** Every step report received, in arrival order. */
  readonly reports: StepReport[];
  readonly heartbeats: Heartbeat[];
  /** The journal entries reported for one task, in arrival order. */
  entriesOf(taskId: string): StepReport["entries"];
}

/**
 * Feedback's NATS side for tests and benchmarks that run agents without the feedback service:
 * answers every step report `accepted` and every heartbeat `ok`, and keeps what it received.
 */
export async function startFeedbackStandIn(nc: NatsConnection): Promise<FeedbackStandIn> {
  const reports: StepReport[] = [];
  const heartbeats: Heartbeat[] = [];
  nc.subscribe(subjects.reports, {
    callback: (_err, msg) => {
      reports.push(StepReport.parse(msg.json()));
      msg.respond(JSON.stringify({ status: "accepted" }));
    },
  });
  nc.subscribe(subjects.heartbeats, {
    callback: (_err, msg) => {
      heartbeats.push(msg.json<Heartbeat>());
      msg.respond(JSON.stringify({ status: "ok" }));
    },
  });
  await nc.flush();
  return { reports, heartbeats, entriesOf: (taskId) => reports.filter((r) => r.taskId === taskId).flatMap((r) => r.entries) };
}
