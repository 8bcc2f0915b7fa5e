import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { slotRepository } from "@molt/aggregates";
import { subjects } from "@molt/contracts";
import type { EventStore } from "@molt/event-store";
import { respond, type Logger } from "@molt/runtime";
import type { FeedbackMetrics } from "./metrics.js";
import { observeHeartbeat } from "./heartbeats/observe.js";
import { recordReport } from "./reports/record.js";

const tokenOf = (subject: string) => subject.split(".").pop() ?? "";

function parseJson(data: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(data));
  } catch {
    return undefined;
  }
}

const VERDICTS = new Set(["succeeded", "failed", "rejected"]);

/** The verdict a report carries (its entry that ends the task), if any. */
function verdictOf(payload: unknown): string | undefined {
  const entries = (payload as { entries?: unknown } | undefined)?.entries;
  if (!Array.isArray(entries)) return undefined;
  for (const e of entries) {
    const kind = (e as { kind?: unknown } | null)?.kind;
    if (typeof kind === "string" && VERDICTS.has(kind)) return kind;
  }
  return undefined;
}

/** Answers step reports and heartbeats (NATS request/reply, queue group shared by replicas). */
export function startFeedback(deps: {
  nc: NatsConnection;
  store: EventStore;
  presence: KV;
  logger: Logger;
  concurrency: number;
  metrics?: FeedbackMetrics;
  /**
   * Heartbeats waiting beyond this many are dropped unanswered (counted as `shed`). An agent sends
   * its next heartbeat only after an answer or its timeout, so without a limit a feedback slower
   * than the fleet queued every timed-out heartbeat again each period (a queue and RSS growing
   * for as long as the overload lasted) and answered mostly heartbeats nobody waited for. Default 1,000.
   */
  heartbeatMaxPending?: number;
}) {
  const { nc, store, presence, logger } = deps;
  const slots = slotRepository(store);
  // An answer the agent does not take as final: it retries until feedback can decide.
  const onError = (err: unknown) => ({ status: "error", reason: (err as Error).message });
  const reports = respond(nc, {
    subject: subjects.reports,
    queue: "molt-feedback",
    concurrency: deps.concurrency,
    logger,
    handle: async (msg) => {
      const payload = parseJson(msg.data);
      const answer = await recordReport({ slots }, { subjectHostToken: tokenOf(msg.subject), payload, receivedAt: new Date().toISOString() });
      deps.metrics?.report(answer.status, verdictOf(payload));
      if (answer.status === "refused") logger.warn({ subject: msg.subject, reason: answer.reason }, "report refused");
      return answer;
    },
    onError,
  });
  const heartbeats = respond(nc, {
    subject: subjects.heartbeats,
    queue: "molt-feedback",
    concurrency: deps.concurrency,
    logger,
    handle: async (msg) => {
      const answer = await observeHeartbeat(
        { store, presence },
        { subjectHostToken: tokenOf(msg.subject), payload: parseJson(msg.data), receivedAt: new Date().toISOString() },
      );
      deps.metrics?.heartbeat(answer.status);
      return answer;
    },
    onError,
    // Presence outlives a few missed heartbeats (its TTL is the grace period); reports are never shed.
    shed: { maxPending: deps.heartbeatMaxPending ?? 1_000, onShed: () => deps.metrics?.heartbeat("shed") },
  });
  return {
    async stop() {
      await Promise.all([reports.stop(), heartbeats.stop()]);
    },
  };
}
