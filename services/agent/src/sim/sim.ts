import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import type { DesiredSource } from "../agent/desired.js";
import { createHostAgent, type HostAgent, type HostAgentTiming } from "../agent/host-agent.js";
import { inProcessRunner } from "../agent/runners.js";
import type { Fetch } from "../client/download.js";
import { setFsync } from "../host/durable.js";
import type { Seed } from "../host/layout.js";
import type { Log } from "../log.js";
import type { AgentMetrics } from "../agent/metrics.js";

export interface SimDeps {
  readonly nc: NatsConnection;
  readonly desired: DesiredSource;
  readonly log: Log;
  readonly hostIds: readonly string[];
  /** Each host gets `<rootBase>/<hostId>/` as its host root. */
  readonly rootBase: string;
  readonly components: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
  readonly seeds: readonly Seed[];
  readonly agentVersion: string;
  readonly timing: Omit<HostAgentTiming, "startDelayMs" | "journalPollMs">;
  readonly stepDelayMs: number;
  /**
   * Whether the simulated hosts fsync what they write (default false): they share one real disk,
   * and a simulation models no power loss. Every file is still written, in the same order.
   */
  readonly fsync?: boolean;
  readonly mirror?: string;
  readonly fetch?: Fetch;
  /** `MOLT_SIM_FAULT_FILE`: hosts and a step to fail, re-read at every step. */
  readonly faultFile?: string;
  readonly metrics?: AgentMetrics;
}

export interface Sim {
  readonly hosts: readonly HostAgent[];
  stop(): Promise<void>;
}

/**
 * Many hosts in one process on one NATS connection: the same host agent per host, each with its
 * own root, and the same step machine run in-process. Starts are staggered over one heartbeat
 * interval so a thousand hosts do not heartbeat or read KV in lockstep.
 */
export async function startSim(deps: SimDeps): Promise<Sim> {
  setFsync(deps.fsync ?? false);
  const runner = inProcessRunner({
    stepDelayMs: deps.stepDelayMs,
    ...(deps.mirror ? { mirror: deps.mirror } : {}),
    ...(deps.fetch ? { fetch: deps.fetch } : {}),
    ...(deps.faultFile ? { faultFile: deps.faultFile } : {}),
  });
  const count = deps.hostIds.length;
  const hosts = deps.hostIds.map((hostId, i) =>
    createHostAgent({
      nc: deps.nc,
      desired: deps.desired,
      runner,
      log: deps.log.child({ hostId }),
      hostId,
      root: join(deps.rootBase, hostId),
      components: deps.components,
      labels: deps.labels,
      seeds: deps.seeds,
      agentVersion: deps.agentVersion,
      ...(deps.metrics ? { metrics: deps.metrics } : {}),
      timing: {
        ...deps.timing,
        // In-process runs poke the forwarder on every append; the poll is only a safety net.
        journalPollMs: 1_000,
        // With zero step delay a task journals its dozen entries within milliseconds: one or two
        // reports (commits) instead of four or five, for feedback and every consumer of the stream.
        reportLingerMs: deps.timing.reportLingerMs ?? 25,
        // What each host finds under its root is reused for a minute (and re-read after each of
        // its tasks): listing the root and reading links every heartbeat and nudge was ~6 % of
        // the simulator's CPU at one heartbeat per 10 s per host.
        rootScanMs: deps.timing.rootScanMs ?? 60_000,
        startDelayMs: Math.floor((i * deps.timing.heartbeatMs) / Math.max(1, count)),
      },
    }),
  );
  // Bounded concurrency: starting means seeding and scanning each root, which is file I/O.
  for (let i = 0; i < hosts.length; i += 50) await Promise.all(hosts.slice(i, i + 50).map((h) => h.start()));
  deps.log.info({ hosts: count }, "simulated hosts started");
  return {
    hosts,
    async stop() {
      await Promise.all(hosts.map((h) => h.stop()));
    },
  };
}
