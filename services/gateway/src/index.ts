import { DASHBOARD_DIR } from "@molt/dashboard";
import { createLogger, httpEnv, installShutdown, loadConfig, loadTokens, startTracing } from "@molt/runtime";
import { z } from "zod";
import { buildApp, DEFAULT_BODY_LIMITS } from "./routing/app.js";

const Config = z.object({
  ...httpEnv,
  MOLT_ACTION_URL: z.url(),
  MOLT_PROJECTOR_URL: z.url(),
  MOLT_PACKAGE_REPO_URL: z.url(),
  MOLT_AUDIT_URL: z.url(),
  /** The release-events service (webhooks, /asyncapi.json); unset, those routes answer 404. */
  MOLT_RELEASE_EVENTS_URL: z.url().optional(),
  /** Where the built dashboard is (default: the dashboard package's dist). */
  MOLT_DASHBOARD_DIR: z.string().optional(),
  /** The same variable package-repo reads: uploads over it are refused here already. */
  MOLT_MAX_PACKAGE_BYTES: z.coerce.number().int().positive().default(DEFAULT_BODY_LIMITS.packages),
  MOLT_MAX_BODY_BYTES: z.coerce.number().int().positive().default(DEFAULT_BODY_LIMITS.json),
});

const config = loadConfig(Config);
const logger = createLogger("gateway");
// OpenTelemetry: on only when OTEL_EXPORTER_OTLP_ENDPOINT is set; spans flushed at shutdown (closed last).
const stopTracing = await startTracing("gateway");
const tokens = loadTokens(process.env, { onReload: (err, size) => (err ? logger.error({ err }, "token file reload failed; the previous tokens stay") : logger.info({ tokens: size }, "tokens reloaded")) });
const app = buildApp({
  logger,
  tokens,
  upstreams: {
    action: config.MOLT_ACTION_URL,
    projector: config.MOLT_PROJECTOR_URL,
    packageRepo: config.MOLT_PACKAGE_REPO_URL,
    audit: config.MOLT_AUDIT_URL,
    ...(config.MOLT_RELEASE_EVENTS_URL ? { releaseEvents: config.MOLT_RELEASE_EVENTS_URL } : {}),
  },
  dashboardDir: config.MOLT_DASHBOARD_DIR ?? DASHBOARD_DIR,
  bodyLimits: { json: config.MOLT_MAX_BODY_BYTES, packages: config.MOLT_MAX_PACKAGE_BYTES },
});
installShutdown(logger, [stopTracing, () => app.close(), () => tokens.close()]);
const url = await app.listen({ host: config.MOLT_HTTP_HOST, port: config.MOLT_HTTP_PORT });
logger.info({ url }, "listening");
