import { readFile } from "node:fs/promises";
import { ComponentName, HostId, Labels, TrustedKeyConfig, trustedKeys } from "@molt/contracts";
import { z } from "zod";

const ms = (fallback: number) => z.number().int().min(0).max(86_400_000).default(fallback);
/** A shell command line, run with `/bin/sh -c` in the component's `current` dir. */
const Command = z.string().min(1).max(4000);
const Unit = z.string().regex(/^[A-Za-z0-9@._:-]{1,200}\.(service|scope)$/, "must be a systemd unit name ending in .service or .scope");

/**
 * One component this host manages. `managed`: a process Molt stops and starts; `third-party`:
 * files only, unless stop/start are declared; `self`: the agent itself.
 * Every duration is in milliseconds, so tests can run the whole machine fast.
 */
export const ComponentConfig = z
  .object({
    name: ComponentName,
    kind: z.enum(["self", "managed", "third-party"]),
    /**
     * Where the component lives (versions/, current, shared/…), if not `<host root>/components/<name>`:
     * the agent links `<host root>/components/<name>` to it at start.
     */
    root: z.string().regex(/^\//, "root must be an absolute path").max(1000).optional(),
    stop: z
      .object({
        command: Command.optional(),
        systemdUnit: Unit.optional(),
        /** After the stop command (or at once without one): wait this long for the process to end, then TERM, then KILL. */
        graceMs: ms(10_000),
      })
      .strict()
      .refine((s) => !(s.command && s.systemdUnit), "give stop.command or stop.systemdUnit, not both")
      .optional(),
    start: z
      .object({ command: Command.optional(), systemdUnit: Unit.optional() })
      .strict()
      .refine((s) => (s.command === undefined) !== (s.systemdUnit === undefined), "give exactly one of start.command or start.systemdUnit")
      .optional(),
    /** Where the process writes its pid (relative to the component dir, or absolute). */
    pidFile: z.string().min(1).max(1000).optional(),
    /** A regular expression matched against /proc/<pid>/cmdline (NULs as spaces) to find the process. */
    processMatch: z
      .string()
      .min(1)
      .max(500)
      .refine((r) => {
        try {
          new RegExp(r);
          return true;
        } catch {
          return false;
        }
      }, "must be a valid regular expression")
      .optional(),
    health: z
      .object({
        command: Command.optional(),
        /** GET must answer 2xx; with `versionUrl` unset, its body is also where the version is read. */
        url: z.url().optional(),
        /** GET answers the running version: plain text, or JSON with a `version` field. */
        versionUrl: z.url().optional(),
        /** The check must pass at every probe for this long after START. */
        watchMs: ms(5_000),
        intervalMs: ms(500),
        /** How long the new version may take to pass its first probe. */
        startTimeoutMs: ms(30_000),
        probeTimeoutMs: ms(2_000),
        /** `self`: the agent's local heartbeat must be younger than this at every probe. */
        heartbeatStaleMs: ms(15_000),
      })
      .strict()
      .optional(),
    hooks: z
      .object({
        /** Before STOP (drain from a load balancer); failing it takes the rollback path. */
        beforeStop: Command.optional(),
        /** After VERIFY (put it back). */
        afterVerify: Command.optional(),
        timeoutMs: ms(60_000),
      })
      .strict()
      .optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    if ((c.kind === "managed" || c.kind === "self") && c.start === undefined)
      ctx.addIssue({ code: "custom", path: ["start"], message: `a ${c.kind} component needs start (a command or a systemd unit)` });
    // A unit's process belongs to systemd: stopping it behind systemd's back (SIGTERM to a pid) can
    // be undone by its Restart=, and a unit that never stopped makes START a no-op on the old process.
    const unit = c.start?.systemdUnit;
    if (unit !== undefined && c.stop?.systemdUnit === undefined && c.stop?.command === undefined)
      ctx.addIssue({ code: "custom", path: ["stop"], message: `a component started by systemd unit ${unit} is stopped through it too: give stop.systemdUnit (or stop.command)` });
    if (unit === undefined && c.stop?.systemdUnit !== undefined)
      ctx.addIssue({ code: "custom", path: ["stop", "systemdUnit"], message: "only for a component started by a systemd unit (start.systemdUnit)" });
    // START of a unit records no pid: without these VERIFY would pass on nothing.
    if (unit !== undefined && c.kind !== "self" && c.health === undefined && c.pidFile === undefined && c.processMatch === undefined)
      ctx.addIssue({
        code: "custom",
        path: ["health"],
        message: `a component started by systemd unit ${unit} needs health, pidFile or processMatch, or VERIFY could not tell that the new version runs`,
      });
    // The agent itself is verified by its own heartbeat; anything else needs a command or a URL to probe.
    if (c.health !== undefined && c.kind !== "self" && c.health.command === undefined && c.health.url === undefined)
      ctx.addIssue({ code: "custom", path: ["health"], message: "give health.command or health.url" });
  });
export type ComponentConfig = z.infer<typeof ComponentConfig>;

/** Files only: what a component without a config (the simulator, `MOLT_COMPONENTS`) is. */
export const filesOnly = (name: string): ComponentConfig => ({ name, kind: "third-party" });

/** The agent's configuration file (`MOLT_CONFIG`, JSON); see infra/agent/agent.example.json. */
export const AgentConfigFile = z
  .object({
    hostId: HostId,
    root: z.string().min(1),
    cluster: z.string().regex(/^[a-z0-9._-]{1,63}$/, "cluster must be [a-z0-9._-], at most 63 characters").optional(),
    labels: Labels.default({}),
    nats: z
      .object({
        urls: z.array(z.string().regex(/^(nats|tls|wss?):\/\/\S+$/, "must be a nats://, tls:// or ws(s):// URL")).min(1),
        /** A NATS credentials file (JWT + nkey seed) for this host's own identity. */
        credentials: z.string().min(1).optional(),
        /** TLS: the CA the servers' certificates chain to; a client certificate and key if the servers verify clients. */
        ca: z.string().min(1).optional(),
        cert: z.string().min(1).optional(),
        key: z.string().min(1).optional(),
      })
      .strict(),
    /** Publisher keys whose signatures this host accepts (never fetched at run time). */
    trustedKeys: z.array(TrustedKeyConfig).default([]),
    /** One mirror base URL or several, tried in order before the package URL's origin. */
    packageMirror: z
      .union([z.url(), z.array(z.url()).min(1)])
      .optional()
      .transform((m) => (Array.isArray(m) ? m.join(",") : m)),
    components: z.array(ComponentConfig).refine((cs) => new Set(cs.map((c) => c.name)).size === cs.length, "component names must not repeat"),
  })
  .strict();
export type AgentConfigFile = z.infer<typeof AgentConfigFile>;

/** Reads and validates the config file; the error lists every bad field by its path, one per line. */
export async function loadAgentConfigFile(path: string): Promise<AgentConfigFile> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path, "utf8"));
  } catch (err) {
    throw new Error(`agent config ${path}: ${(err as Error).message}`);
  }
  const parsed = AgentConfigFile.safeParse(raw);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join(".") || "(file)"}: ${i.message}`);
    throw new Error(`agent config ${path} is invalid:\n${lines.join("\n")}`);
  }
  try {
    trustedKeys(parsed.data.trustedKeys);
  } catch (err) {
    throw new Error(`agent config ${path} is invalid:\n  trustedKeys: ${(err as Error).message}`);
  }
  return parsed.data;
}
