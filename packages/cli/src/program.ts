import { Command, CommanderError, Option } from "commander";
import { OperatorCommandName } from "@molt/contracts";
import { resolveTarget } from "./config.js";
import type { Context } from "./context.js";
import { createGateway } from "./http.js";
import { CliError, createOutput } from "./output.js";
import { audit, AUDIT_BROKEN_EXIT } from "./commands/audit.js";
import { bashCompletion, zshCompletion } from "./commands/completion.js";
import { deploy } from "./commands/deploy.js";
import { hosts, quarantine, versions } from "./commands/fleet.js";
import { operate } from "./commands/operate.js";
import { keygen, ls, push } from "./commands/package.js";
import { timeline } from "./commands/timeline.js";
import { watch, WATCH_EXIT } from "./commands/watch.js";

export interface CliIo {
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
  env: NodeJS.ProcessEnv;
}

interface GlobalFlags {
  url?: string;
  token?: string;
  config?: string;
  json: boolean;
  color: boolean;
}

const EXIT_CODES = `Exit codes: 0 done; 1 error (gateway unreachable, request refused: the server's message is printed);
2 usage; watch: ${WATCH_EXIT.failed} failed or completed with failed hosts, ${WATCH_EXIT.cancelled} cancelled, ${WATCH_EXIT.braked} braked; audit --verify: ${AUDIT_BROKEN_EXIT} chain broken.`;

const example = (...lines: string[]) => `\nExample:\n${lines.map((l) => `  $ ${l}`).join("\n")}\n`;

