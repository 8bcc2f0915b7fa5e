/**
 * The entry of the bundled agent, `dist/molt-agent.mjs` (`pnpm build:agent`): one file that is
 * both the agent and its upgrade client, so a host needs nothing but Node ≥ 20 and a
 * self-upgrade swaps one artifact.
 *
 *   node molt-agent.mjs [--sim N]                       the agent (configured as index.ts says)
 *   node molt-agent.mjs client --root R --task T [...]  the upgrade client for one task; the
 *                                                       agent starts it so (see processRunner)
 *
 * From sources, run index.ts and client/main.ts directly as before; this file is for the bundle.
 * Both branches import lazily, so the client never loads the agent's modules and the reverse.
 */
import { fileURLToPath } from "node:url";

if (process.argv[2] === "client") {
  // client/main.ts parses process.argv.slice(2) strictly: the sub-command is not one of its options.
  process.argv.splice(2, 1);
  await import("./client/main.js");
} else {
  // index.ts starts itself when it is the main module (its import.meta.url is argv[1]'s URL). In
  // the bundle every module shares the bundle's URL; argv[1] is made exactly that URL's path, so
  // the agent also starts when the bundle is run through a symlink (argv[1] is not resolved).
  process.argv[1] = fileURLToPath(import.meta.url);
  await import("./index.js");
}
