import { createLogger, httpEnv, installShutdown, loadConfig, loadTokens } from "@molt/runtime";
import { z } from "zod";
import { buildApp } from "./routing/app.js";

const Config = z.object({
  ...httpEnv,
  MOLT_ACTION_URL: z.url(),
  MOLT_PROJECTOR_URL: z.url(),
  MOLT_PACKAGE_REPO_URL: z.url(),
  MOLT_AUDIT_URL: z.url(),
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
});
installShutdown(logger, [() => app.close()]);
const url = await app.listen({ host: config.MOLT_HTTP_HOST, port: config.MOLT_HTTP_PORT });
logger.info({ url }, "listening");
