import type { NatsConnection } from "@nats-io/transport-node";
import { type JournalEntry, type StepReport } from "@molt/contracts";
import { waitFor } from "@molt/testkit";
import { kvDesiredSource } from "../agent/desired.js";
import { createHostAgent } from "../agent/host-agent.js";
import { isTerminal } from "../host/task-files.js";
import type { Log } from "../log.js";
import { testRunner } from "./runner.js";

/**
 * The agent restarting on a host whose client died: it finds the dead client's task, recovers the
 * component, and reports the final events, which `reports` (a feedback stand-in's inbox) collects.
 * Returns the task's reported entries once one is terminal; the agent is stopped again.
 */
export async function restartAgent(opts: {
  nc: NatsConnection;
  reports: readonly StepReport[];
  log: Log;
  hostId: string;
  root: string;
  component: string;
  taskId: string;
  timeoutMs?: number;
}): Promise<JournalEntry[]> {
  const agent = createHostAgent({
    nc: opts.nc,
    desired: kvDesiredSource(opts.nc),
    runner: testRunner({ log: opts.log }),
    log: opts.log,
    hostId: opts.hostId,
    root: opts.root,
    components: [opts.component],
    labels: {},
    seeds: [],
    agentVersion: "0.1.0-test",
    timing: { pollMs: 60_000, heartbeatMs: 60_000, reportRetryMs: 50, reportTimeoutMs: 500, journalPollMs: 50 },
  });
  await agent.start();
  try {
    return await waitFor(
      "the final event reported",
      () => {
        const got = opts.reports.filter((r) => r.taskId === opts.taskId).flatMap((r) => r.entries);
        return got.some(isTerminal) ? got : undefined;
      },
      { timeoutMs: opts.timeoutMs ?? 20_000 },
    );
  } finally {
    await agent.stop();
  }
}
