import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { type DesiredState, desiredKey, subjects, type TrustedKeyConfig } from "@molt/contracts";
import { contextFrom, injectTrace, trace, tracer, tracingEnabled } from "@molt/runtime";
import { pidAlive } from "../client/lock.js";
import { linkComponentRoot, listComponents, type Seed, seedComponent } from "../host/layout.js";
import {
  claimTask,
  isTerminal,
  listTaskIds,
  readClaim,
  readForwarded,
  readJournal,
  readTask,
  recordLaunch,
  taskPaths,
  tasksDir,
} from "../host/task-files.js";
import { writeFileDurable } from "../host/durable.js";
import { localHeartbeatPath } from "../host/layout.js";
import { errorMessage, type Log } from "../log.js";
import { type ComponentConfig, filesOnly } from "./components.js";
import type { DesiredSource } from "./desired.js";
import { type ClientState, type TaskWatch, watchTask } from "./forwarder.js";
import { buildHeartbeat, installedVersions, sendHeartbeat } from "./heartbeat.js";
import type { AgentMetrics } from "./metrics.js";
import type { TaskRunner } from "./runners.js";

export interface HostAgentTiming {
  readonly pollMs: number;
  readonly heartbeatMs: number;
  readonly reportRetryMs: number;
  readonly reportTimeoutMs: number;
  readonly journalPollMs: number;
  /** How long a report waits for the entries right behind its first (default 0; the simulator lingers: see the forwarder). */
  readonly reportLingerMs?: number;
  /** Delay before the first heartbeat and read, so a simulated fleet does not start in lockstep. */
  readonly startDelayMs?: number;
  /** Each poll moves by up to ± this fraction of pollMs, so many hosts drift apart. */
  readonly pollJitter?: number;
  /** Finished task dirs kept for inspection (the newest); older ones are pruned once their deadline has passed. */
  readonly keepTasks?: number;
  /**
   * How long what the agent found under its root (the component dirs and the version each one's
   * `current` points at) is reused by heartbeats and desired-state reads (default 0: looked at
   * every time). Dropped whenever a task of this agent ends, so its own changes show at once; a dir
   * made by hand shows within this long. The simulator sets it: its thousands of hosts each
   * listed their root and read a link per component every heartbeat and every nudge.
   */
  readonly rootScanMs?: number;
}

export interface HostAgentDeps {
  readonly nc: NatsConnection;
  readonly desired: DesiredSource;
  readonly runner: TaskRunner;
  readonly log: Log;
  readonly hostId: string;
  readonly root: string;
  /** Configured components; the managed set also holds every component dir found under the root. */
  readonly components: readonly string[];
  /** How configured components run (process, health, hooks); a component without one is files only. */
  readonly componentConfigs?: readonly ComponentConfig[];
  /** Publisher keys this host trusts; with any configured, only signed packages are installed. */
  readonly trustedKeys?: readonly TrustedKeyConfig[];
  readonly labels: Readonly<Record<string, string>>;
  readonly seeds: readonly Seed[];
  readonly agentVersion: string;
  readonly timing: HostAgentTiming;
  /** Real hosts: also write each heartbeat to `<root>/agent/heartbeat.json` (a self-upgrade's watcher reads it). */
  readonly localHeartbeat?: boolean;
  readonly now?: () => Date;
  /** Counted when given (MOLT_METRICS_PORT set): nothing is counted otherwise. */
  readonly metrics?: AgentMetrics;
}

export interface HostAgent {
  readonly hostId: string;
  start(): Promise<void>;
  /** Stops reading, heartbeating and forwarding; running clients are left to finish. */
  stop(): Promise<void>;
  /** Reads every managed component's desired state now (what a nudge does). */
  readDesired(): Promise<void>;
  /** Task ids whose client is running or whose journal is not fully forwarded yet. */
  openTasks(): string[];
  managedComponents(): Promise<string[]>;
}

/**
 * One host: reads its desired state (at start, on a nudge, on a jittered slow poll: plain KV gets,
 * no watcher), launches each new task at most once, forwards every task journal to feedback, and
 * heartbeats. Real hosts run one; the simulator runs many on one connection.
 */
