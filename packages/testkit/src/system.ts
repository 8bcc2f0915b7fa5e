import { execFile, spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, type WriteStream } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { TrustedKeyConfig } from "@molt/contracts";
import { hostIssuer, issueHostCreds, type ServiceIdentity } from "@molt/runtime";
import { freePort, type SecureBus } from "./nats-server.js";
import { seedPglite } from "./pglite-template.js";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");

export type ServiceName = "gateway" | "action" | "allocator" | "package-repo" | "feedback" | "projector" | "audit" | "release-events" | "agent";

export interface RunningProcess {
  readonly name: string;
  readonly proc: ChildProcess;
  readonly logFile: string;
  /** The last lines it printed (stdout and stderr), for failure messages. */
  tail(): string;
  /** SIGTERM, then SIGKILL after 5 s. */
  stop(): Promise<void>;
  kill(): Promise<void>;
}

export interface AgentSpec {
  hostId: string;
  /** e.g. `metrics-agent@1.0.0` */
  seed?: string;
  env?: Record<string, string>;
}

export interface SystemOptions {
  /** A `secure` nats-server or cluster: every process connects with its own identity, none anonymously. */
  nats: { readonly bus: SecureBus };
  dataDir: string;
  /** token → actor/role; written to a token file every service reads. */
  tokens: Record<string, { actor: string; role: "viewer" | "operator" | "admin" }>;
  allocatorReplicas?: number;
  agents?: AgentSpec[];
  /** One agent process simulating this many hosts (`--sim`). */
  sim?: { count: number; prefix?: string; seed?: string; stepDelayMs?: number };
  /**
   * Publisher keys package-repo trusts (`MOLT_TRUSTED_PUBLISHER_KEYS`): with any, it takes only
   * uploads signed by one of them. Unset, it takes unsigned uploads as before.
   */
  trustedPublisherKeys?: TrustedKeyConfig[];
  /** Run the agents (explicit and `--sim`) from this bundle (`buildAgentBundle`) instead of from sources. */
  agentBundle?: string;
  /** Extra env for every process (timings for tests: MOLT_TICK_MS, MOLT_POLL_MS, …). */
  env?: Record<string, string>;
  /** Extra env for one process by its name (`projector`, `allocator-1`, …), e.g. a DATABASE_URL. */
  processEnv?: Record<string, Record<string, string>>;
  /** The gateway's port (the demo's stable URL); a free one when unset. */
  gatewayPort?: number;
}

export interface System {
  gatewayUrl: string;
  urls: Record<"action" | "projector" | "packageRepo" | "audit" | "releaseEvents", string>;
  /** Every process's `/metrics` URL by process name (the HTTP services on their port, the others on MOLT_METRICS_PORT). */
  metricsUrls: Record<string, string>;
  processes: RunningProcess[];
  /** Roots of the agents' hosts (explicit agents and simulated ones). */
  hostRoot(hostId: string): string;
  startAgent(spec: AgentSpec): Promise<RunningProcess>;
  stop(): Promise<void>;
}

/**
 * What a process runs: a service from sources (`node --import tsx services/<name>/src/index.ts`),
 * or an explicit node argv such as `{ argv: [<bundle>] }` for the bundled agent.
 */
export type ProcessSpec = ServiceName | { argv: string[] };

/**
 * How a service starts: from its one-file build when the scenario project's global set-up made
 * them (MOLT_SERVICE_BUNDLES; the agent from the agent bundle, MOLT_CLIENT_BUNDLE), else from
 * sources under tsx.
 */
function serviceArgv(service: ServiceName): string[] {
  const bundles = process.env["MOLT_SERVICE_BUNDLES"];
  if (service === "agent" && bundles && process.env["MOLT_CLIENT_BUNDLE"]) return [process.env["MOLT_CLIENT_BUNDLE"]];
  if (service !== "agent" && bundles) return [join(bundles, `${service}.mjs`)];
  return ["--import", "tsx", join(repoRoot, "services", service, "src/index.ts")];
}

