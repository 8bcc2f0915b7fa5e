import { OperatorCommandAnswer, type OperatorCommandName } from "@molt/contracts";
import type { Context } from "../context.js";
import { idempotencyKey } from "../http.js";

/** approve | pause | resume | cancel | retry | rollback: one POST, its answer printed (rollback answers with the new deployment). */
export async function operate(ctx: Context, command: OperatorCommandName, id: string, opts: { reason?: string; idempotencyKey?: string }): Promise<void> {
  const answer = await (await ctx.gateway()).post(`/v1/deployments/${encodeURIComponent(id)}/${command}`, OperatorCommandAnswer, {
    body: opts.reason !== undefined ? { reason: opts.reason } : {},
    idempotencyKey: opts.idempotencyKey ?? idempotencyKey(`cli-${command}`),
  });
  if (ctx.out.json) return ctx.out.data(answer);
  if (command === "rollback") ctx.out.line(`${ctx.out.c.green("✓")} rollback of ${id} accepted as deployment ${ctx.out.c.bold(answer.deploymentId)} (molt watch ${answer.deploymentId})`);
  else ctx.out.line(`${ctx.out.c.green("✓")} ${command}: deployment ${answer.deploymentId} is ${answer.status}`);
}
