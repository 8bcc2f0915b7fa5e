import { PlanAnswer, subjects, type PlanPreview, type PlanPreviewRequest } from "@molt/contracts";
import type { Logger, NatsConnection } from "@molt/runtime";
import { HttpError } from "@molt/runtime";

export interface PlanPreviews {
  /** The allocator's plan for a request, or null when no allocator answers in time. */
  preview(request: PlanPreviewRequest): Promise<PlanPreview | null>;
}

/** Plan previews from the allocator over NATS request/reply (`molt.allocator.plan`). */
export function planPreviews(nc: NatsConnection, logger: Logger, timeoutMs = 10_000): PlanPreviews {
  return {
    async preview(request) {
      let raw: unknown;
      try {
        raw = (await nc.request(subjects.planPreview, JSON.stringify(request), { timeout: timeoutMs })).json();
      } catch (err) {
        // No allocator (yet): the request is still recorded; the allocator fails an empty plan with its reasons.
        logger.warn({ err }, "no plan preview from the allocator");
        return null;
      }
      const answer = PlanAnswer.safeParse(raw);
      if (!answer.success) throw new HttpError(502, "bad_gateway", "the allocator answered the plan preview with something unreadable");
      if (answer.data.status === "error") throw new HttpError(400, "validation", `the plan cannot be computed: ${answer.data.reason}`);
      return answer.data.plan;
    },
  };
}