/** Starts one service as a real child process. */
export async function startProcess(
  name: string,
  service: ProcessSpec,
  env: Record<string, string>,
  logDir: string,
  readyPattern: RegExp,
  readyTimeoutMs = 120_000,
): Promise<RunningProcess> {
  await mkdir(logDir, { recursive: true });
  const logFile = join(logDir, `${name}.log`);
  const log: WriteStream = createWriteStream(logFile, { flags: "a" });
  const argv = typeof service === "string" ? serviceArgv(service) : service.argv;
  const proc = spawn(process.execPath, argv, {
    cwd: repoRoot,
    // The child's log goes to its file (and readiness is read from its info lines), never to the
    // test's output, so it logs at info whatever level the test process itself runs at.
    env: { ...process.env, MOLT_LOG_LEVEL: process.env["MOLT_CHILD_LOG_LEVEL"] ?? "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let tail = "";
  let resolveReady!: () => void;
  let rejectReady!: (e: Error) => void;
  const ready = new Promise<void>((res, rej) => {
    resolveReady = res;
    rejectReady = rej;
  });
  const onData = (d: Buffer) => {
    const text = d.toString();
    log.write(text);
    tail = (tail + text).slice(-6000);
    if (readyPattern.test(tail)) resolveReady();
  };
  proc.stdout?.on("data", onData);
  proc.stderr?.on("data", onData);
  proc.once("exit", (code, signal) => rejectReady(new Error(`${name} exited (code ${code}, signal ${signal}) before it was ready:\n${tail}`)));
  const timer = setTimeout(() => rejectReady(new Error(`${name} not ready within ${readyTimeoutMs} ms:\n${tail}`)), readyTimeoutMs);
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  const terminate = async (signal: NodeJS.Signals) => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill(signal);
      const k = setTimeout(() => proc.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(k);
    }
    log.end();
  };
  try {
    await ready;
  } catch (err) {
    await terminate("SIGKILL");
    throw err;
  } finally {
    clearTimeout(timer);
  }
  return { name, proc, logFile, tail: () => tail, stop: () => terminate("SIGTERM"), kill: () => terminate("SIGKILL") };
}

const LISTENING = /"msg":"listening"/;

/**
 * The admin's provisioning step (`scripts/bus.ts provision`): the streams and buckets exist before
 * any service starts, since no service identity may create one.
 */
export async function provisionBus(bus: SecureBus, env: Record<string, string> = {}): Promise<void> {
  await promisify(execFile)(process.execPath, ["--import", "tsx", join(repoRoot, "scripts/bus.ts"), "provision"], {
    cwd: repoRoot,
    env: { ...process.env, ...env, ...(await bus.env("admin")) },
  });
}

/** Enrols a host the way action does (a fresh user, its own permissions) and writes its credentials file. */
export async function hostCredsFile(bus: SecureBus, hostId: string, dir: string): Promise<{ file: string; publicKey: string }> {
  const issued = await issueHostCreds(hostIssuer(bus.authority), hostId);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, `host-${hostId}.creds`);
  await writeFile(file, issued.creds, { mode: 0o600 });
  return { file, publicKey: issued.publicKey };
}

/**
 * The whole system as separate processes on one secured nats-server: the admin provisions the
 * streams, then every service, N allocator replicas, and agents (one process per host, or one
 * `--sim` process for many hosts) start, each with its own credentials.
 */
export async function startSystem(opts: SystemOptions): Promise<System> {
  const bus = opts.nats.bus;
  if (!bus) throw new Error("startSystem needs a secure nats-server: startNatsServer({ secure: true })");
  const logDir = join(opts.dataDir, "logs");
  await mkdir(opts.dataDir, { recursive: true });
  const tokenFile = join(opts.dataDir, "tokens.json");
  await writeFile(tokenFile, JSON.stringify(opts.tokens, null, 2), { mode: 0o600 });
  const issuerFile = join(opts.dataDir, "host-issuer.json");
  await writeFile(issuerFile, JSON.stringify(hostIssuer(bus.authority)), { mode: 0o600 });
  const base = { MOLT_TOKEN_FILE: tokenFile, ...opts.env };
  await provisionBus(bus, base);
  const as = (who: ServiceIdentity) => bus.env(who);
  const processes: RunningProcess[] = [];
  const port = async () => String(await freePort());
  const [pAction, pProjector, pRepo, pAudit, pGateway, pRelease] = await Promise.all([port(), port(), port(), port(), opts.gatewayPort !== undefined ? String(opts.gatewayPort) : port(), port()]);
  const url = (p: string) => `http://127.0.0.1:${p}`;
  const gatewayUrl = url(pGateway);
  const hostRoots = new Map<string, string>();
  const metricsUrls: Record<string, string> = {};
  /** A /metrics port for a process without an HTTP API. */
  const metricsPort = async (name: string) => {
    const p = await port();
    metricsUrls[name] = `${url(p)}/metrics`;
    return { MOLT_METRICS_PORT: p };
  };

  const start = async (name: string, service: ProcessSpec, env: Record<string, string>, ready: RegExp) => {
    const all: Record<string, string> = { ...base, ...env, ...opts.processEnv?.[name] };
    // The services that keep a PGlite (`<MOLT_DATA_DIR>/<service>`) start on a copy of an initialised one.
    if (typeof service === "string" && ["projector", "audit", "release-events"].includes(service) && !all["DATABASE_URL"] && all["MOLT_DATA_DIR"])
      await seedPglite(join(all["MOLT_DATA_DIR"], service));
    const p = await startProcess(name, service, all, logDir, ready);
    processes.push(p);
    return p;
  };

  const agent: ProcessSpec = opts.agentBundle ? { argv: [opts.agentBundle] } : "agent";
  const startAgent = async (spec: AgentSpec) => {
    const root = join(opts.dataDir, "hosts", spec.hostId);
    hostRoots.set(spec.hostId, root);
    const creds = await hostCredsFile(bus, spec.hostId, join(opts.dataDir, "hosts-creds"));
    const nats = { ...(await bus.env("sim")), MOLT_NATS_CREDS: creds.file };
    return start(`agent-${spec.hostId}`, agent, { ...nats, MOLT_HOST_ID: spec.hostId, MOLT_ROOT: root, ...(spec.seed ? { MOLT_SEED: spec.seed } : {}), ...spec.env }, /agent (running|started|ready)/i);
  };
  /**
   * Waits for every start, settled or not: a start that fails while others are still coming up
   * must not leave those running once they are ready (orphans a failed bed left behind before).
   */
  const settleAll = async (starts: Promise<unknown>[]) => {
    const failed = (await Promise.allSettled(starts)).find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
  };
  try {
    await settleAll([
      start("action", "action", { ...(await as("action")), MOLT_HTTP_PORT: pAction, MOLT_HOST_ISSUER_FILE: issuerFile }, LISTENING),
      start("projector", "projector", { ...(await as("projector")), MOLT_HTTP_PORT: pProjector, MOLT_DATA_DIR: join(opts.dataDir, "projector") }, LISTENING),
      start(
        "package-repo",
        "package-repo",
        {
          ...(await as("package-repo")),
          MOLT_HTTP_PORT: pRepo,
          MOLT_DATA_DIR: join(opts.dataDir, "package-repo"),
          MOLT_PUBLIC_URL: gatewayUrl,
          ...(opts.trustedPublisherKeys ? { MOLT_TRUSTED_PUBLISHER_KEYS: JSON.stringify(opts.trustedPublisherKeys) } : {}),
        },
        LISTENING,
      ),
      start("audit", "audit", { ...(await as("audit")), MOLT_HTTP_PORT: pAudit, MOLT_DATA_DIR: join(opts.dataDir, "audit") }, LISTENING),
      start("release-events", "release-events", { ...(await as("release-events")), MOLT_HTTP_PORT: pRelease, MOLT_DATA_DIR: join(opts.dataDir, "release-events") }, LISTENING),
      start("feedback", "feedback", { ...(await as("feedback")), ...(await metricsPort("feedback")) }, /feedback ready/),
      ...Array.from({ length: opts.allocatorReplicas ?? 1 }, async (_, i) =>
        start(`allocator-${i + 1}`, "allocator", { ...(await as("allocator")), MOLT_PACKAGE_BASE_URL: gatewayUrl, MOLT_REPLICA_ID: `r${i + 1}`, ...(await metricsPort(`allocator-${i + 1}`)) }, /allocator running/),
      ),
      // The gateway only needs its upstreams' URLs (ports chosen above), not the upstreams up: it
      // starts beside them, and startSystem still returns only once every one is ready.
      start(
        "gateway",
        "gateway",
        {
          MOLT_HTTP_PORT: pGateway,
          MOLT_ACTION_URL: url(pAction),
          MOLT_PROJECTOR_URL: url(pProjector),
          MOLT_PACKAGE_REPO_URL: url(pRepo),
          MOLT_AUDIT_URL: url(pAudit),
          MOLT_RELEASE_EVENTS_URL: url(pRelease),
        },
        LISTENING,
      ),
    ]);
    await settleAll((opts.agents ?? []).map(startAgent));
    if (opts.sim) {
      const prefix = opts.sim.prefix ?? "sim-";
      const root = join(opts.dataDir, "sim");
      for (let i = 1; i <= opts.sim.count; i++) hostRoots.set(`${prefix}${String(i).padStart(3, "0")}`, join(root, `${prefix}${String(i).padStart(3, "0")}`));
      await start(
        "agent-sim",
        agent,
        {
          ...(await bus.env("sim")),
          MOLT_SIM: String(opts.sim.count),
          MOLT_SIM_PREFIX: prefix,
          MOLT_ROOT: root,
          ...(opts.sim.seed ? { MOLT_SEED: opts.sim.seed } : {}),
          ...(opts.sim.stepDelayMs !== undefined ? { MOLT_SIM_STEP_DELAY_MS: String(opts.sim.stepDelayMs) } : {}),
          ...(await metricsPort("agent-sim")),
        },
        /agent (running|started|ready)|sim/i,
      );
    }
  } catch (err) {
    await Promise.all(processes.map((p) => p.kill()));
    throw err;
  }

  return {
    gatewayUrl,
    urls: { action: url(pAction), projector: url(pProjector), packageRepo: url(pRepo), audit: url(pAudit), releaseEvents: url(pRelease) },
    metricsUrls: {
      ...Object.fromEntries(
        [["action", pAction], ["projector", pProjector], ["package-repo", pRepo], ["audit", pAudit], ["release-events", pRelease], ["gateway", pGateway]].map(([n, p]) => [n!, `${url(p!)}/metrics`]),
      ),
      ...metricsUrls,
    },
    processes,
    hostRoot: (hostId) => hostRoots.get(hostId) ?? join(opts.dataDir, "hosts", hostId),
    startAgent,
    async stop() {
      // Agents first (they report to feedback), then the rest.
      const agents = processes.filter((p) => p.name.startsWith("agent"));
      await Promise.all(agents.map((p) => p.stop()));
      await Promise.all(processes.filter((p) => !agents.includes(p)).map((p) => p.stop()));
    },
  };
}
