import { mkdtemp, mkdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { deploymentBody, millis, parseSelector } from "./commands/deploy.js";
import { resolveTarget } from "./config.js";
import { sseMessages } from "./http.js";
import { createOutput, parseSince } from "./output.js";
import { runCli } from "./program.js";

let home: string;
beforeAll(async () => {
  home = await mkdtemp(join(tmpdir(), "molt-cli-unit-"));
});
afterAll(async () => {
  await rm(home, { recursive: true, force: true });
});

/** Runs the CLI in-process with captured, non-terminal output. */
async function run(argv: string[], env: NodeJS.ProcessEnv = {}) {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = "";
  let err = "";
  stdout.on("data", (d: Buffer) => (out += d.toString()));
  stderr.on("data", (d: Buffer) => (err += d.toString()));
  const code = await runCli(argv, { stdout: stdout as unknown as NodeJS.WriteStream, stderr: stderr as unknown as NodeJS.WriteStream, env: { HOME: home, ...env } });
  return { code, out, err };
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

  it("[cli] every command's --help has an example; completion bash names every command", async () => {
    const top = await run(["--help"]);
    expect(top.code).toBe(0);
    const names = [...top.out.matchAll(/^ {2}([a-z]+) /gm)].map((m) => m[1]!).filter((n) => n !== "help");
    expect(names).toEqual(expect.arrayContaining(["package", "deploy", "watch", "approve", "rollback", "timeline", "hosts", "versions", "audit", "completion"]));
    for (const cmd of [...names.filter((n) => n !== "package").map((n) => [n]), ["package", "keygen"], ["package", "push"], ["package", "ls"]]) {
      const h = await run([...cmd, "--help"]);
      expect(h.code, cmd.join(" ")).toBe(0);
      expect(h.out, cmd.join(" ")).toMatch(/Example:\n {2}\$ (molt|source)/);
    }
    const completion = await run(["completion", "bash"]);
    expect(completion.out).toContain("complete -o default -F _molt molt");
    for (const n of names) expect(completion.out).toContain(n);
    expect(completion.out).toContain('"package push") echo "--component --version --platform --sign-key');
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
