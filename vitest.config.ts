import { defineConfig } from "vitest/config";

// Two projects: fast unit/integration tests next to the code, and cross-service
// scenario and fault suites under test/, which start many processes and run serially.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
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
