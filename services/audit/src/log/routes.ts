import type { AuditVerification } from "@molt/contracts";
import type { Db } from "@molt/db";
import type { App } from "@molt/runtime";
import { z } from "zod";
import { verifyChain, type VerifyOptions, type VerifyResult } from "./verify.js";

/**
 * `GET /v1/audit/verify`: admin only and rate-limited (it reads the whole table on a full pass).
 * Incremental: it starts from the last entry a previous pass verified (held in memory, so a
 * restart makes the first pass full) and always compares the signed anchors; `?full=true`
 * recomputes every entry.
 */
export function logRoutes(app: App, deps: { db: Db; verifyOptions: () => Promise<Omit<VerifyOptions, "from">> }): void {
  let verified: { id: number; hash: string } | null = null;
  let running: Promise<VerifyResult> | null = null;
  const run = async (full: boolean): Promise<VerifyResult> => {
    const result = await verifyChain(deps.db, { ...(await deps.verifyOptions()), from: full ? null : verified });
    if (result.ok && result.headId > 0) {
      const head = await deps.db.query<{ hash: string }>("SELECT hash FROM audit_log WHERE id = $1", [result.headId]);
      verified = head.rows[0] ? { id: result.headId, hash: head.rows[0].hash } : null;
    } else if (!result.ok) verified = null;
    return result;
  };
  app.get(
    "/v1/audit/verify",
    { config: { role: "admin", expensive: true }, schema: { querystring: z.object({ full: z.enum(["true", "false"]).optional() }).strict() } },
    async (req): Promise<AuditVerification> => {
      // One pass at a time: concurrent callers share it rather than each scanning the table.
      while (running) await running.catch(() => undefined);
      running = run(req.query.full === "true");
      try {
        return await running;
      } finally {
        running = null;
      }
    },
  );
}
