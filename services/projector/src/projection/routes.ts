import type { App } from "@molt/runtime";
import type { ProjectionRunner } from "./runner.js";

export function statusRoutes(app: App, deps: { runner: ProjectionRunner }): void {
  // Tests, the demo and dashboards poll this to know the views have caught up with an append.
  app.get("/v1/projector/status", () => deps.runner.status());
  app.get("/v1/projector/dead-letters", async () => ({ deadLetters: await deps.runner.deadLetters() }));
}
