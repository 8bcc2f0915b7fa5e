export { loadConfig, ConfigError, natsEnv, httpEnv } from "./config.js";
export { createLogger, type Logger } from "./logger.js";
export { installShutdown, type Closer } from "./shutdown.js";
export { connectNats, ensureBucket, natsSecurityOptions, natsSecurityFromEnv, type NatsConnection, type NatsSecurity } from "./nats.js";
export {
  BusAuthority,
  HostIssuer,
  createBusAuthority,
  hostIssuer,
  serverAuthConfig,
  servicePermissions,
  hostPermissions,
  hostPermissionsTemplate,
  hostInboxPrefix,
  userCreds,
  issueHostCreds,
  revokeUsers,
  type ServiceIdentity,
  type BusUser,
  type IssuedCreds,
} from "./bus-auth.js";
export { bearerAuth, loadTokens, parseTokens, hashToken, hasRole, Role, type Principal, type TokenMap, type TokenLookup, type LoadTokensOptions } from "./auth.js";
export { HttpError, statusForCode, errorBody, type ErrorBody } from "./errors.js";
export { createHttpApp, rateLimitsFromEnv, type App, type RateLimits } from "./http.js";
export { commandLog, commandAudit, type CommandLog, type AuditNote } from "./commands.js";
export { checkQueryString, parseJsonBody, hasUnstorableText, jsonDepth, MAX_JSON_DEPTH } from "./edge.js";
export { respond, type Responder } from "./responder.js";
export { createMetrics, metricsRoutes, metricsEnv, serveMetrics, metricsFromEnv, stepDurations, TASK_END_OUTCOME, type MetricsServer } from "./metrics.js";
export { tracer, tracingEnabled, startTracing, contextFrom, contextFromNats, injectTrace, inSpan, context, propagation, trace, SpanKind, type Context, type Span } from "./tracing.js";
