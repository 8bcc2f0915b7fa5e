import { defineConfig } from "vitest/config";
import { BaseSequencer, type TestSpecification } from "vitest/node";

// Two projects: fast unit/integration tests next to the code, and cross-service
// scenario and fault suites under test/, which start many processes and run serially.
// Tests log at warn or quieter (MOLT_TEST_LOG_LEVEL to see more); processes the testkit starts log
// at info into their own files (MOLT_CHILD_LOG_LEVEL).
const env = { MOLT_LOG_LEVEL: process.env["MOLT_TEST_LOG_LEVEL"] ?? "warn" };
// Builds the agent bundle once per run: the upgrade clients tests launch start from it (MOLT_CLIENT_BUNDLE;
// MOLT_TEST_CLIENT_BUNDLE=0 runs them from sources under tsx).
const globalSetup = ["packages/testkit/src/client-bundle.ts"];

/**
 * The unit files that take longest (30-65 s each), started first. Vitest orders files by their
 * last durations once it has run them; in a fresh clone it has none, and CI's first unit line
 * (Node 20) ended on a long file running alone: 177-233 s, against 162-197 s for the next two lines.
 */
const SLOWEST = [
  "services/projector/src/projector.test.ts",
  "services/agent/src/agent/crash-recovery.test.ts",
  "services/release-events/src/release-events.test.ts",
  "services/agent/src/client/managed.test.ts",
  "services/projector/src/deployments/run.test.ts",
  "services/audit/src/audit.test.ts",
  "services/agent/src/client/client.test.ts",
];
class SlowestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const rank = (f: TestSpecification) => {
      const i = SLOWEST.findIndex((p) => f.moduleId.endsWith(p));
      return i < 0 ? SLOWEST.length : i;
    };
    const sorted = await super.sort(files);
    return sorted.map((f, i) => ({ f, i })).sort((a, b) => rank(a.f) - rank(b.f) || a.i - b.i).map(({ f }) => f);
  }
}

export default defineConfig({
  test: {
    sequence: { sequencer: SlowestFirst },
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
