import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, join, resolve } from "node:path";
import { freePort, waitFor } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { run, type Run } from "./run.js";

/**
 * A new user's first ten minutes, as the README tells them: `scripts/start.sh`, then the README's
 * command blocks (those marked `<!-- readme-test: run -->`) typed in another shell with nothing
 * but Node on PATH (no pnpm, no node_modules/.bin). The demo's data dir and port are swapped for
 * the test's own, so it never touches a demo you are running.
 */
const repoRoot = resolve(import.meta.dirname, "../..");
let dataDir: string;
let port: number;
let demo: ChildProcess | undefined;
let demoOut = "";

/** PATH as a new user has it: without the project's .tools/bin and node_modules/.bin. */
const userPath = (process.env["PATH"] ?? "")
  .split(delimiter)
  .filter((p) => !p.includes(".tools") && !p.includes("node_modules"))
  .join(delimiter);

function sh(script: string, opts: { cwd?: string; env?: Record<string, string> } = {}): Promise<Run> {
  return run("bash", ["-euo", "pipefail", "-c", script], { cwd: opts.cwd ?? repoRoot, env: { HOME: dataDir, PATH: userPath, ...opts.env } });
}

/** The README's runnable blocks, with the demo's paths swapped for the test's. */
async function readmeBlocks(): Promise<string[]> {
  const readme = await readFile(join(repoRoot, "README.md"), "utf8");
  return [...readme.matchAll(/<!-- readme-test: run -->\n```sh\n([\s\S]*?)```/g)].map((m) =>
    m[1]!.replaceAll(".molt/demo", dataDir).replaceAll("/tmp/molt-pkg", join(dataDir, "pkg")),
  );
}

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "molt-first-"));
  port = await freePort();
  demo = spawn("bash", ["scripts/start.sh", "--data-dir", dataDir, "--port", String(port), "--hosts", "4", "--step-delay-ms", "50"], {
    cwd: repoRoot,
    env: { ...process.env, PATH: userPath },
    stdio: ["ignore", "pipe", "pipe"],
  });
  demo.stdout!.on("data", (d: Buffer) => (demoOut += d.toString()));
  demo.stderr!.on("data", (d: Buffer) => (demoOut += d.toString()));
  await waitFor("the demo to print the deployment id", async () => ((await readFile(join(dataDir, "env"), "utf8").catch(() => "")).includes("DEP=") ? true : undefined), {
    timeoutMs: 200_000,
    intervalMs: 250,
  }).catch((err: Error) => {
    throw new Error(`${err.message}\n${demoOut}`);
  });
}, 240_000);

afterAll(async () => {
  if (demo && demo.exitCode === null) {
    const exited = new Promise((r) => demo!.once("exit", r));
    demo.kill("SIGINT");
    await Promise.race([exited, new Promise((r) => setTimeout(r, 30_000))]);
    if (demo.exitCode === null) demo.kill("SIGKILL");
  }
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
}, 60_000);

describe("the first ten minutes", () => {
  it("[cli] the demo prints export lines (written to DIR/env), its stable port and the deployment id", async () => {
    const env = await readFile(join(dataDir, "env"), "utf8");
    expect(env).toMatch(new RegExp(`^export GW=http://127\\.0\\.0\\.1:${port} OP=op-[0-9a-f]{32} VIEW=view-[0-9a-f]{32}\n`));
    expect(env).toContain("export MOLT_URL=$GW MOLT_TOKEN=$OP\n");
    const dep = /export DEP=(d-[a-z0-9]+)/.exec(env)?.[1];
    expect(dep).toBeDefined();
    expect(demoOut).toContain(`export DEP=${dep}`);
    expect(demoOut).toContain(`gateway:        http://127.0.0.1:${port}`);
  });

  it("[cli] start.sh --help prints its usage; a second start.sh on the same data dir refuses and leaves the running one's data alone", async () => {
    const help = await sh("scripts/start.sh --help");
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("usage: scripts/start.sh [options]");
    expect(help.stdout + help.stderr).not.toMatch(/\n\s+at /); // no stack trace
    const bad = await sh("scripts/start.sh --hosts");
    expect(bad.code).toBe(2);
    expect(bad.stderr).not.toMatch(/\n\s+at /);

    const second = await sh(`scripts/start.sh --data-dir ${dataDir} --port ${await freePort()}`);
    expect(second.code).toBe(2);
    expect(second.stderr).toMatch(/a demo \(pid \d+\) is running on .*: stop it/);
    await stat(join(dataDir, "env"));
    await stat(join(dataDir, "publisher.key"));
  });

  it("[cli] every runnable README block works as typed, with only Node on PATH", async () => {
    const blocks = await readmeBlocks();
    expect(blocks.length).toBeGreaterThanOrEqual(2);
    const [cli, api] = blocks;
    const r = await sh(cli!);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/deployment d-[a-z0-9]+ completed/);
    expect(r.stdout).toContain("metrics-agent 2.1.0 linux-amd64 published");
    expect(r.stdout).toMatch(/plan: 4 host\(s\)/);
    expect(r.stdout).toMatch(/✓ approve: deployment d-[a-z0-9]+ is/);
    const a = await sh(api!);
    expect(a.code, `${a.stdout}\n${a.stderr}`).toBe(0);
    expect(a.stdout).toContain('"dryRun":true');
    expect(a.stdout).not.toContain('"code":"unauthorized"');
    expect(a.stdout).not.toContain('"code":"validation"');
  }, 240_000);
});
