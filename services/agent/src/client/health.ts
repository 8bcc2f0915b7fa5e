import type { ComponentConfig } from "../agent/components.js";
import { readFile } from "node:fs/promises";
import { type ComponentPaths, localHeartbeatPath } from "../host/layout.js";
import { pidAlive } from "./lock.js";
import { componentEnv, describeResult, findPid, runCommand } from "./process.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * One probe: the health command exits 0 (with MOLT_EXPECT_VERSION set, so it can check the
 * version too) or the health URL answers 2xx; and the process answers `version` (the version URL,
 * else the health URL's body: plain text or JSON `{version}`). Resolves with a problem or null.
 */
async function probe(config: ComponentConfig, paths: ComponentPaths, cwd: string, version: string): Promise<string | null> {
  const health = config.health;
  if (config.kind === "self") {
    const problem = await selfHeartbeat(paths, version, health?.heartbeatStaleMs ?? 15_000);
    if (problem !== null) return problem;
  }
  if (health === undefined) return null;
  if (health.command !== undefined) {
    const r = await runCommand(health.command, {
      cwd,
      env: { ...componentEnv(paths, version), MOLT_EXPECT_VERSION: version },
      timeoutMs: health.probeTimeoutMs,
    });
    if (r.code !== 0) return describeResult("health command", r);
  }
  if (health.url !== undefined) {
    const got = await get(health.url, health.probeTimeoutMs);
    if (typeof got === "string") return got;
    if (got.status < 200 || got.status > 299) return `health ${health.url} answered ${got.status}`;
    if (health.versionUrl === undefined) {
      const answered = versionIn(got.body);
      if (answered !== null && answered !== version) return `the process answers version ${answered}, expected ${version}`;
    }
  }
  if (health.versionUrl !== undefined) {
    const got = await get(health.versionUrl, health.probeTimeoutMs);
    if (typeof got === "string") return got;
    const answered = versionIn(got.body);
    if (answered !== version) return `the process answers version ${answered ?? JSON.stringify(got.body.slice(0, 80))}, expected ${version}`;
  }
  return null;
}

/** The new agent is live when its local heartbeat names the new version, its pid runs, and it is fresh. */
async function selfHeartbeat(paths: ComponentPaths, version: string, staleMs: number): Promise<string | null> {
  let beat: { pid?: unknown; version?: unknown; at?: unknown };
  try {
    beat = JSON.parse(await readFile(localHeartbeatPath(paths.root), "utf8")) as typeof beat;
  } catch {
    return "no agent heartbeat yet";
  }
  if (beat.version !== version) return `the agent heartbeats version ${String(beat.version)}, expected ${version}`;
  if (typeof beat.pid !== "number" || !pidAlive(beat.pid)) return `the agent that heartbeat (pid ${String(beat.pid)}) is not running`;
  const age = Date.now() - Date.parse(String(beat.at));
  if (!(age <= staleMs)) return `the agent stopped heartbeating (last ${Math.round(age)} ms ago)`;
  return null;
}

async function get(url: string, timeoutMs: number): Promise<{ status: number; body: string } | string> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    return { status: res.status, body: (await res.text()).slice(0, 4000) };
  } catch (err) {
    return `health ${url} did not answer: ${(err as Error).message}`;
  }
}

function versionIn(body: string): string | null {
  const text = body.trim();
  try {
    const json: unknown = JSON.parse(text);
    if (typeof json === "object" && json !== null && typeof (json as { version?: unknown }).version === "string")
      return (json as { version: string }).version;
  } catch {
    // plain text
  }
  return /^[0-9A-Za-z._+-]{1,64}$/.test(text) ? text : null;
}

/**
 * VERIFY: the first probe must pass within startTimeoutMs, then every probe for watchMs, and a
 * process started by START must still be running throughout (a crash on start is a failure even
 * without a health check).
 */
export async function watchHealth(config: ComponentConfig, paths: ComponentPaths, cwd: string, version: string, startedPid: number | null): Promise<string> {
  const health = config.health ?? { watchMs: 1_000, intervalMs: 100, startTimeoutMs: config.kind === "self" ? 30_000 : 0, probeTimeoutMs: 0 };
  const alive = async (): Promise<string | null> => {
    // A systemd unit without a pid file or match is the unit manager's to watch; the health check decides.
    if (config.start === undefined || (config.start.systemdUnit !== undefined && !config.pidFile && !config.processMatch)) return null;
    const pid = await findPid(config, paths);
    if (pid === null) return startedPid !== null ? `the process (pid ${startedPid}) is not running` : "no process running";
    return null;
  };
  const check = async () => (await alive()) ?? (await probe(config, paths, cwd, version));
  const firstBy = Date.now() + health.startTimeoutMs;
  let problem = await check();
  let probes = 1;
  while (problem !== null) {
    // The process START launched is gone and nothing else runs for it: it crashed, waiting is pointless.
    if (startedPid !== null && !pidAlive(startedPid) && (await findPid(config, paths)) === null)
      throw new Error(`the new version exited right after START (pid ${startedPid}): ${problem}`);
    if (Date.now() >= firstBy) throw new Error(`not healthy within ${health.startTimeoutMs} ms: ${problem}`);
    await sleep(health.intervalMs);
    problem = await check();
    probes++;
  }
  const watchUntil = Date.now() + health.watchMs;
  while (Date.now() < watchUntil) {
    await sleep(Math.min(health.intervalMs, Math.max(1, watchUntil - Date.now())));
    problem = await check();
    probes++;
    if (problem !== null) throw new Error(`unhealthy within the ${health.watchMs} ms watch window: ${problem}`);
  }
  return `healthy for ${health.watchMs} ms (${probes} probes), version ${version}`;
}
