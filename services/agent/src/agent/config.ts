import { parseArgs } from "node:util";
import { ComponentName, HostId, Labels } from "@molt/contracts";
import { metricsEnv, natsEnv } from "@molt/runtime";
import { z } from "zod";
import { parseSeeds } from "../host/layout.js";

const millis = (fallback: number) => z.coerce.number().int().positive().default(fallback);

const list = z
  .string()
  .optional()
  .transform((s) => (s ?? "").split(",").map((x) => x.trim()).filter((x) => x.length > 0));

/** `k=v,k=v` → labels, with the same key rule feedback applies. */
const labels = list.transform((pairs, ctx) => {
  const out: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf("=");
    if (eq <= 0) {
      ctx.addIssue({ code: "custom", message: `label ${JSON.stringify(pair)} must look like key=value` });
      return z.NEVER;
    }
    out[pair.slice(0, eq).trim()] = pair.slice(eq + 1).trim();
  }
  const parsed = Labels.safeParse(out);
  if (!parsed.success) {
    ctx.addIssue({ code: "custom", message: `labels: ${parsed.error.issues.map((i) => i.message).join("; ")}` });
    return z.NEVER;
  }
  return parsed.data;
});

const seeds = z
  .string()
  .optional()
  .transform((s, ctx) => {
    try {
      return parseSeeds(s);
    } catch {
      ctx.addIssue({ code: "custom", message: "must look like component@version[,component@version…]" });
      return z.NEVER;
    }
  });

/** The agent's environment. MOLT_HOST_ID is required unless MOLT_SIM asks for simulated hosts. */
export const AgentEnv = z
  .object({
    MOLT_NATS_URL: z.string().min(1).default("nats://127.0.0.1:4222"),
    /** This host's (or the simulator's) NATS credentials and TLS files, when there is no MOLT_CONFIG file. */
    MOLT_NATS_CREDS: natsEnv.MOLT_NATS_CREDS,
    MOLT_NATS_CA: natsEnv.MOLT_NATS_CA,
    MOLT_NATS_CERT: natsEnv.MOLT_NATS_CERT,
    MOLT_NATS_KEY: natsEnv.MOLT_NATS_KEY,
    ...metricsEnv,
    /** The version this agent reports (a bundle sets it at build time); default: the package's version. */
    MOLT_AGENT_VERSION: z.string().min(1).max(64).optional(),
    /** The agent's configuration file (JSON, see infra/agent/agent.example.json); its fields win over the env ones. */
    MOLT_CONFIG: z.string().min(1).optional(),
    MOLT_HOST_ID: HostId.optional(),
    MOLT_ROOT: z.string().min(1).optional(),
    MOLT_COMPONENTS: list.pipe(z.array(ComponentName)),
    MOLT_POLL_MS: millis(30_000),
    MOLT_HEARTBEAT_MS: millis(5_000),
    MOLT_REPORT_RETRY_MS: millis(500),
    MOLT_REPORT_TIMEOUT_MS: millis(5_000),
    /** How long a report waits for more journal entries before it is sent (a verdict goes at once); unset: 0 on a host, 25 ms simulated. */
    MOLT_REPORT_LINGER_MS: z.coerce.number().int().min(0).optional(),
    /** Finished task dirs kept (the newest); older ones go once their deadline has passed. */
    MOLT_KEEP_TASKS: z.coerce.number().int().min(0).default(20),
    MOLT_SEED: seeds,
    /** Mirror base URLs (comma-separated) tried in order before the package URL's origin (same path and query under each). */
    MOLT_PACKAGE_MIRROR: list.pipe(z.array(z.url())).transform((urls) => (urls.length > 0 ? urls.join(",") : undefined)),
    MOLT_LABELS: labels,
    MOLT_SIM: z.coerce.number().int().min(1).max(100_000).optional(),
    MOLT_SIM_PREFIX: z
      .string()
      .regex(/^[A-Za-z0-9._:-]{0,240}$/, "MOLT_SIM_PREFIX must be host-id characters (A-Z a-z 0-9 . _ : -)")
      .default("sim-"),
    MOLT_SIM_STEP_DELAY_MS: z.coerce.number().int().min(0).default(0),
    /** Simulated hosts fsync their files (journal, task files, the client's switch) only with 1: see `setFsync`. */
    MOLT_SIM_FSYNC: z
      .enum(["0", "1"], { message: "MOLT_SIM_FSYNC must be 0 or 1" })
      .default("0")
      .transform((v) => v === "1"),
    /** Fault injection for the simulator and tests: a JSON file `{hosts, step, message}`, re-read at every step. */
    MOLT_SIM_FAULT_FILE: z.string().min(1).optional(),
    /** An agent run from sources starts its upgrade clients from this built bundle (tests set it: many clients). */
    MOLT_CLIENT_BUNDLE: z.string().min(1).optional(),
  })
  .superRefine((env, ctx) => {
    // A real host with MOLT_CONFIG takes its host id and root from the file; --sim always needs MOLT_ROOT.
    const fromFile = env.MOLT_CONFIG !== undefined && env.MOLT_SIM === undefined;
    if (!fromFile && env.MOLT_ROOT === undefined)
      ctx.addIssue({ code: "custom", path: ["MOLT_ROOT"], message: "MOLT_ROOT (the host root directory) is required, or MOLT_CONFIG" });
    if (!fromFile && env.MOLT_SIM === undefined && env.MOLT_HOST_ID === undefined)
      ctx.addIssue({ code: "custom", path: ["MOLT_HOST_ID"], message: "MOLT_HOST_ID is required (or MOLT_CONFIG, or MOLT_SIM / --sim N for simulated hosts)" });
  });
export type AgentEnv = z.infer<typeof AgentEnv>;

/** `--sim N` (or `--sim=N`) on the command line wins over MOLT_SIM. */
export function argvOverrides(argv: string[]): Record<string, string> {
  const { values } = parseArgs({ args: argv, options: { sim: { type: "string" } }, strict: true, allowPositionals: false });
  return values.sim !== undefined ? { MOLT_SIM: values.sim } : {};
}

/**
 * Simulated host ids: `<prefix>001` … `<prefix>999`, `<prefix>1000` …: always padded to 3 digits,
 * so the demo and test kit can name a host without knowing the fleet size.
 */
export function simHostIds(prefix: string, count: number): string[] {
  return Array.from({ length: count }, (_, i) => HostId.parse(`${prefix}${String(i + 1).padStart(3, "0")}`));
}