export function createHostAgent(deps: HostAgentDeps): HostAgent {
  const { hostId, root, timing } = deps;
  const log = deps.log;
  const now = deps.now ?? (() => new Date());
  const watches = new Map<string, TaskWatch>();
  /** The client running per component, so a withdrawn task's client can be told to stop (once). */
  const clients = new Map<string, { taskId: string; stop: (reason: string) => void; stopping: boolean }>();
  /** Task ids this agent has decided about (launched now or before, or expired): never launched again. */
  const known = new Set<string>();
  /** Last thing logged per component, so a slow poll does not repeat the same warning forever. */
  const lastNote = new Map<string, string>();
  const timers = new Set<NodeJS.Timeout>();
  let sub: Subscription | undefined;
  let stopped = false;
  let reading: Promise<void> | undefined;
  let readAgain = false;
  let readFailures = 0;

  const forwarderDeps = {
    nc: deps.nc,
    hostId,
    root,
    log,
    retryMs: timing.reportRetryMs,
    requestTimeoutMs: timing.reportTimeoutMs,
    journalPollMs: timing.journalPollMs,
    ...(timing.reportLingerMs !== undefined ? { lingerMs: timing.reportLingerMs } : {}),
    ...(deps.metrics ? { metrics: deps.metrics } : {}),
  };

  const later = (ms: number, fn: () => void) => {
    if (stopped) return;
    const t = setTimeout(() => {
      timers.delete(t);
      if (!stopped) fn();
    }, ms);
    timers.add(t);
  };

  const note = (component: string, text: string, level: "info" | "warn", fields: object) => {
    if (lastNote.get(component) === text) return;
    lastNote.set(component, text);
    log[level]({ component, ...fields }, text);
  };

  const configs = new Map((deps.componentConfigs ?? []).map((c) => [c.name, c]));
  let scanned: { at: number; components: string[]; versions?: Record<string, string | null> } | undefined;
  const scanFresh = () => scanned !== undefined && Date.now() - scanned.at < (timing.rootScanMs ?? 0);
  const managedComponents = async () => {
    if (scanFresh()) return scanned!.components;
    const components = [...new Set([...deps.components, ...configs.keys(), ...(await listComponents(root))])].sort();
    if ((timing.rootScanMs ?? 0) > 0) scanned = { at: Date.now(), components };
    return components;
  };
  /** The installed version of each managed component, as a heartbeat reports it. */
  const componentVersions = async () => {
    const components = await managedComponents();
    if (scanned?.versions !== undefined && scanFresh()) return scanned.versions;
    const versions = await installedVersions(root, components);
    if (scanned !== undefined && scanned.components === components) scanned.versions = versions;
    return versions;
  };

  const track = (task: DesiredState, client: ClientState, forwarded: number) => {
    const watch = watchTask(forwarderDeps, task, client, forwarded);
    watches.set(task.taskId, watch);
    const stop = stopperOf(client);
    if (stop) {
      const entry = { taskId: task.taskId, stop, stopping: false };
      clients.set(task.component, entry);
      void clientEnded(client).then(() => {
        if (clients.get(task.component) === entry) clients.delete(task.component);
      });
    }
    void watch.done.then(() => {
      if (watches.get(task.taskId) === watch) watches.delete(task.taskId);
      scanned = undefined;
      if (!stopped) void pruneTasks();
    });
    return watch;
  };

  /**
   * Removes the dirs of finished tasks beyond the newest `keepTasks`. Only a task whose deadline
   * has passed goes: the agent never starts such a task again, so forgetting that it ran cannot
   * make it run twice even if its desired state still names it.
   */
  const pruneTasks = async () => {
    try {
      const keep = timing.keepTasks ?? 20;
      const taskIds = await listTaskIds(root);
      // Nothing can go while there are no more dirs than are kept: no need to read any of them.
      if (taskIds.length <= keep) return;
      const done: Array<{ taskId: string; deadline: number }> = [];
      for (const taskId of taskIds) {
        if (watches.has(taskId)) continue;
        const task = await readTask(root, taskId).catch(() => null);
        if (!task) continue;
        const journal = await readJournal(taskPaths(root, taskId).journal, 0);
        const last = journal.entries.at(-1);
        if (!last || !isTerminal(last) || last.seq > (await readForwarded(root, taskId))) continue;
        done.push({ taskId, deadline: Date.parse(task.deadline) });
      }
      done.sort((a, b) => b.deadline - a.deadline);
      const nowMs = now().getTime();
      const pruned = done.slice(keep).filter((t) => t.deadline < nowMs);
      for (const t of pruned) await rm(taskPaths(root, t.taskId).dir, { recursive: true, force: true });
      if (pruned.length > 0) log.debug({ pruned: pruned.length }, "old task dirs pruned");
    } catch (err) {
      log.warn({ err: errorMessage(err) }, "could not prune old task dirs");
    }
  };

  /**
   * The allocator withdrew the component's task (deleted or purged its key, or replaced it with
   * another task): a client still running it is asked to stop. It stops only if it has not reached
   * OVERRIDE; past that it finishes, and feedback refuses its late reports.
   */
  const withdraw = (component: string, why: string) => {
    const client = clients.get(component);
    if (!client || client.stopping) return;
    client.stopping = true;
    log.info({ component, taskId: client.taskId, why }, "task withdrawn; stopping its upgrade client");
    client.stop(`task ${client.taskId} withdrawn (${why})`);
  };

  /** After a restart: keep forwarding every task whose journal is not fully answered. */
  const resume = async () => {
    for (const taskId of await listTaskIds(root)) {
      let task: DesiredState | null;
      try {
        task = await readTask(root, taskId);
      } catch (err) {
        log.error({ taskId, err: errorMessage(err) }, "unreadable task.json; task left alone");
        known.add(taskId);
        continue;
      }
      if (!task) continue;
      known.add(taskId);
      const forwarded = await readForwarded(root, taskId);
      const journal = await readJournal(taskPaths(root, taskId).journal, 0);
      const last = journal.entries.at(-1);
      if (last && isTerminal(last) && last.seq <= forwarded) continue;
      track(task, await clientStateAfterRestart(taskId), forwarded);
    }
  };

  const clientStateAfterRestart = async (taskId: string): Promise<ClientState> => {
    let claim = await readClaim(root, taskId);
    if (!claim) {
      // Launched, but no client ever claimed it (the agent died in between). Claim it as given up,
      // so a client that is only now starting loses the claim and touches nothing.
      if (await claimTask(root, taskId, { owner: "agent", pid: process.pid }))
        return { kind: "gone", reason: "the agent restarted before the upgrade client started" };
      claim = await readClaim(root, taskId);
    }
    if (!claim || claim.owner === "agent") return { kind: "gone", reason: "the agent restarted before the upgrade client started" };
    // Our own pid means an in-process run of an earlier agent instance in this process: it is not ours to wait for.
    if (claim.pid !== process.pid && pidAlive(claim.pid)) return { kind: "pid", pid: claim.pid };
    return { kind: "gone", reason: `upgrade client (pid ${claim.pid}) exited without a verdict` };
  };

  const consider = async (component: string, task: DesiredState, revision: number) => {
    if (task.hostId !== hostId || task.component !== component) {
      note(component, "desired state names another host or component; ignored", "warn", { revision, taskId: task.taskId });
      return;
    }
    if (known.has(task.taskId)) return;
    const deadline = Date.parse(task.deadline);
    if (deadline <= now().getTime()) {
      known.add(task.taskId);
      log.info({ component, taskId: task.taskId, deadline: task.deadline }, "task deadline has passed; not starting it");
      return;
    }
    // Traced: the agent's span of the task, the child of the allocation's trace; the task as
    // launched carries it on, to the upgrade client (task.json) and feedback (report headers).
    const span = tracingEnabled ? tracer().startSpan("agent task", { attributes: { "molt.task_id": task.taskId, "molt.host_id": hostId } }, contextFrom(task.traceparent)) : undefined;
    let traceparent: string | undefined;
    if (span) injectTrace((k, v) => void (k === "traceparent" && (traceparent = v)), trace.setSpan(contextFrom(task.traceparent), span));
    const launched = traceparent ? { ...task, traceparent } : task;
    // Durable before the spawn: after a crash the file says "launched", and it is never run again.
    const context = { component: configs.get(component) ?? filesOnly(component), trustedKeys: [...(deps.trustedKeys ?? [])] };
    if (!(await recordLaunch(root, launched, context))) {
      known.add(task.taskId);
      span?.end();
      return;
    }
    known.add(task.taskId);
    lastNote.delete(component);
    log.info({ component, taskId: task.taskId, version: task.version, deploymentId: task.deploymentId }, "launching upgrade client");
    const run = deps.runner.start(root, launched, (entry) => watches.get(launched.taskId)?.poke(entry));
    const watch = track(launched, { kind: "running", run }, 0);
    if (span) void watch.done.finally(() => span.end());
  };

  const readOnce = async () => {
    let failed = false;
    for (const component of await managedComponents()) {
      if (stopped) return;
      try {
        const read = await deps.desired.read(desiredKey(hostId, component));
        switch (read.kind) {
          case "absent":
            withdraw(component, "no desired state");
            break;
          case "withdrawn":
            note(component, "desired state withdrawn", "info", { revision: read.revision });
            withdraw(component, "desired state deleted");
            break;
          case "invalid":
            note(component, "desired state is not a valid DesiredState; ignored", "warn", { revision: read.revision, problem: read.problem });
            break;
          case "task":
            if (clients.has(component) && clients.get(component)?.taskId !== read.task.taskId) withdraw(component, `replaced by task ${read.task.taskId}`);
            await consider(component, read.task, read.revision);
            break;
          default: {
            const never: never = read;
            throw new Error(`unexpected read ${JSON.stringify(never)}`);
          }
        }
      } catch (err) {
        failed = true;
        log.debug({ component, err: errorMessage(err) }, "could not read desired state");
      }
    }
    if (failed) {
      // The bucket may not exist yet (the allocator creates it) or NATS is away: retry soon,
      // backing off up to the slow poll.
      readFailures++;
      if (readFailures === 5) log.warn({}, "desired state unreadable for a while; still retrying");
      later(Math.min(timing.pollMs, 250 * 2 ** Math.min(readFailures, 5)), () => void readDesired());
    } else {
      readFailures = 0;
    }
  };

  const readDesired = async (): Promise<void> => {
    if (stopped) return;
    if (reading) {
      readAgain = true;
      return reading;
    }
    reading = (async () => {
      try {
        do {
          readAgain = false;
          await readOnce();
        } while (readAgain && !stopped);
      } catch (err) {
        log.error({ err: errorMessage(err) }, "desired state read failed");
      } finally {
        reading = undefined;
      }
    })();
    return reading;
  };

  const poll = () => {
    const jitter = timing.pollJitter ?? 0.1;
    const ms = Math.max(1, Math.round(timing.pollMs * (1 + jitter * (2 * Math.random() - 1))));
    later(ms, () => {
      void readDesired().finally(poll);
    });
  };

  const heartbeat = () => {
    void (async () => {
      try {
        const hb = buildHeartbeat({
          hostId,
          versions: await componentVersions(),
          labels: deps.labels,
          agentVersion: deps.agentVersion,
          now: now(),
        });
        // Locally too: the upgrade client of a self-upgrade watches this file to see the new agent live.
        if (deps.localHeartbeat) await writeFileDurable(localHeartbeatPath(root), JSON.stringify({ pid: process.pid, version: deps.agentVersion, at: hb.at }));
        const answer = await sendHeartbeat(deps.nc, hb, timing.reportTimeoutMs, log);
        deps.metrics?.heartbeat(answer);
      } catch (err) {
        log.warn({ err: errorMessage(err) }, "heartbeat failed");
      }
    })().finally(() => later(timing.heartbeatMs, heartbeat));
  };

  return {
    hostId,
    readDesired,
    managedComponents,
    openTasks: () => [...watches.keys()],
    async start() {
      await mkdir(tasksDir(root), { recursive: true });
      for (const c of configs.values()) if (c.root !== undefined) await linkComponentRoot(root, c.name, c.root);
      for (const seed of deps.seeds) {
        if (await seedComponent(root, seed)) log.info({ component: seed.component, version: seed.version }, "seeded component");
      }
      await resume();
      await pruneTasks();
      // The agent's own pid file: a self-upgrade's STOP finds the running agent by it.
      if (deps.localHeartbeat) await writeFileDurable(join(root, "agent", "agent.pid"), `${process.pid}\n`);
      sub = deps.nc.subscribe(subjects.nudge(hostId), { callback: () => void readDesired() });
      later(timing.startDelayMs ?? 0, () => {
        heartbeat();
        void readDesired().finally(poll);
      });
    },
    async stop() {
      stopped = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      sub?.unsubscribe();
      await reading;
      await Promise.all([...watches.values()].map((w) => w.stop()));
    },
  };
}

/** How to ask a task's client to stop: its run's stop, or SIGTERM to a client found after a restart. */
function stopperOf(client: ClientState): ((reason: string) => void) | undefined {
  switch (client.kind) {
    case "running":
      return (reason) => client.run.stop(reason);
    case "pid":
      return () => {
        if (pidAlive(client.pid)) process.kill(client.pid, "SIGTERM");
      };
    case "gone":
      return undefined;
    default: {
      const never: never = client;
      throw new Error(`unexpected client ${JSON.stringify(never)}`);
    }
  }
}

/** Resolves when the client has ended (a pid found after a restart is polled). */
async function clientEnded(client: ClientState): Promise<void> {
  if (client.kind === "running") {
    await client.run.exited;
    return;
  }
  while (client.kind === "pid" && pidAlive(client.pid)) await new Promise((r) => setTimeout(r, 500));
}
