import { encodeHostToken, StepReport, type ReportAnswer, describeIssues } from "@molt/contracts";
import type { SlotRepository } from "@molt/aggregates";

/**
 * A step report from a host's agent → slot step events. The host named in the report must be
 * the host the subject (and, with per-host credentials, the connection) belongs to; a report
 * that does not parse, or does not fit the slot's state, is refused and appends nothing.
 */
export async function recordReport(
  deps: { slots: SlotRepository },
  input: { subjectHostToken: string; payload: unknown; receivedAt: string },
): Promise<ReportAnswer> {
  const parsed = StepReport.safeParse(input.payload);
  if (!parsed.success)
    return { status: "refused", reason: `invalid report: ${describeIssues(parsed.error)}` };
  const report = parsed.data;
  if (encodeHostToken(report.hostId) !== input.subjectHostToken)
    return { status: "refused", reason: `host mismatch: report for ${report.hostId} sent on another host's subject` };
  const result = await deps.slots.record(report, {
    now: input.receivedAt,
    actor: `host:${report.hostId}`,
    correlationId: report.taskId,
  });
  if (result.status === "accepted") return { status: "accepted" };
  return result;
}
