export { slotRepository, type SlotRepository, type LoadedSlot, type SlotOutcome } from "./slots.js";
export { deploymentRepository, type DeploymentRepository, type LoadedDeployment } from "./deployments.js";
export { retryOnConflict } from "./retry.js";
