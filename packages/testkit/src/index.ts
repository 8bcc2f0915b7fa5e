export { startNatsServer, natsServerBinary, freePort, type NatsServer } from "./nats-server.js";
export { waitFor } from "./wait.js";
export { startSystem, startProcess, type System, type SystemOptions, type AgentSpec, type RunningProcess, type ServiceName } from "./system.js";
export { buildPackage } from "./packages.js";
export { rawTar, type RawEntry } from "./tar.js";
