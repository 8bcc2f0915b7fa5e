import { processRunner, type TaskRunner } from "../agent/runners.js";

/**
 * The agent's process runner as its tests use it: clients start from the bundle vitest's global
 * set-up built (MOLT_CLIENT_BUNDLE), or from sources when there is none.
 */
export function testRunner(opts: Parameters<typeof processRunner>[0]): TaskRunner {
  const bundle = process.env["MOLT_CLIENT_BUNDLE"];
  return processRunner({ ...(bundle ? { clientBundle: bundle } : {}), ...opts });
}
