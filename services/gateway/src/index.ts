import { DASHBOARD_DIR } from "@molt/dashboard";
import { createLogger, httpEnv, installShutdown, loadConfig, loadTokens } from "@molt/runtime";
import { z } from "zod";
import { buildApp } from "./routing/app.js";

const Config = z.object({
  ...httpEnv,
  MOLT_ACTION_URL: z.url(),
  MOLT_PROJECTOR_URL: z.url(),
  MOLT_PACKAGE_REPO_URL: z.url(),
  MOLT_AUDIT_URL: z.url(),
  /** Where the built dashboard is (default: the dashboard package's dist). */
  MOLT_DASHBOARD_DIR: z.string().optional(),
});

const config = loadConfig(Config);
const logger = createLogger("gateway");
const app = buildApp({
  logger,
  tokens: loadTokens(),
  upstreams: {
    action: config.MOLT_ACTION_URL,
    projector: config.MOLT_PROJECTOR_URL,
    packageRepo: config.MOLT_PACKAGE_REPO_URL,
    audit: config.MOLT_AUDIT_URL,
  },
  dashboardDir: config.MOLT_DASHBOARD_DIR ?? DASHBOARD_DIR,
});
installShutdown(logger, [() => app.close()]);
const url = await app.listen({ host: config.MOLT_HTTP_HOST, port: config.MOLT_HTTP_PORT });
logger.info({ url }, "listening");
