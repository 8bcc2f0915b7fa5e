export { startNatsServer, natsServerBinary, freePort, type NatsServer } from "./nats-server.js";
export { waitFor } from "./wait.js";
export { startSystem, startProcess, type System, type SystemOptions, type AgentSpec, type RunningProcess, type ServiceName, type ProcessSpec } from "./system.js";
export { buildPackage } from "./packages.js";
export { rawTar, type RawEntry } from "./tar.js";
export { startFeedbackStandIn, type FeedbackStandIn } from "./feedback.js";
export { buildAgentBundle, type BuiltAgentBundle } from "./agent-bundle.js";
export { escapingSymlinkChain } from "./attacks.js";
export { maxInFlight } from "./replay.js";
