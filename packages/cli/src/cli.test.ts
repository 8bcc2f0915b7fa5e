import { execFile } from "node:child_process";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, sep } from "node:path";
import { PassThrough } from "node:stream";
import { promisify } from "node:util";
import { DeploymentSummary, TrustedKeyConfig } from "@molt/contracts";
import type { Command } from "commander";
import { build } from "esbuild";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { deploymentBody, millis, parseSelector } from "./commands/deploy.js";
import { resolveTarget } from "./config.js";
import { outcomeOf, watch, WATCH_EXIT } from "./commands/watch.js";
import { createGateway, sseMessages } from "./http.js";
import { createOutput, parseSince } from "./output.js";
import { buildProgram } from "./program.js";
import { runCliCaptured } from "./captured.js";

let home: string;
beforeAll(async () => {
  home = await mkdtemp(join(tmpdir(), "molt-cli-unit-"));
});
afterAll(async () => {
  await rm(home, { recursive: true, force: true });
});

/** Runs the CLI in-process with captured, non-terminal output. */
async function run(argv: string[], env: NodeJS.ProcessEnv = {}) {
  const r = await runCliCaptured(argv, { HOME: home, ...env });
  return { code: r.code, out: r.stdout, err: r.stderr };
}

describe("molt: arguments", () => {
  it("[cli] strategy flags become the server's CreateDeploymentBody", () => {
    expect(
      deploymentBody("metrics-agent", "2.1.0", { selector: "cluster=eu-1,platform=linux-amd64,role=web", canary: "1", approval: true, maxUnavailable: "25%", pause: "90s", brake: "10%", brakeMin: "3", timeout: "5m" }),
    ).toEqual({
      component: "metrics-agent",
      version: "2.1.0",
      selector: { cluster: "eu-1", platform: "linux-amd64", labels: { role: "web" } },
      strategy: {
        canary: { size: { hosts: 1 }, approval: true },
        maxUnavailable: { percent: 25 },
        pauseMs: 90_000,
        pauseFromThirdMs: null,
        concurrency: null,
        brake: { threshold: 0.1, minFinished: 3 },
        orderByCluster: false,
      },
      taskTimeoutMs: 300_000,
    });
    expect(parseSelector("version=none")).toEqual({ version: null });
    expect(millis("--pause", "1500")).toBe(1500);
    expect(() => deploymentBody("metrics-agent", "2.1.0", {})).toThrow(/--hosts a,b\) or give a --selector/);
    expect(() => deploymentBody("metrics-agent", "2.1.0", { hosts: "a", maxUnavailable: "80%" })).toThrow(/at most 50 percent/);
  });

  it("[cli] --since takes a span or a time; usage errors exit 2 before any request", async () => {
    expect(parseSince("2h", Date.parse("2026-01-01T12:00:00Z"))).toBe("2026-01-01T10:00:00.000Z");
    expect(parseSince("2026-01-01T12:00:00+01:00")).toBe("2026-01-01T11:00:00.000Z");
    const bad = await run(["audit", "--since", "yesterday", "--url", "http://127.0.0.1:1"]);
    expect(bad.code).toBe(2);
    expect(bad.err).toContain("--since");
    const unknown = await run(["deploy", "x", "1.0.0", "--frobnicate"]);
    expect(unknown.code).toBe(2);
    expect(unknown.err).toContain("unknown option '--frobnicate'");
  });

  it("[cli] every command's --help has an example (walking commander's tree); completion bash names every command and alias", async () => {
    const program = buildProgram({ stdout: new PassThrough() as unknown as NodeJS.WriteStream, stderr: new PassThrough() as unknown as NodeJS.WriteStream, env: {} }, () => undefined);
    const paths: string[][] = [];
    const walk = (cmd: Command, path: string[]) => {
      paths.push(path);
      for (const sub of cmd.commands) walk(sub, [...path, sub.name()]);
    };
    walk(program, []);
    const names = program.commands.map((c) => c.name());
    expect(names).toEqual(expect.arrayContaining(["package", "deploy", "watch", "approve", "pause", "resume", "cancel", "retry", "rollback", "timeline", "hosts", "versions", "audit", "drain", "clear", "completion"]));
    expect(paths).toEqual(expect.arrayContaining([["package", "keygen"], ["package", "push"], ["package", "ls"]]));
    for (const path of paths) {
      const h = await run([...path, "--help"]);
      expect(h.code, path.join(" ")).toBe(0);
      expect(h.out, path.join(" ")).toMatch(/Example:\n {2}\$ (molt|source)/);
      // The example names this very command, with its arguments as it takes them.
      if (path.length > 0 && path[0] !== "completion") expect(h.out, path.join(" ")).toContain(`$ molt ${path.join(" ")}`);
    }
    const completion = await run(["completion", "bash"]);
    expect(completion.out).toContain("complete -o default -F _molt molt");
    const topWords = /""\) echo "([^"]*)"/.exec(completion.out)?.[1]?.split(" ");
    for (const c of program.commands) for (const n of [c.name(), ...c.aliases()]) expect(topWords).toContain(n);
    expect(completion.out).toContain('"package push") echo "--component --version --platform --sign-key');
    expect(completion.out).toContain('drain|quarantine) echo "--component --reason');
  });

  it("[cli] the bash completion completes commands, subcommands and flags when bash runs it; zsh gets it through bashcompinit", async () => {
    const script = (await run(["completion", "bash"])).out;
    const complete = async (...words: string[]) => {
      const line = `source /dev/stdin <<'EOF'\n${script}EOF\nCOMP_WORDS=(${words.map((w) => `'${w}'`).join(" ")}); COMP_CWORD=${words.length - 1}; _molt; echo "\${COMPREPLY[*]}"`;
      const { stdout } = await promisify(execFile)("bash", ["-c", line]);
      return stdout.trim().split(" ");
    };
    expect(await complete("molt", "de")).toEqual(["deploy"]);
    expect(await complete("molt", "package", "")).toEqual(expect.arrayContaining(["keygen", "push", "ls"]));
    expect(await complete("molt", "package", "push", "./dir", "--s")).toEqual(["--sign-key"]);
    expect(await complete("molt", "deploy", "metrics-agent", "2.1.0", "--max")).toEqual(["--max-unavailable"]);
    expect(await complete("molt", "quarantine", "sim-001", "--comp")).toEqual(["--component"]);
    const zsh = await run(["completion", "zsh"]);
    expect(zsh.out).toMatch(/^# zsh completion[\s\S]*bashcompinit[\s\S]*complete -o default -F _molt molt\n$/);
    expect((await run(["completion", "fish"])).code).toBe(2);
  });

  it("[cli] runs from the checkout as the README says: ./molt and .tools/bin/pnpm molt (the root package's script)", async () => {
    const repo = join(import.meta.dirname, "..", "..", "..");
    const exec = promisify(execFile);
    const env = { PATH: process.env["PATH"] ?? "", HOME: home };
    for (const [cmd, args] of [[join(repo, "molt"), ["versions", "--help"]], [join(repo, ".tools", "bin", "pnpm"), ["-s", "molt", "versions", "--help"]]] as const) {
      const { stdout } = await exec(cmd, [...args], { cwd: repo, env });
      expect(stdout, cmd).toContain("Usage: molt versions [options] <component>");
    }
  });

  it("[cli] the CLI's code is its own, contracts' and the publisher library's: no service, no other package", async () => {
    const repo = join(import.meta.dirname, "..", "..", "..");
    const result = await build({ entryPoints: [join(import.meta.dirname, "bin.ts")], bundle: true, platform: "node", format: "esm", write: false, metafile: true, logLevel: "silent", absWorkingDir: repo });
    const ours = Object.keys(result.metafile.inputs)
      .filter((f) => !f.split(sep).includes("node_modules"));
    const places = new Set(ours.map((f) => f.split(sep).slice(0, 2).join("/")));
    expect([...places].sort()).toEqual(["contracts/src", "packages/cli", "packages/publisher"]);
    // The publisher library itself imports contracts only.
    const publisher = JSON.parse(await readFile(join(repo, "packages", "publisher", "package.json"), "utf8")) as { dependencies: Record<string, string> };
    expect(Object.keys(publisher.dependencies).filter((d) => d.startsWith("@molt/"))).toEqual(["@molt/contracts"]);
  });

  it("[cli] keygen --json answers a key contracts' TrustedKeyConfig takes; errors under --json are a JSON document on stderr", async () => {
    const r = await run(["package", "keygen", "--out", home, "--name", "unit", "--json"]);
    expect(r.code, r.err).toBe(0);
    const key = z.object({ keyId: z.string(), publicKey: z.string(), privateKeyFile: z.string(), publicKeyFile: z.string() }).parse(JSON.parse(r.out));
    expect(TrustedKeyConfig.parse({ keyId: key.keyId, publicKey: key.publicKey })).toMatchObject({ keyId: key.keyId });
    const again = await run(["package", "keygen", "--out", home, "--name", "unit", "--json"]);
    expect(again.code).toBe(1);
    expect(JSON.parse(again.err)).toEqual({ error: { message: expect.stringContaining("a key is never overwritten") as string, exitCode: 1 } });
    const unreachable = await run(["hosts", "--json", "--url", "http://127.0.0.1:1"]);
    expect(unreachable.code).toBe(1);
    expect(JSON.parse(unreachable.err)).toEqual({ error: { message: "cannot reach the gateway at http://127.0.0.1:1 (ECONNREFUSED)", exitCode: 1 } });
  });
});

