import type { Db } from "@molt/db";
import type { App } from "@molt/runtime";
import { verifyChain } from "./verify.js";

export function logRoutes(app: App, deps: { db: Db }): void {
  app.get("/v1/audit/verify", () => verifyChain(deps.db));
}
