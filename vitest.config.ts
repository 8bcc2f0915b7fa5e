import { defineConfig } from "vitest/config";

// Two projects: fast unit/integration tests next to the code, and cross-service
// scenario and fault suites under test/, which start many processes and run serially.
// Tests log at warn or quieter (MOLT_TEST_LOG_LEVEL to see more); processes the testkit starts log
// at info into their own files (MOLT_CHILD_LOG_LEVEL).
const env = { MOLT_LOG_LEVEL: process.env["MOLT_TEST_LOG_LEVEL"] ?? "warn" };
// Builds the agent bundle once per run: the upgrade clients tests launch start from it (MOLT_CLIENT_BUNDLE;
// MOLT_TEST_CLIENT_BUNDLE=0 runs them from sources under tsx).
const globalSetup = ["packages/testkit/src/client-bundle.ts"];

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          env,
          globalSetup,
          include: ["contracts/src/**/*.test.ts", "packages/*/src/**/*.test.ts", "services/*/src/**/*.test.ts"],
          testTimeout: 30_000,
          hookTimeout: 60_000,
          pool: "forks",
          maxWorkers: 2,
        },
      },
      {
        test: {
          name: "scenario",
          env,
          // Services start from one-file builds made once per run (MOLT_TEST_SERVICE_BUNDLES=0: from sources).
          globalSetup: [...globalSetup, "packages/testkit/src/service-bundles.ts"],
          include: ["test/**/*.test.ts"],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          pool: "forks",
          fileParallelism: false,
        },
      },
    ],
  },
});
