import { spawn, execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, join, resolve } from "node:path";
import { promisify } from "node:util";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  AuditPage,
  AuditVerification,
  DeploymentAccepted,
  DeploymentSummary,
  FleetVersions,
  HostList,
  HostTimeline,
  OperatorCommandAnswer,
  PackageInfo,
  PackageList,
  PlanPreview,
  QuarantineAnswer,
  STREAM_EVENTS,
  TaskCounts,
  TaskView,
  subjects,
} from "@molt/contracts";
import { createEventStore } from "@molt/event-store";
import { generatePublisherKey, writePublisherKey } from "@molt/publisher";
import { CLI_BIN, runCliCaptured, WATCH_EXIT } from "@molt/cli";
import { buildPackage, startNatsServer, startSystem, waitFor, type SecureNatsServer, type System } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { run, type Run } from "./run.js";

/**
 * The `molt` CLI as an operator runs it: a child process talking to the whole system through the
 * gateway, its output read back as text (and as JSON against the contracts' schemas).
 */
const OPERATOR = "operator-token-cli-000001";
const VIEWER = "viewer-token-cli-0000001";
const ADMIN = "admin-token-cli-00000001";
const COMPONENT = "metrics-agent";
const HOSTS = Array.from({ length: 6 }, (_, i) => `cli-${String(i + 1).padStart(3, "0")}`);
const repoRoot = resolve(import.meta.dirname, "../..");
const TSX = join(repoRoot, "node_modules", ".bin", "tsx");

let dataDir: string;
let nats: SecureNatsServer;
let nc: NatsConnection;
let system: System;
let keyFile: string;
let faultFile: string;
/** The first test's deployment (cli-001, cli-002 to 2.0.0), rolled back in a later one. */
let firstDeployment: string;

/** Runs `molt …` to its end (no terminal: no colours, no bars). */
function molt(args: string[], opts: { token?: string; env?: Record<string, string> } = {}): Promise<Run> {
  return run(TSX, [CLI_BIN, ...args], {
    cwd: dataDir,
    env: { ...process.env, HOME: dataDir, MOLT_URL: system.gatewayUrl, MOLT_TOKEN: opts.token ?? OPERATOR, ...opts.env },
  });
}

/**
 * The same CLI in this process (no child to start: milliseconds, not a second each), for answers
 * whose shape is the point rather than the process around them.
 */
async function moltHere(args: string[], token = OPERATOR): Promise<Run> {
  return runCliCaptured(args, { HOME: dataDir, MOLT_URL: system.gatewayUrl, MOLT_TOKEN: token });
}

const jsonOf = <S extends z.ZodType>(schema: S, r: Run): z.infer<S> => {
  expect(r.code, r.stderr).toBe(0);
  return schema.parse(JSON.parse(r.stdout));
};

const WatchLine = z.discriminatedUnion("type", [
  z.object({ type: z.literal("progress"), deployment: DeploymentSummary, counts: TaskCounts }),
  z.object({ type: z.literal("task"), task: TaskView }),
  z.object({ type: z.literal("end"), deploymentId: z.string(), outcome: z.enum(["completed", "completed-with-failures", "failed", "cancelled", "braked"]), exitCode: z.number() }),
]);

