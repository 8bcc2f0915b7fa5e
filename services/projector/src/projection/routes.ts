import { HttpError, type App } from "@molt/runtime";
import { RebuildBusyError, type ProjectionRunner } from "./runner.js";

export function statusRoutes(app: App, deps: { runner: ProjectionRunner }): void {
  // Tests, the demo and dashboards poll this to know the views have caught up with an append.
  app.get("/v1/projector/status", () => deps.runner.status());
  app.get("/v1/projector/dead-letters", async () => ({ deadLetters: await deps.runner.deadLetters() }));
  // Admin only, and audited (a write): replays the stream into fresh tables and swaps them in;
  // answers once the new views are live. 409 while another rebuild runs.
  app.post("/v1/projector/rebuild", { config: { role: "admin", auditKind: "projector-rebuild" } }, async (req) => {
    req.audit.target = "projector";
    try {
      return await deps.runner.rebuild();
    } catch (err) {
      if (err instanceof RebuildBusyError) throw new HttpError(409, "conflict", err.message);
      throw err;
    }
  });
}
