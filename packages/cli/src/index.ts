import { fileURLToPath } from "node:url";

export { runCli, buildProgram, type CliIo } from "./program.js";
export { runCliCaptured } from "./captured.js";
export { WATCH_EXIT } from "./commands/watch.js";
export { AUDIT_BROKEN_EXIT } from "./commands/audit.js";

/** The `molt` entry, for running it as its own process (`node --import tsx <bin> …`). */
export const CLI_BIN = fileURLToPath(new URL("./bin.ts", import.meta.url));
