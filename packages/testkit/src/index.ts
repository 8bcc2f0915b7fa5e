export { startNatsServer, natsServerBinary, freePort, type NatsServer } from "./nats-server.js";
export { waitFor } from "./wait.js";