describe("molt watch: how it ends", () => {
  it("[cli] exit 0 completed, 3 failed, 4 cancelled, 5 braked once nothing is in flight; otherwise it keeps watching", () => {
    const at = (state: string, braked: boolean, counts: Record<string, number>) =>
      outcomeOf({
        deployment: DeploymentSummary.parse({
          id: "d-1", component: "c", version: "1.0.0", state, requestedBy: "otto", createdAt: "2026-01-01T00:00:00Z", updatedAt: "2026-01-01T00:00:00Z", completedAt: null,
          hostsTotal: 3, skipped: [], batches: { total: 3, started: 1, completed: 0 }, awaitingApproval: null,
          braked: braked ? { failed: 1, finished: 1, threshold: 0.1 } : null, reason: null,
        }),
        counts,
      });
    const code = (o: ReturnType<typeof outcomeOf>) => (o === null ? null : WATCH_EXIT[o]);
    expect(code(at("completed", false, { succeeded: 3 }))).toBe(0);
    // Completed, but not everywhere: without a brake a failed host does not stop the deployment,
    // and a script must not read that as success.
    expect(at("completed", false, { succeeded: 2, failed: 1 })).toBe("completed-with-failures");
    expect(code(at("completed", false, { succeeded: 1, "timed-out": 1, rejected: 1 }))).toBe(3);
    expect(code(at("failed", false, { failed: 1 }))).toBe(3);
    expect(code(at("cancelled", false, { succeeded: 1 }))).toBe(4);
    expect(code(at("running", true, { failed: 1, running: 1 }))).toBeNull();
    expect(code(at("running", true, { failed: 1, succeeded: 1 }))).toBe(5);
    expect(code(at("running", false, { running: 2 }))).toBeNull();

  });
});

