import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildAgentBundle } from "./agent-bundle.js";

/**
 * vitest global set-up: builds the agent bundle (`pnpm build:agent`, the file hosts run) once per
 * run and names it in MOLT_CLIENT_BUNDLE, which the test processes and the agents they start
 * inherit: every upgrade client a test launches from sources is then `node <bundle> client …`
 * (about 0.2 CPU-seconds to start) instead of client/main.ts under tsx (about 0.9), and the unit
 * tests launch a few hundred. MOLT_TEST_CLIENT_BUNDLE=0 keeps the clients on tsx and sources.
 */
export default async function setup(): Promise<(() => Promise<void>) | undefined> {
  if (process.env["MOLT_TEST_CLIENT_BUNDLE"] === "0" || process.env["MOLT_CLIENT_BUNDLE"]) return undefined;
  const dir = await mkdtemp(join(tmpdir(), "molt-client-bundle-"));
  const { outfile } = await buildAgentBundle(join(dir, "molt-agent.mjs"));
  process.env["MOLT_CLIENT_BUNDLE"] = outfile;
  return async () => {
    delete process.env["MOLT_CLIENT_BUNDLE"];
    await rm(dir, { recursive: true, force: true });
  };
}
