import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { z } from "zod";
import { CliError } from "./output.js";

/** `~/.config/molt/config.json` (or `$XDG_CONFIG_HOME/molt/config.json`): the defaults flags and env override. */
const ConfigFile = z.object({ url: z.url().optional(), token: z.string().min(1).optional() }).strict();

export interface Target {
  url: string;
  token: string | undefined;
}

export function defaultConfigFile(env: NodeJS.ProcessEnv): string {
  const base = env["XDG_CONFIG_HOME"] || join(env["HOME"] ?? homedir(), ".config");
  return join(base, "molt", "config.json");
}

/** Gateway URL and token: a flag wins over the environment (MOLT_URL, MOLT_TOKEN), which wins over the config file. */
export async function resolveTarget(flags: { url?: string; token?: string; config?: string }, env: NodeJS.ProcessEnv): Promise<Target> {
  const file = flags.config ?? env["MOLT_CONFIG"] ?? defaultConfigFile(env);
  let fromFile: z.infer<typeof ConfigFile> = {};
  try {
    const parsed = ConfigFile.safeParse(JSON.parse(await readFile(file, "utf8")));
    if (!parsed.success) throw new CliError(`${file}: ${parsed.error.issues.map((i) => `${i.path.join(".") || "(file)"}: ${i.message}`).join("; ")}`);
    fromFile = parsed.data;
  } catch (err) {
    if (err instanceof CliError) throw err;
    const missing = (err as NodeJS.ErrnoException).code === "ENOENT";
    // An explicitly named file must exist; the default one is optional.
    if (!missing || flags.config !== undefined) throw new CliError(`cannot read the config file ${file}: ${(err as Error).message}`);
  }
  const url = flags.url ?? env["MOLT_URL"] ?? fromFile.url;
  if (!url) throw new CliError(`no gateway URL: pass --url, set MOLT_URL, or write {"url": …} to ${file}`);
  if (!z.url().safeParse(url).success) throw new CliError(`the gateway URL ${JSON.stringify(url)} is not a URL`);
  return { url: url.replace(/\/+$/, ""), token: flags.token ?? env["MOLT_TOKEN"] ?? fromFile.token };
}