async function deploy(args: string[]): Promise<string> {
  const r = await molt(["deploy", COMPONENT, ...args, "--json"]);
  return jsonOf(DeploymentAccepted.extend({ plan: PlanPreview }), r).deploymentId;
}

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "molt-cli-"));
  const publisher = generatePublisherKey();
  keyFile = (await writePublisherKey(dataDir, "publisher", publisher)).privateKeyFile;
  faultFile = join(dataDir, "fault.json");
  nats = await startNatsServer({ secure: true });
  nc = await nats.bus.connect("admin");
  system = await startSystem({
    nats,
    dataDir,
    tokens: { [OPERATOR]: { actor: "otto", role: "operator" }, [VIEWER]: { actor: "vera", role: "viewer" }, [ADMIN]: { actor: "ada", role: "admin" } },
    trustedPublisherKeys: [{ keyId: publisher.keyId, publicKey: publisher.publicKey }],
    sim: { count: HOSTS.length, prefix: "cli-", seed: `${COMPONENT}@1.0.0`, stepDelayMs: 150 },
    env: { MOLT_HEARTBEAT_MS: "500", MOLT_POLL_MS: "1000", MOLT_RETRY_DELAY_MS: "100", MOLT_ACK_WAIT_MS: "3000", MOLT_SIM_FAULT_FILE: faultFile },
  });
  const store = createEventStore(nc);
  await waitFor("hosts registered", async () => {
    for (const h of HOSTS) if (!(await store.readLast(subjects.hostMeta(h)))) return undefined;
    return true;
  }, { timeoutMs: 90_000 });
  // A package directory, pushed by the CLI in the first test.
  await mkdir(join(dataDir, "pkg", "bin"), { recursive: true });
  await writeFile(join(dataDir, "pkg", "VERSION"), "2.0.0\n");
  await writeFile(join(dataDir, "pkg", "bin", "run.sh"), `#!/bin/sh\necho ${COMPONENT} 2.0.0\n`, { mode: 0o755 });
}, 240_000);

