import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";
import { hashToken, Role } from "./auth.js";

/**
 * `pnpm molt-token new --actor alice --role operator [--expires <ISO>]`: a fresh token (printed
 * once, hand it to alice) and the entry to add to the token file, which holds only its hash.
 * `pnpm molt-token hash <token>`: the `sha256:…` key of an existing token.
 */
const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: { actor: { type: "string" }, role: { type: "string" }, expires: { type: "string" } },
});
const [command, arg] = positionals;
if (command === "hash" && arg !== undefined) {
  process.stdout.write(`${hashToken(arg)}\n`);
} else if (command === "new" && values.actor) {
  const role = Role.parse(values.role ?? "viewer");
  const token = `molt_${randomBytes(24).toString("base64url")}`;
  const entry = { actor: values.actor, role, ...(values.expires ? { expiresAt: new Date(values.expires).toISOString() } : {}) };
  process.stdout.write(`token (give it to ${values.actor}; it is not stored): ${token}\n`);
  process.stdout.write(`token file entry: ${JSON.stringify({ [hashToken(token)]: entry })}\n`);
} else {
  process.stderr.write("usage: molt-token new --actor NAME [--role viewer|operator|admin] [--expires ISO] | molt-token hash TOKEN\n");
  process.exit(2);
}
