import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const run = promisify(execFile);

/**
 * vitest global set-up of the scenario project: builds every service as one file once per run
 * (`scripts/build-services.ts`, ~13 s here) and names the folder in MOLT_SERVICE_BUNDLES, which the
 * test kit's `startProcess` then starts services from (`node <dir>/<name>.mjs`, ~0.2 CPU-seconds
 * each, against ~0.9 under tsx; a scenario bed starts eight, and the suite ~40 beds and restarts).
 * MOLT_TEST_SERVICE_BUNDLES=0 keeps services on tsx and sources.
 */
export default async function setup(): Promise<(() => Promise<void>) | undefined> {
  if (process.env["MOLT_TEST_SERVICE_BUNDLES"] === "0" || process.env["MOLT_SERVICE_BUNDLES"]) return undefined;
  const dir = await mkdtemp(join(tmpdir(), "molt-service-bundles-"));
  await run(process.execPath, ["--import", "tsx", join(repoRoot, "scripts", "build-services.ts"), "--outdir", dir], { cwd: repoRoot });
  process.env["MOLT_SERVICE_BUNDLES"] = dir;
  return async () => {
    delete process.env["MOLT_SERVICE_BUNDLES"];
    await rm(dir, { recursive: true, force: true });
  };
}