afterAll(async () => {
  await system?.stop();
  await nc?.close();
  await nats?.stop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

describe("the molt CLI against the running system", () => {
  it("[cli] push a directory, deploy printing the plan, watch to completion (exit 0); --json answers parse with the contracts", async () => {
    const pushed = await molt(["package", "push", join(dataDir, "pkg"), "--component", COMPONENT, "--version", "2.0.0", "--platform", "linux-amd64", "--sign-key", keyFile, "--json"]);
    const info = jsonOf(PackageInfo.extend({ published: z.boolean(), keyId: z.string() }), pushed);
    expect(info).toMatchObject({ component: COMPONENT, version: "2.0.0", published: true });

    const dry = await moltHere(["deploy", COMPONENT, "2.0.0", "--hosts", "cli-001,cli-002", "--max-unavailable", "1", "--dry-run"]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/plan: 2 host\(s\) in \d batch\(es\), 0 skipped/);
    expect(dry.stdout).toMatch(/cli-001/);

    const started = await molt(["deploy", COMPONENT, "2.0.0", "--hosts", "cli-001,cli-002", "--max-unavailable", "1"]);
    expect(started.code, started.stderr).toBe(0);
    // The plan comes before the deployment starts.
    expect(started.stdout.indexOf("plan:")).toBeLessThan(started.stdout.indexOf("accepted"));
    const id = /deployment (d-[a-z0-9]+) accepted/.exec(started.stdout)?.[1];
    expect(id, started.stdout).toBeDefined();
    firstDeployment = id!;

    const watched = await molt(["watch", id!, "--json"]);
    expect(watched.code, watched.stderr).toBe(0);
    const lines = watched.stdout.trim().split("\n").map((l) => WatchLine.parse(JSON.parse(l)));
    expect(lines.at(-1)).toEqual({ type: "end", deploymentId: id, outcome: "completed", exitCode: 0 });
    expect(lines.some((l) => l.type === "task" && l.task.state === "succeeded")).toBe(true);
    // Per batch: the last snapshot has every batch done, each with all its hosts succeeded.
    const items = lines.filter((l) => l.type === "progress").at(-1)!.deployment.batches.items;
    expect(items.length).toBeGreaterThan(0);
    for (const b of items) expect(b).toMatchObject({ state: "done", finished: b.size, outcomes: { succeeded: b.size, failed: 0 } });
    expect(items.reduce((n, b) => n + b.size, 0)).toBe(2);
    const plain = await molt(["watch", id!]);
    expect(plain.code).toBe(0);
    expect(plain.stdout).toContain(`deployment ${id} completed`);
    expect(plain.stdout).toContain(`[${items.map((b) => `batch ${b.index} ${b.size}/${b.size} done`).join(", ")}]`);
    expect(plain.stdout).not.toContain("\u001b["); // not a terminal: no colours

    const hosts = jsonOf(HostList, await molt(["hosts", "--json"], { token: VIEWER }));
    expect(hosts.hosts.map((h) => h.hostId)).toEqual(HOSTS);
    const versions = jsonOf(FleetVersions, await molt(["versions", COMPONENT, "--json"], { token: VIEWER }));
    expect(versions.components[0]?.versions).toContainEqual({ version: "2.0.0", hosts: 2 });
    const timeline = jsonOf(HostTimeline, await molt(["timeline", "cli-001", "--json"], { token: VIEWER }));
    expect(timeline.events.map((e) => e.type)).toContain("TaskSucceeded");
    const readable = await molt(["timeline", "cli-001"], { token: VIEWER });
    expect(readable.stdout).toMatch(/TaskStepSucceeded\s+download\s+\d/);

    // Polled through the gateway all along: none of it logged at info there.
    const gatewayLog = await readFile(system.processes.find((p) => p.name === "gateway")!.logFile, "utf8");
    expect(gatewayLog.split("\n").filter((l) => l.includes('"level":30') && l.includes("request completed"))).toEqual([]);
  }, 240_000);

  it("[cli] watch exits non-zero when the deployment brakes (failures shown with host, step and reason), completes with a failed host, or is cancelled", async () => {
    await writeFile(faultFile, JSON.stringify({ hosts: ["cli-003", "cli-004", "cli-005", "cli-006"], step: "download", message: "injected: mirror down" }));
    // Meanwhile (in-process), no brake: cli-006 fails, the deployment still ends "completed", and watch says so with exit 3.
    const unbraked = jsonOf(DeploymentAccepted.extend({ plan: PlanPreview }), await moltHere(["deploy", COMPONENT, "2.0.0", "--hosts", "cli-006", "--json"])).deploymentId;
    const unbrakedWatch = moltHere(["watch", unbraked], VIEWER);
    // deploy --watch: the plan, then the same follow as `molt watch`, with its exit code.
    const w = await molt(["deploy", COMPONENT, "2.0.0", "--hosts", "cli-003,cli-004,cli-005", "--max-unavailable", "1", "--brake", "10%", "--watch"]);
    const braked = /deployment (d-[a-z0-9]+) accepted/.exec(w.stdout)?.[1] ?? "";
    expect(braked, w.stdout).not.toBe("");
    expect(w.stdout.indexOf("plan:")).toBeLessThan(w.stdout.indexOf("accepted"));
    expect(w.code, `${w.stdout}\n${w.stderr}`).toBe(WATCH_EXIT.braked);
    expect(w.stdout).toMatch(/✗ cli-003: failed at download: .*injected: mirror down/);
    expect(w.stdout).toContain(`deployment ${braked} braked`);
    const partial = await unbrakedWatch;
    expect(partial.code, `${partial.stdout}\n${partial.stderr}`).toBe(WATCH_EXIT["completed-with-failures"]);
    expect(partial.code).not.toBe(0);
    expect(partial.stdout).toMatch(/✗ cli-006: failed at download: .*injected: mirror down/);
    expect(partial.stdout).toContain(`deployment ${unbraked} completed-with-failures: 1 host(s) failed`);
    await rm(faultFile);
    const cancelledBrake = jsonOf(OperatorCommandAnswer, await molt(["cancel", braked, "--reason", "mirror fixed, redeploying", "--json"]));
    expect(cancelledBrake).toMatchObject({ deploymentId: braked, status: "cancelled" });

    // Waits for approval after the canary; cancelled while watched.
    const waiting = await deploy(["2.0.0", "--hosts", "cli-004,cli-005", "--canary", "1", "--approval"]);
    const watching = molt(["watch", waiting, "--json"]);
    await waitFor("the canary to await approval", async () => {
      const r = await fetch(`${system.gatewayUrl}/v1/deployments/${waiting}`, { headers: { authorization: `Bearer ${VIEWER}` } });
      return r.ok && DeploymentSummary.parse(((await r.json()) as { deployment: unknown }).deployment).awaitingApproval !== null ? true : undefined;
    }, { timeoutMs: 60_000, intervalMs: 200 });
    // Paused and resumed while it waits (in-process: the answers' shape is the point here).
    expect(jsonOf(OperatorCommandAnswer, await moltHere(["pause", waiting, "--reason", "lunch", "--json"]))).toEqual({ deploymentId: waiting, status: "paused (canary awaits approval)" });
    expect(jsonOf(OperatorCommandAnswer, await moltHere(["resume", waiting, "--json"])).status).not.toBe("paused");
    const cancelled = await molt(["cancel", waiting]);
    expect(cancelled.code, cancelled.stderr).toBe(0);
    const ended = await watching;
    expect(ended.code, `${ended.stdout}\n${ended.stderr}`).toBe(WATCH_EXIT.cancelled);
    expect(ended.stdout.trim().split("\n").at(-1)).toBe(JSON.stringify({ type: "end", deploymentId: waiting, outcome: "cancelled", exitCode: WATCH_EXIT.cancelled }));
  }, 240_000);

  it("[cli] a refusal from the server is shown with its message and a non-zero exit; so is an unreachable gateway", async () => {
    const forbidden = await molt(["deploy", COMPONENT, "2.0.0", "--hosts", "cli-006"], { token: VIEWER });
    expect(forbidden.code).toBe(1);
    expect(forbidden.stderr).toMatch(/^molt: .+ \(403 forbidden\)\n$/);
    const missing = await molt(["approve", "d-does-not-exist"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe("molt: deployment does not exist (404 not_found)\n");
    // A 409 says why: nothing failed in the first deployment, so there is nothing to retry.
    const nothing = await moltHere(["retry", firstDeployment]);
    expect(nothing.code).toBe(1);
    expect(nothing.stderr).toMatch(new RegExp(`^molt: deployment ${firstDeployment} is .*; no host failed, nothing to retry \\(409 [a-z_]+\\)\n$`));
    const unreachable = await molt(["hosts"], { env: { MOLT_URL: "http://127.0.0.1:1" } });
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr).toContain("cannot reach the gateway at http://127.0.0.1:1 (ECONNREFUSED)");
    const usage = await moltHere(["deploy", COMPONENT, "2.0.0", "--hosts", "cli-006", "--canary", "lots"]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain('--canary "lots"');
  }, 120_000);

  it("[cli] drain puts a host in the plan's skips with its reason until clear; hosts, versions, package ls and audit read as plain columns; package ls, audit --verify and deploy --dry-run --json parse with the contracts", async () => {
    const drained = jsonOf(QuarantineAnswer, await moltHere(["drain", "cli-006", "--component", COMPONENT, "--reason", "disk swap", "--json"]));
    expect(drained).toEqual({ hostId: "cli-006", component: COMPONENT, quarantined: true });
    const dry = jsonOf(z.object({ dryRun: z.literal(true), plan: PlanPreview }), await moltHere(["deploy", COMPONENT, "2.0.0", "--hosts", "cli-005,cli-006", "--dry-run", "--json"]));
    expect(dry.plan.skips).toContainEqual({ hostId: "cli-006", reason: "quarantined: disk swap" });
    const readable = await moltHere(["deploy", COMPONENT, "2.0.0", "--hosts", "cli-005,cli-006", "--dry-run"]);
    expect(readable.stdout).toContain("  cli-006: quarantined: disk swap\n");
    const cleared = jsonOf(QuarantineAnswer, await moltHere(["clear", "cli-006", "--component", COMPONENT, "--json"]));
    expect(cleared).toEqual({ hostId: "cli-006", component: COMPONENT, quarantined: false });
    const after = jsonOf(z.object({ dryRun: z.literal(true), plan: PlanPreview }), await moltHere(["deploy", COMPONENT, "2.0.0", "--hosts", "cli-006", "--dry-run", "--json"]));
    expect(after.plan.batches.flatMap((b) => b.hosts)).toEqual(["cli-006"]);
    // A viewer may not drain.
    const refused = await moltHere(["drain", "cli-006", "--component", COMPONENT], VIEWER);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^molt: .+ \(403 forbidden\)\n$/);

    // The readable forms: plain columns with a header (no colours: not a terminal).
    const lines = async (...args: string[]) => {
      const r = await moltHere(args, VIEWER);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).not.toContain("\u001b[");
      return r.stdout.split("\n");
    };
    expect((await lines("hosts"))[0]).toMatch(/^host\s+platform\s+cluster\s+online\s+components/);
    expect(await lines("hosts")).toContainEqual(expect.stringMatching(/^cli-001\s+linux-amd64\s+.*yes\s+metrics-agent@2\.0\.0/));
    expect(await lines("versions", COMPONENT)).toContainEqual(expect.stringMatching(/^2\.0\.0\s+\d+\s+█+·*\s+\d+%$/));
    expect(await lines("package", "ls", COMPONENT)).toContainEqual(expect.stringMatching(/^2\.0\.0\s+linux-amd64\s+\d+\s+[0-9a-f]{12}…\s+\S+/));
    expect((await lines("audit", "--limit", "3"))[0]).toMatch(/^id\s+at\s+actor\s+kind\s+target\s+outcome/);

    const packages = jsonOf(PackageList, await moltHere(["package", "ls", COMPONENT, "--json"], VIEWER));
    expect(packages.packages.find((p) => p.version === "2.0.0")).toMatchObject({ platform: "linux-amd64", keyId: expect.any(String) as string });
    const verified = jsonOf(AuditVerification, await moltHere(["audit", "--verify", "--full", "--json"], ADMIN));
    expect(verified).toMatchObject({ ok: true, fromId: 0 });
    expect(verified.checked).toBeGreaterThan(0);
  }, 60_000);

  it("[cli] the README's curl upload of a signed package over 1 MiB (curl sends Expect: 100-continue) is published through the gateway", async () => {
    const readme = await readFile(join(repoRoot, "README.md"), "utf8");
    const block = /<!-- readme-test: curl-upload -->\n```sh\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(block).toBeDefined();
    // As typed, with this bed's gateway, token, key and a directory of its own.
    const script = block!
      .replace(". .molt/demo/env\n", "")
      .replaceAll(".molt/demo/publisher.key", keyFile)
      .replaceAll("/tmp/molt-big", join(dataDir, "big"));
    // PATH as a new user has it: no .tools/bin, no node_modules/.bin (the block names .tools/bin/pnpm itself).
    const userPath = (process.env["PATH"] ?? "").split(delimiter).filter((p) => !p.includes(".tools") && !p.includes("node_modules")).join(delimiter);
    const r = await run("bash", ["-euo", "pipefail", "-c", script], { cwd: repoRoot, env: { PATH: userPath, HOME: dataDir, GW: system.gatewayUrl, OP: OPERATOR } });
    expect(r.code, r.stderr).toBe(0);
    const published = PackageInfo.parse(JSON.parse(r.stdout.trim().split("\n").at(-1)!));
    expect(published).toMatchObject({ component: COMPONENT, version: "2.2.0", platform: "linux-amd64" });
    expect(published.size).toBeGreaterThan(1024 * 1024);
  }, 60_000);

  it("[cli] timeline --follow prints new events as they land, --since filters; audit lists by actor and --since, --verify checks the chain; rollback starts a deployment back that watch follows to exit 0", async () => {
    // Meanwhile, on other hosts: the first deployment rolled back (cli-001, cli-002 to 1.0.0), watched to its end.
    const rollback = jsonOf(OperatorCommandAnswer, await moltHere(["rollback", firstDeployment, "--reason", "back to 1.0.0", "--json"]));
    expect(rollback).toMatchObject({ status: "accepted", location: `/v1/deployments/${rollback.deploymentId}` });
    expect(rollback.deploymentId).not.toBe(firstDeployment);
    const rollbackWatched = moltHere(["watch", rollback.deploymentId, "--json"], VIEWER);
    // Follow cli-006 (still at 1.0.0: its one task so far failed), then deploy to it: its task's events arrive on the follower.
    const follower = spawn(TSX, [CLI_BIN, "timeline", "cli-006", "--follow", "--json"], {
      cwd: dataDir,
      env: { ...process.env, HOME: dataDir, MOLT_URL: system.gatewayUrl, MOLT_TOKEN: VIEWER },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let followed = "";
    follower.stdout.on("data", (d: Buffer) => (followed += d.toString()));
    try {
      await waitFor("the follower's first events", () => (followed.includes("HostRegistered") ? true : undefined), { timeoutMs: 30_000 });
      const id = await deploy(["2.0.0", "--hosts", "cli-006"]);
      await waitFor("the new task's events on the follower", () => (followed.includes('"TaskSucceeded"') ? true : undefined), { timeoutMs: 60_000, intervalMs: 200 });
      const events = followed.trim().split("\n").map((l) => HostTimeline.shape.events.element.parse(JSON.parse(l)));
      expect(events.some((e) => e.type === "TaskAllocated" && (e.data as { deploymentId?: string }).deploymentId === id)).toBe(true);
      // In stream order, each once.
      const seqs = events.map((e) => e.streamSeq);
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    } finally {
      follower.kill("SIGTERM");
    }

    const rolledBack = await rollbackWatched;
    expect(rolledBack.code, rolledBack.stderr).toBe(0);
    expect(WatchLine.parse(JSON.parse(rolledBack.stdout.trim().split("\n").at(-1)!))).toMatchObject({ type: "end", outcome: "completed" });
    const back = jsonOf(HostList, await moltHere(["hosts", "--json"], VIEWER)).hosts.filter((h) => h.hostId === "cli-001" || h.hostId === "cli-002");
    expect(back.map((h) => h.components[COMPONENT])).toEqual(["1.0.0", "1.0.0"]);

    // --since: a span back from now keeps the history, a time to come leaves none.
    expect(jsonOf(HostTimeline, await moltHere(["timeline", "cli-001", "--since", "1h", "--json"], VIEWER)).events.length).toBeGreaterThan(0);
    expect(jsonOf(HostTimeline, await moltHere(["timeline", "cli-001", "--since", "2999-01-01T00:00:00Z", "--json"], VIEWER)).events).toEqual([]);
    expect(jsonOf(AuditPage, await moltHere(["audit", "--since", "1h", "--json"], VIEWER)).entries.length).toBeGreaterThan(0);
    expect(jsonOf(AuditPage, await moltHere(["audit", "--since", "2999-01-01T00:00:00Z", "--json"], VIEWER)).entries).toEqual([]);

    const mine = await molt(["audit", "--actor", "otto", "--kind", "create-deployment", "--json"], { token: VIEWER });
    const entries = jsonOf(AuditPage, mine).entries;
    expect(entries.length).toBeGreaterThan(0);
    expect(new Set(entries.map((e) => `${e.actor} ${e.kind}`))).toEqual(new Set(["otto create-deployment"]));
    const verified = await molt(["audit", "--verify"], { token: ADMIN });
    expect(verified.code, verified.stderr).toBe(0);
    expect(verified.stdout).toMatch(/✓ the audit chain verifies \(\d+ entries checked\)/);
    const notAdmin = await molt(["audit", "--verify"], { token: OPERATOR });
    expect(notAdmin.code).toBe(1);
    expect(notAdmin.stderr).toMatch(/\(403 forbidden\)/);
  }, 180_000);

  it("[cli] the one-file bundle (pnpm build:cli) runs with Node alone", async () => {
    const outfile = join(dataDir, "bundle", "molt.mjs");
    const built = await promisify(execFile)(TSX, [join(repoRoot, "scripts", "build-cli.ts"), "--outfile", outfile], { cwd: repoRoot });
    expect(JSON.parse(built.stdout)).toMatchObject({ outfile });
    const { stdout } = await promisify(execFile)(process.execPath, [outfile, "hosts", "--json"], { cwd: dataDir, env: { PATH: "", HOME: dataDir, MOLT_URL: system.gatewayUrl, MOLT_TOKEN: VIEWER } });
    expect(HostList.parse(JSON.parse(stdout)).hosts).toHaveLength(HOSTS.length);
  }, 120_000);

  it("[cli] in a terminal (tmux), watch draws progress bars that move to the end, in colour", async () => {
    const exec = promisify(execFile);
    const socket = `molt-cli-test-${process.pid}`;
    const tmux = (...args: string[]) => exec("tmux", ["-L", socket, ...args]);
    // A fresh version, so every host is in the plan; pushed as a .tar.gz file this time.
    const archive = join(dataDir, "metrics-agent-2.1.0.tar.gz");
    await writeFile(archive, await buildPackage({ VERSION: "2.1.0\n", "bin/run.sh": `#!/bin/sh\necho ${COMPONENT} 2.1.0\n` }));
    const pushed = await molt(["package", "push", archive, "--component", COMPONENT, "--version", "2.1.0", "--platform", "linux-amd64", "--sign-key", keyFile]);
    expect(pushed.code, pushed.stderr).toBe(0);
    const id = await deploy(["2.1.0", "--hosts", HOSTS.join(","), "--max-unavailable", "1"]);
    const exitFile = join(dataDir, "tmux-exit");
    const command = `env -u NO_COLOR MOLT_URL=${system.gatewayUrl} MOLT_TOKEN=${OPERATOR} HOME=${dataDir} ${TSX} ${CLI_BIN} watch ${id}; echo $? > ${exitFile}; sleep 60`;
    await tmux("new-session", "-d", "-x", "160", "-y", "20", command);
    try {
      const frames: string[] = [];
      await waitFor("watch to end in tmux", async () => {
        const { stdout } = await tmux("capture-pane", "-p");
        const bar = /hosts\s+\S+\s+(\d+)\/6\b/.exec(stdout)?.[0];
        if (bar && frames.at(-1) !== bar) frames.push(bar);
        return (await readFile(exitFile, "utf8").catch(() => "")).trim() || undefined;
      }, { timeoutMs: 120_000, intervalMs: 100 });
      expect((await readFile(exitFile, "utf8")).trim()).toBe("0");
      // The bar was seen at more than one value on its way to 6/6.
      const values = frames.map((f) => Number(/(\d+)\/6\b/.exec(f)![1]));
      expect(new Set(values).size, frames.join("\n")).toBeGreaterThan(1);
      expect(values.at(-1)).toBe(6);
      const { stdout: last } = await tmux("capture-pane", "-p");
      expect(last).toMatch(/batches\s+\S+\s+(\d+)\/\1\b/); // every batch completed
      // A bar per batch, each full and done.
      const total = Number(/batches\s+\S+\s+(\d+)\//.exec(last)![1]);
      for (let b = 0; b < total; b++) expect(last).toMatch(new RegExp(`batch ${b}\\s+\\S+\\s+(\\d+)/\\1 batch done  succeeded \\1`));
      expect(last.match(/^ batch \d+ /gm)).toHaveLength(total);
      expect(last).toContain(`deployment ${id} completed`);
      // A terminal gets colours (the same run piped got none: the first test).
      const { stdout: painted } = await tmux("capture-pane", "-p", "-e");
      expect(painted).toMatch(new RegExp(`deployment ${id} \u001b\\[[0-9;]*mcompleted`));
    } finally {
      await tmux("kill-server").catch(() => undefined);
    }
  }, 240_000);

  // Last in the file: it moves cli-001 and cli-002 back to 2.0.0, which no proof after it could then rely on.
  it("[cli] retry gives the hosts a deployment failed on a new attempt once the fault is gone: its answer parses with the contracts, watch follows the retry batch to exit 0 and the hosts end at the target version", async () => {
    // Every host is at 2.1.0 (the terminal run); back to 2.0.0 on two, cli-002 failing its download.
    await writeFile(faultFile, JSON.stringify({ hosts: ["cli-002"], step: "download", message: "injected: mirror down again" }));
    const id = jsonOf(DeploymentAccepted.extend({ plan: PlanPreview }), await moltHere(["deploy", COMPONENT, "2.0.0", "--hosts", "cli-001,cli-002", "--max-unavailable", "2", "--json"])).deploymentId;
    const failed = await moltHere(["watch", id, "--json"], VIEWER);
    expect(failed.code, `${failed.stdout}\n${failed.stderr}`).toBe(WATCH_EXIT["completed-with-failures"]);
    await rm(faultFile);

    // Read-your-writes across invocations (issue 10): the views lag the retry. Every consumer of the
    // event stream is paused for a moment (the projector keeps answering reads, from views that still
    // say completed-with-failures); `molt watch` started after `molt retry` must not take that for the end.
    const jsm = await jetstreamManager(nc);
    const resumeAt = new Date(Date.now() + 2_500);
    for await (const c of jsm.consumers.list(STREAM_EVENTS)) await jsm.consumers.pause(STREAM_EVENTS, c.name, resumeAt);
    const retried = jsonOf(OperatorCommandAnswer, await moltHere(["retry", id, "--json"]));
    // The same deployment, reopened: the new attempt is one more batch, of kind "retry", with the failed host alone.
    expect(retried).toMatchObject({ deploymentId: id, status: "running" });
    const stale = await fetch(`${system.gatewayUrl}/v1/deployments/${id}`, { headers: { authorization: `Bearer ${VIEWER}` } });
    expect(DeploymentSummary.parse(((await stale.json()) as { deployment: unknown }).deployment).state, "the views lag the retry").toBe("completed");
    const watched = await moltHere(["watch", id, "--json"], VIEWER);
    expect(watched.code, `${watched.stdout}\n${watched.stderr}`).toBe(0);
    expect(Date.now(), "watch waited for the views").toBeGreaterThanOrEqual(resumeAt.getTime());
    const lines = watched.stdout.trim().split("\n").map((l) => WatchLine.parse(JSON.parse(l)));
    expect(lines.at(-1)).toEqual({ type: "end", deploymentId: id, outcome: "completed", exitCode: 0 });
    const last = lines.filter((l) => l.type === "progress").at(-1)!;
    expect(last.counts).toMatchObject({ succeeded: 2 });
    expect(last.counts["failed"] ?? 0).toBe(0);
    const batches = last.deployment.batches.items;
    expect(batches.at(-1)).toMatchObject({ kind: "retry", size: 1, state: "done", finished: 1, outcomes: { succeeded: 1 } });
    expect(batches.slice(0, -1).map((b) => b.kind)).not.toContain("retry");

    // A host's version is what its next heartbeat reports (ComponentVersionObserved), not the task's end: waited for.
    const versions = async () => jsonOf(HostList, await moltHere(["hosts", "--json"], VIEWER)).hosts.filter((h) => h.hostId === "cli-001" || h.hostId === "cli-002").map((h) => h.components[COMPONENT]);
    await waitFor("both hosts seen at 2.0.0", async () => ((await versions()).every((v) => v === "2.0.0") ? true : undefined), { timeoutMs: 15_000, intervalMs: 200 });
    expect(await versions()).toEqual(["2.0.0", "2.0.0"]);
    // cli-002's history: two tasks of this deployment, the first failed at download, the second succeeded.
    const events = jsonOf(HostTimeline, await moltHere(["timeline", "cli-002", "--json"], VIEWER)).events;
    const tasks = events.filter((e) => e.type === "TaskAllocated" && (e.data as { deploymentId?: string }).deploymentId === id).map((e) => e.taskId);
    expect(tasks).toHaveLength(2);
    const endOf = (taskId: string | null) => events.filter((e) => e.taskId === taskId && (e.type === "TaskFailed" || e.type === "TaskSucceeded")).map((e) => `${e.type}${e.step ? ` ${e.step}` : ""}`);
    expect(endOf(tasks[0]!)).toEqual(["TaskFailed download"]);
    expect(endOf(tasks[1]!)).toEqual(["TaskSucceeded"]);
  }, 120_000);
});