describe("molt watch: a deployment the views do not have yet", () => {
  /** A gateway stand-in over real HTTP: 404 (the projector has not applied it) `missing` times, then its stream. */
  async function gateway(missing: number): Promise<{ url: string; requests: () => number; close: () => Promise<void> }> {
    let n = 0;
    const server = createServer((req, res) => {
      if (req.url === "/v1/projector/status") return void res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ checkpoint: 1, streamLastSeq: 1 }));
      n++;
      if (n <= missing) {
        res.writeHead(404, { "content-type": "application/json" }).end(JSON.stringify({ error: { code: "not_found", message: "no deployment d-1" } }));
        return;
      }
      const deployment = {
        id: "d-1", component: "c", version: "1.0.0", state: "completed", requestedBy: "otto", createdAt: "2026-01-01T00:00:00Z", updatedAt: "2026-01-01T00:00:01Z",
        completedAt: "2026-01-01T00:00:01Z", hostsTotal: 1, skipped: [], batches: { total: 1, started: 1, completed: 1, items: [] }, awaitingApproval: null, braked: null, reason: null,
      };
      res.writeHead(200, { "content-type": "text/event-stream" }).end(`event: progress\nid: 1\ndata: ${JSON.stringify({ deployment, counts: { allocated: 0, dispatched: 0, running: 0, succeeded: 1, failed: 0, rejected: 0, "timed-out": 0, cancelled: 0 } })}\n\n`);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const { port } = server.address() as AddressInfo;
    return { url: `http://127.0.0.1:${port}`, requests: () => n, close: () => new Promise((r) => server.close(() => r())) };
  }
  const ctxFor = (url: string) => {
    const out = createOutput({ json: false, env: {}, stdout: new PassThrough() as unknown as NodeJS.WriteStream, stderr: new PassThrough() as unknown as NodeJS.WriteStream });
    return { out, env: {}, gateway: () => Promise.resolve(createGateway({ url, token: undefined })) };
  };

  it("[cli] a 404 right after deploy is waited out (deploy --watch, watch $(deploy -q)); past the grace it is the server's message", async () => {
    const lagging = await gateway(3);
    try {
      expect(await watch(ctxFor(lagging.url), "d-1")).toBe(0);
      expect(lagging.requests()).toBe(4);
    } finally {
      await lagging.close();
    }
    const never = await gateway(Number.MAX_SAFE_INTEGER);
    try {
      await expect(watch(ctxFor(never.url), "d-1", { notFoundGraceMs: 300 })).rejects.toThrow("no deployment d-1 (404 not_found)");
    } finally {
      await never.close();
    }
  });
});

