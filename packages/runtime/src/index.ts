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
  hostInboxPrefix,
  userCreds,
  issueHostCreds,
  revokeUsers,
  type ServiceIdentity,
  type BusUser,
  type IssuedCreds,
} from "./bus-auth.js";
export { bearerAuth, loadTokens, parseTokens, hasRole, Role, type Principal, type TokenMap } from "./auth.js";
export { HttpError, statusForCode } from "./errors.js";
export { createHttpApp, type App } from "./http.js";
export { respond, type Responder } from "./responder.js";
export { createMetrics, metricsRoutes } from "./metrics.js";
