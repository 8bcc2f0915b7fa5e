import { describeIssues, PlanPreviewRequest, subjects, type PlanAnswer } from "@molt/contracts";
import { respond, type Logger, type NatsConnection, type Responder } from "@molt/runtime";
import type { Plan } from "../planning/plan.js";
import type { PlanRequest } from "../engine/plan.js";

const LIST = 100;

export function toPreview(plan: Plan): PlanAnswer {
  return {
    status: "ok",
    plan: {
      planned: plan.batches.reduce((n, b) => n + b.hosts.length, 0),
      batches: plan.batches.map((b) => ({ index: b.index, kind: b.kind, size: b.hosts.length, hosts: b.hosts.slice(0, LIST).map((h) => h.hostId) })),
      skipped: plan.skipped.length,
      skips: plan.skipped.slice(0, LIST),
    },
  };
}

/** Answers `molt.allocator.plan` with what the same pure planner would record, for dry runs and the empty-plan check. */
export function planPreviews(nc: NatsConnection, logger: Logger, compute: (r: PlanRequest) => Promise<Plan>): Responder {
  return respond(nc, {
    subject: subjects.planPreview,
    queue: "molt-allocator",
    concurrency: 4,
    logger,
    async handle(msg): Promise<PlanAnswer> {
      const parsed = PlanPreviewRequest.safeParse(msg.json());
      if (!parsed.success) return { status: "error", reason: describeIssues(parsed.error) };
      return toPreview(await compute(parsed.data));
    },
    onError: (err): PlanAnswer => ({ status: "error", reason: (err as Error).message }),
  });
}