/** The command tree; each action sets the exit code it ends with. */
export function buildProgram(io: CliIo, setExit: (code: number) => void): Command {
  const program = new Command("molt");
  const ctxOf = (cmd: Command): Context => {
    const flags = cmd.optsWithGlobals<GlobalFlags>();
    const out = createOutput({ json: flags.json, color: flags.color, env: io.env, stdout: io.stdout, stderr: io.stderr });
    return { out, env: io.env, gateway: async () => createGateway(await resolveTarget(flags, io.env)) };
  };
  // Each action gets its command last (commander's convention): the context comes from it.
  const act =
    <A extends unknown[]>(fn: (ctx: Context, ...args: A) => Promise<number | void | string | null>) =>
    async (...args: unknown[]) => {
      const cmd = args.at(-1) as Command;
      const result = await fn(ctxOf(cmd), ...(args.slice(0, -1) as A));
      setExit(typeof result === "number" ? result : 0);
    };

  program
    .description("Molt's command line: packages, deployments, live progress, timelines, the fleet and the audit log, through the gateway")
    .option("--url <url>", "gateway URL (else MOLT_URL, else the config file)")
    .option("--token <token>", "bearer token (else MOLT_TOKEN, else the config file)")
    .option("--config <file>", "config file with {url, token} (default ~/.config/molt/config.json)")
    .option("--json", "machine-readable output: one JSON document (a JSON line per event when following)", false)
    .option("--no-color", "no colours (also off when NO_COLOR is set or stdout is not a terminal)")
    .showHelpAfterError("(molt --help for usage)")
    .addHelpText("after", `${example("molt --url http://127.0.0.1:8080 --token $OP hosts", "molt deploy metrics-agent 2.1.0 --selector platform=linux-amd64 --canary 1 && molt watch <id>")}\n${EXIT_CODES}\n`);

  const pkg = program
    .command("package")
    .description("publisher keys and package archives")
    .addHelpText("after", example("molt package keygen --name release", "molt package push ./build --component metrics-agent --version 2.1.0 --sign-key release.key", "molt package ls metrics-agent"));
  pkg
    .command("keygen")
    .description("write a new ed25519 publisher key pair (NAME.key, mode 0600, and NAME.pub); prints the key id to trust")
    .option("--out <dir>", "directory", ".")
    .option("--name <name>", "file name stem", "publisher")
    .addHelpText("after", example("molt package keygen --out ~/.molt --name release"))
    .action(act((ctx, o: { out: string; name: string }) => keygen(ctx, o)));
  pkg
    .command("push")
    .description("upload a package: a .tar.gz, or a directory packed into one (its contents at the archive's root); signed with --sign-key")
    .argument("<path>", "a .tar.gz file or a directory")
    .requiredOption("--component <name>", "component name")
    .requiredOption("--version <version>", "version")
    .option("--platform <os-arch>", "platform (default: this machine's, e.g. linux-amd64)")
    .option("--sign-key <file>", "publisher private key (PEM) to sign the manifest with")
    .addHelpText("after", example("molt package push ./build --component metrics-agent --version 2.1.0 --platform linux-amd64 --sign-key .molt/demo/publisher.key"))
    .action(act((ctx, path: string, o: { component: string; version: string; platform?: string; signKey?: string }) => push(ctx, path, o)));
  pkg
    .command("ls")
    .description("the published packages of a component, newest first")
    .argument("<component>")
    .addHelpText("after", example("molt package ls metrics-agent"))
    .action(act((ctx, component: string) => ls(ctx, component)));

  program
    .command("deploy")
    .description("plan a deployment, print the plan (batches, skipped hosts and why), then start it")
    .argument("<component>")
    .argument("<version>")
    .option("--hosts <a,b,…>", "explicit hosts")
    .option("--selector <k=v,…>", "hosts by cluster=, platform=, version= (none: not installed) or any label k=v")
    .option("--canary <n|n%>", "first batch size")
    .option("--approval", "wait for `molt approve` after the canary")
    .option("--max-unavailable <n|n%>", "batch size and most hosts in flight (default 25%)")
    .option("--pause <ms|90s|5m>", "wait between batches")
    .option("--pause-from-third <ms|90s|5m>", "wait between batches from the third on")
    .option("--concurrency <n>", "cap on tasks in flight")
    .option("--brake <share|n%>", "stop allocating when failed/finished exceeds this")
    .option("--brake-min <n>", "…once this many tasks finished (default 1)")
    .option("--by-cluster", "one cluster's batches before the next")
    .option("--timeout <ms|90s|5m>", "per-host task timeout")
    .option("--allow-empty", "accept a plan that skips every host")
    .option("--idempotency-key <key>", "send this key (a rerun with it is the same deployment)")
    .option("--dry-run", "print the plan only; records nothing")
    .option("--watch", "follow the deployment after it starts (exit code as `molt watch`)")
    .option("-q, --quiet", "print only the deployment id: DEP=$(molt deploy … -q)")
    .addHelpText("after", example("molt deploy metrics-agent 2.1.0 --selector cluster=eu-1,platform=linux-amd64 --canary 1 --approval --max-unavailable 25% --brake 10%", "molt deploy metrics-agent 2.1.0 --hosts sim-001,sim-002 --dry-run"))
    .action(
      act(async (ctx, component: string, version: string, o: Parameters<typeof deploy>[3] & { watch?: boolean }) => {
        const id = await deploy(ctx, component, version, o);
        return id !== null && o.watch ? watch(ctx, id) : 0;
      }),
    );

  program
    .command("watch")
    .description("live progress of a deployment until it ends: bars, counts per state, failures as they happen")
    .argument("<deployment>")
    .addHelpText("after", `${example("molt watch 01JD… && echo rolled out")}\nExits 0 when the deployment completes on every planned host, ${WATCH_EXIT.failed} when it failed or completed with failed hosts, ${WATCH_EXIT.cancelled} cancelled, ${WATCH_EXIT.braked} braked (stopped by its brake).\nA deployment the views do not show yet (just accepted) is waited for up to 10 s; an end the views show before they have applied what was committed when watch started (molt retry X && molt watch X) is waited past.\n`)
    .action(act((ctx, id: string) => watch(ctx, id)));

  for (const name of OperatorCommandName.options) {
    program
      .command(name)
      .description(`${name} a deployment${name === "rollback" ? " (starts a new deployment back to each host's previous version)" : ""}`)
      .argument("<deployment>")
      .option("--reason <text>", "recorded with the command")
      .option("--idempotency-key <key>", "send this key (a rerun with it is the same command)")
      .addHelpText("after", example(`molt ${name} 01JD… --reason "checked the canary"`))
      .action(act((ctx, id: string, o: { reason?: string; idempotencyKey?: string }) => operate(ctx, name, id, o)));
  }

  program
    .command("timeline")
    .description("a host's upgrade history, step by step with times and durations")
    .argument("<host>")
    .option("--since <time|15m|2h|7d>", "only events from then on")
    .option("--follow", "keep printing new events")
    .addHelpText("after", example("molt timeline sim-001 --since 1h", "molt timeline sim-001 --follow"))
    .action(act((ctx, host: string, o: { since?: string; follow?: boolean }) => timeline(ctx, host, o)));

  program
    .command("hosts")
    .description("the fleet: each host's platform, cluster, presence and installed versions")
    .option("--cluster <name>")
    .option("--platform <os-arch>")
    .addOption(new Option("--online", "only hosts heartbeating").conflicts("offline"))
    .option("--offline", "only hosts not heartbeating")
    .option("--limit <n>", "at most this many", "1000")
    .addHelpText("after", example("molt hosts --online --platform linux-amd64"))
    .action(act((ctx, o: Parameters<typeof hosts>[1]) => hosts(ctx, o)));

  program
    .command("drain")
    .alias("quarantine")
    .description("quarantine a host's slot for a component by hand: later deployments' plans skip it (with the reason) until `molt clear`")
    .argument("<host>")
    .requiredOption("--component <name>", "component")
    .option("--reason <text>", "shown as the skip reason in later plans")
    .addHelpText("after", example('molt drain sim-003 --component metrics-agent --reason "disk replacement"'))
    .action(act((ctx, host: string, o: { component: string; reason?: string }) => quarantine(ctx, "quarantine", host, o)));

  program
    .command("clear")
    .description("clear a host slot's quarantine (set by `molt drain` or by its failures): later plans include it again")
    .argument("<host>")
    .requiredOption("--component <name>", "component")
    .addHelpText("after", example("molt clear sim-003 --component metrics-agent"))
    .action(act((ctx, host: string, o: { component: string }) => quarantine(ctx, "clear", host, o)));

  program
    .command("versions")
    .description("how many hosts run each version of a component")
    .argument("<component>")
    .addHelpText("after", example("molt versions metrics-agent"))
    .action(act((ctx, component: string) => versions(ctx, component)));

  program
    .command("audit")
    .description("who did what: the audit log, newest first; --verify checks its hash chain (admin)")
    .option("--actor <actor>")
    .option("--kind <kind>", "e.g. create-deployment, upload-package")
    .option("--since <time|15m|2h|7d>")
    .option("--limit <n>", "at most this many", "50")
    .option("--verify", "verify the chain instead of listing (admin token)")
    .option("--full", "with --verify: recompute every entry")
    .addHelpText("after", example("molt audit --actor demo-operator --since 1h", "molt audit --verify"))
    .action(act((ctx, o: Parameters<typeof audit>[1]) => audit(ctx, o)));

  program
    .command("completion")
    .description("print a shell completion script")
    .argument("<shell>", "bash or zsh")
    .addHelpText("after", example("source <(molt completion bash)", "source <(molt completion zsh)"))
    .action((shell: string) => {
      if (shell !== "bash" && shell !== "zsh") throw new CliError(`no completion for ${shell}: bash or zsh`, 2);
      io.stdout.write(shell === "bash" ? bashCompletion(program) : zshCompletion(program));
      setExit(0);
    });
  return program;
}

/** Runs one command line; resolves to the exit code (never exits the process itself). */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  let code = 0;
  const program = buildProgram(io, (c) => (code = c));
  const json = argv.includes("--json");
  const apply = (cmd: Command) => {
    cmd.exitOverride().configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) });
    for (const sub of cmd.commands) apply(sub);
  };
  apply(program);
  try {
    await program.parseAsync(argv, { from: "user" });
    return code;
  } catch (err) {
    if (err instanceof CommanderError) return err.code === "commander.helpDisplayed" || err.code === "commander.version" || err.exitCode === 0 ? 0 : 2;
    const e = err instanceof CliError ? err : new CliError(err instanceof Error ? err.message : String(err));
    io.stderr.write(json ? `${JSON.stringify({ error: { message: e.message, exitCode: e.exitCode } })}\n` : `molt: ${e.message}\n`);
    return e.exitCode;
  }
}