describe("molt watch: views older than the command before it (retry && watch)", () => {
  const deployment = (state: string) => ({
    id: "d-1", component: "c", version: "1.0.0", state, requestedBy: "otto", createdAt: "2026-01-01T00:00:00Z", updatedAt: "2026-01-01T00:00:01Z",
    completedAt: null, hostsTotal: 2, skipped: [], batches: { total: 1, started: 1, completed: 1, items: [] }, awaitingApproval: null, braked: null, reason: null,
  });
  const counts = (failed: number) => ({ allocated: 0, dispatched: 0, running: 0, succeeded: 2 - failed, failed, rejected: 0, "timed-out": 0, cancelled: 0 });

  it("[cli] an end from a snapshot before the stream's end at start is not believed: watch waits for the views' checkpoint, then reads a fresh snapshot", async () => {
    // The stream's end is 7 (the retry); the views are at 5 for three polls, then at 7.
    let polls = 0;
    const streams: Array<string | undefined> = [];
    const server = createServer((req, res) => {
      if (req.url === "/v1/projector/status") {
        const checkpoint = polls++ < 3 ? 5 : 7;
        return void res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ checkpoint, streamLastSeq: 7, lag: 7 - checkpoint }));
      }
      const last = req.headers["last-event-id"];
      streams.push(typeof last === "string" ? last : undefined);
      const snapshot = polls > 3 ? { id: 7, deployment: deployment("completed"), counts: counts(0) } : { id: 5, deployment: deployment("completed"), counts: counts(1) };
      res.writeHead(200, { "content-type": "text/event-stream" }).end(`event: progress\nid: ${snapshot.id}\ndata: ${JSON.stringify({ deployment: snapshot.deployment, counts: snapshot.counts })}\n\n`);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    try {
      const stdout = new PassThrough();
      let text = "";
      stdout.on("data", (d: Buffer) => (text += d.toString()));
      const out = createOutput({ json: false, env: {}, stdout: stdout as unknown as NodeJS.WriteStream, stderr: new PassThrough() as unknown as NodeJS.WriteStream });
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      // Exit 3 (completed-with-failures, from the views at 5) before the fix.
      expect(await watch({ out, env: {}, gateway: () => Promise.resolve(createGateway({ url, token: undefined })) }, "d-1", { pollMs: 5 })).toBe(0);
      expect(polls).toBe(4); // the start, then until the checkpoint reached 7
      expect(streams).toEqual([undefined, "5"]); // reopened from the stale snapshot's id: the server sends a fresh one
      expect(text).toContain("deployment d-1 completed");
      expect(text).not.toContain("completed-with-failures");
    } finally {
      await new Promise((r) => server.close(() => r(undefined)));
    }
  });
});

