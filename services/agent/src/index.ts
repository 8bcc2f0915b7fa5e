/**
 * Composition root of the host agent: `node --import tsx services/agent/src/index.ts [--sim N]`.
 * Reads its config from the environment (see README), connects to NATS, and runs one host agent
 * (spawning an upgrade client process per task) or, with MOLT_SIM / --sim N, N simulated hosts.
 */
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { connectNats, createLogger, hostInboxPrefix, installShutdown, loadConfig, metricsFromEnv, natsSecurityFromEnv, startTracing } from "@molt/runtime";
import { z } from "zod";
import { loadAgentConfigFile } from "./agent/components.js";
import { AgentEnv, argvOverrides, simHostIds } from "./agent/config.js";
import { kvDesiredSource } from "./agent/desired.js";
import { createHostAgent } from "./agent/host-agent.js";
import { agentMetrics } from "./agent/metrics.js";
import { processRunner } from "./agent/runners.js";
import { startSim } from "./sim/sim.js";

export { createHostAgent, type HostAgent, type HostAgentDeps, type HostAgentTiming } from "./agent/host-agent.js";
export { kvDesiredSource, type DesiredSource, type DesiredRead } from "./agent/desired.js";
export { processRunner, inProcessRunner, type TaskRunner, type ClientRun, type ClientExit } from "./agent/runners.js";
export { startSim, type Sim, type SimDeps } from "./sim/sim.js";
export { runTask, type RunTaskOptions, type Verdict } from "./client/run-task.js";
export { machineFor, type StepMachine, type StepSpec, type StepId } from "./client/machine.js";
export { AgentConfigFile, ComponentConfig, loadAgentConfigFile } from "./agent/components.js";
export { AgentEnv, simHostIds } from "./agent/config.js";

const agentVersion = z
  .object({ version: z.string() })
  .parse(JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"))).version;

export async function main(argv: string[], env: NodeJS.ProcessEnv): Promise<void> {
  const config = loadConfig(AgentEnv, { ...env, ...argvOverrides(argv) });
  const log = createLogger("agent");
  // OpenTelemetry: on only when OTEL_EXPORTER_OTLP_ENDPOINT is set (the SDK is loaded only then).
  const stopTracing = await startTracing("agent");
  const sim = config.MOLT_SIM;
  // A real host is configured by its file (validated whole at start); env stays for --sim and demos.
  const file = config.MOLT_CONFIG !== undefined && !sim ? await loadAgentConfigFile(config.MOLT_CONFIG) : undefined;
  const singleHost = sim ? undefined : (file?.hostId ?? config.MOLT_HOST_ID);
  const nc = await connectNats({
    url: file?.nats.urls.join(",") ?? config.MOLT_NATS_URL,
    name: singleHost ? `molt-agent-${singleHost}` : `molt-agent-sim-${config.MOLT_SIM_PREFIX}${sim}`,
    ...(file
      ? { credsFile: file.nats.credentials, caFile: file.nats.ca, certFile: file.nats.cert, keyFile: file.nats.key }
      : natsSecurityFromEnv(config)),
    // A host's identity may receive replies only on its own inbox prefix.
    ...(singleHost ? { inboxPrefix: hostInboxPrefix(singleHost) } : {}),
  });
  const desired = kvDesiredSource(nc);
  const timing = {
    pollMs: config.MOLT_POLL_MS,
    heartbeatMs: config.MOLT_HEARTBEAT_MS,
    reportRetryMs: config.MOLT_REPORT_RETRY_MS,
    reportTimeoutMs: config.MOLT_REPORT_TIMEOUT_MS,
    keepTasks: config.MOLT_KEEP_TASKS,
    ...(config.MOLT_REPORT_LINGER_MS !== undefined ? { reportLingerMs: config.MOLT_REPORT_LINGER_MS } : {}),
  };
  const version = config.MOLT_AGENT_VERSION ?? agentVersion;
  const labels = file ? { ...file.labels, ...(file.cluster ? { cluster: file.cluster } : {}) } : config.MOLT_LABELS;
  const mirror = file?.packageMirror ?? config.MOLT_PACKAGE_MIRROR;
  // Counted only when served: an agent without MOLT_METRICS_PORT keeps no registry.
  const served = config.MOLT_METRICS_PORT !== undefined ? await metricsFromEnv("agent", config, log) : undefined;
  const common = {
    ...(served ? { metrics: agentMetrics(served.registry) } : {}),
    nc,
    desired,
    components: config.MOLT_COMPONENTS,
    labels,
    seeds: config.MOLT_SEED,
    agentVersion: version,
  };
  let stop: () => Promise<void>;
  if (sim) {
    const s = await startSim({
      ...common,
      log,
      hostIds: simHostIds(config.MOLT_SIM_PREFIX, sim),
      rootBase: config.MOLT_ROOT ?? "",
      timing,
      stepDelayMs: config.MOLT_SIM_STEP_DELAY_MS,
      fsync: config.MOLT_SIM_FSYNC,
      ...(mirror ? { mirror } : {}),
      ...(config.MOLT_SIM_FAULT_FILE ? { faultFile: config.MOLT_SIM_FAULT_FILE } : {}),
    });
    stop = () => s.stop();
  } else {
    const hostId = file?.hostId ?? config.MOLT_HOST_ID;
    const root = file?.root ?? config.MOLT_ROOT;
    if (!hostId || !root) throw new Error("MOLT_HOST_ID and MOLT_ROOT are required"); // the schema already says so; this narrows the types
    const hostLog = log.child({ hostId });
    const agent = createHostAgent({
      ...common,
      log: hostLog,
      hostId,
      root,
      componentConfigs: file?.components ?? [],
      trustedKeys: file?.trustedKeys ?? [],
      localHeartbeat: true,
      runner: processRunner({ log: hostLog, ...(mirror ? { mirror } : {}), ...(config.MOLT_CLIENT_BUNDLE ? { clientBundle: config.MOLT_CLIENT_BUNDLE } : {}) }),
      timing: { ...timing, journalPollMs: 50 },
    });
    await agent.start();
    log.info({ hostId, root, agentVersion: version, config: config.MOLT_CONFIG ?? null }, "agent started");
    stop = () => agent.stop();
  }
  // Reverse order on shutdown: stop the agent first (it still needs the connection), then drain.
  installShutdown(log, [stopTracing, async () => served?.close(), () => nc.drain(), stop]);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2), process.env).catch((err: unknown) => {
    process.stderr.write(`agent failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
