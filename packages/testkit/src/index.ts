export { startNatsServer, natsServerBinary, freePort, type NatsServer, type SecureNatsServer, type SecureBus, type ServerTls, type NatsServerOptions } from "./nats-server.js";
export { waitFor } from "./wait.js";
export { startSystem, startProcess, provisionBus, hostCredsFile, type System, type SystemOptions, type AgentSpec, type RunningProcess, type ServiceName, type ProcessSpec } from "./system.js";
export { buildPackage } from "./packages.js";
export { rawTar, type RawEntry } from "./tar.js";
export { startFeedbackStandIn, type FeedbackStandIn } from "./feedback.js";
export { buildAgentBundle, type BuiltAgentBundle } from "./agent-bundle.js";
export { escapingSymlinkChain, longEscapingSymlinkChain } from "./attacks.js";
export { maxInFlight } from "./replay.js";