describe("molt: colours", () => {
  it("[cli] colours and bars only on a terminal, never with NO_COLOR, --no-color or --json", () => {
    const terminal = Object.assign(new PassThrough(), { isTTY: true }) as unknown as NodeJS.WriteStream;
    const pipe = new PassThrough() as unknown as NodeJS.WriteStream;
    const painted = (o: ReturnType<typeof createOutput>) => o.c.green("ok") !== "ok";
    const at = (stdout: NodeJS.WriteStream, env: NodeJS.ProcessEnv, flags: { json?: boolean; color?: boolean } = {}) =>
      createOutput({ json: flags.json ?? false, ...(flags.color !== undefined ? { color: flags.color } : {}), env, stdout, stderr: pipe });
    expect(painted(at(terminal, {}))).toBe(true);
    expect(at(terminal, {}).tty).toBe(true);
    expect(painted(at(terminal, { NO_COLOR: "1" }))).toBe(false);
    expect(painted(at(terminal, {}, { color: false }))).toBe(false);
    expect(painted(at(terminal, {}, { json: true }))).toBe(false);
    expect(at(terminal, {}, { json: true }).tty).toBe(false);
    expect(painted(at(pipe, {}))).toBe(false);
    expect(at(pipe, {}).tty).toBe(false);
  });
});

describe("molt: where the gateway is", () => {
  it("[cli] a flag beats MOLT_URL/MOLT_TOKEN, which beat ~/.config/molt/config.json", async () => {
    await mkdir(join(home, ".config", "molt"), { recursive: true });
    await writeFile(join(home, ".config", "molt", "config.json"), JSON.stringify({ url: "http://file:1/", token: "from-file" }));
    expect(await resolveTarget({}, { HOME: home })).toEqual({ url: "http://file:1", token: "from-file" });
    expect(await resolveTarget({}, { HOME: home, MOLT_URL: "http://env:2", MOLT_TOKEN: "from-env" })).toEqual({ url: "http://env:2", token: "from-env" });
    expect(await resolveTarget({ url: "http://flag:3", token: "from-flag" }, { HOME: home, MOLT_URL: "http://env:2" })).toEqual({ url: "http://flag:3", token: "from-flag" });
    await expect(resolveTarget({}, { HOME: join(home, "nowhere") })).rejects.toThrow(/no gateway URL: pass --url, set MOLT_URL/);
    await expect(resolveTarget({ config: join(home, "missing.json") }, { HOME: home })).rejects.toThrow(/cannot read the config file/);
  });
});

describe("molt: server-sent events", () => {
  it("[cli] events split across chunks, with ids, comments and CRLF", async () => {
    const chunks = [Buffer.from(': keep-alive\n\nevent: task\nid: 7\ndata: {"a"'), Buffer.from(":1}\r\n\r\nevent: progress\ndata: {}\n\n")];
    const got = [];
    for await (const m of sseMessages(chunks)) got.push(m);
    expect(got).toEqual([
      { event: "task", id: "7", data: '{"a":1}' },
      { event: "progress", id: "7", data: "{}" },
    ]);
  });
});
