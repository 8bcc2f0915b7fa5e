import { readFile, writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import {
  canonicalJson,
  signManifest,
  SignedManifest,
  trustedKeys,
  verifyManifest,
  type ManifestSignature,
  type PackageManifest,
} from "@molt/contracts";
import { generatePublisherKey, writePublisherKey } from "./keys.js";
import { manifestOfFile, type PackageIds } from "./manifest.js";
import { DEFAULT_METADATA_EXPIRY_DAYS, expiresIn } from "./metadata.js";
import { addToMetadata, pushPackage, yankPackage, type PushResult } from "./push.js";

export const USAGE = `molt-publish: sign packages with a publisher key and push them to package-repo

  molt-publish keygen [--out DIR] [--name NAME]
      writes DIR/NAME.key (ed25519 private key, PKCS#8 PEM, mode 0600) and DIR/NAME.pub;
      prints the key id and the public key to configure on package-repo and on hosts
      (defaults: --out . --name publisher)

  molt-publish sign --key FILE --component C --version V --platform P [--out SIG] ARCHIVE
      computes the manifest of ARCHIVE (a .tar.gz) and writes it with its signature to SIG
      (default ARCHIVE.sig.json), so signing can happen where the key is and pushing elsewhere

  molt-publish push --url URL (--key FILE | --signature SIG) [--component C --version V --platform P] ARCHIVE
      uploads ARCHIVE with its signature (made now with --key, or read from SIG, whose manifest
      must match ARCHIVE); the bearer token comes from MOLT_TOKEN (or --token). With --key it then
      signs the component's next repository metadata listing the variant (hosts install only
      what the metadata lists); --expires-days N (default 90) bounds how long hosts accept it

  molt-publish yank --url URL --key FILE --component C --version V [--platform P] --reason TEXT
      yanks the version (every platform unless --platform): signs the next metadata marking it
      yanked, so hosts refuse it, and records the yank, so new plans skip it

  molt-publish verify --trusted KEYS SIG [ARCHIVE]
      checks SIG as a host would, against KEYS (a JSON array of { publicKey, keyId?, revoked? },
      the format package-repo and hosts are configured with), and with ARCHIVE that the signed
      manifest is that archive's; prints the verdict and its reason
`;

export interface CliIo {
  out(line: string): void;
  err(line: string): void;
  env: Record<string, string | undefined>;
}

class UsageError extends Error {}

const OPTIONS = {
  out: { type: "string" },
  name: { type: "string" },
  key: { type: "string" },
  signature: { type: "string" },
  component: { type: "string" },
  version: { type: "string" },
  platform: { type: "string" },
  url: { type: "string" },
  token: { type: "string" },
  trusted: { type: "string" },
  reason: { type: "string" },
  "expires-days": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** Runs one command; the exit code is the result (0 done, 1 refused or failed, 2 usage). */
export async function runPublisherCli(argv: string[], io: CliIo): Promise<number> {
  try {
    const { values, positionals } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
    const [command, ...rest] = positionals;
    if (values.help || command === undefined || command === "help") {
      io.out(USAGE);
      return command === undefined && !values.help ? 2 : 0;
    }
    switch (command) {
      case "keygen": {
        if (rest.length > 0) throw new UsageError("keygen takes no arguments");
        const pair = generatePublisherKey();
        const files = await writePublisherKey(values.out ?? ".", values.name ?? "publisher", pair);
        io.out(JSON.stringify({ keyId: pair.keyId, publicKey: pair.publicKey, ...files, trustedKey: { keyId: pair.keyId, publicKey: pair.publicKey } }));
        return 0;
      }
      case "sign": {
        const archive = oneArchive(rest);
        const privateKey = await readFile(required(values.key, "--key"), "utf8");
        const manifest = await manifestOfFile(archive, idsFrom(values));
        const signed: SignedManifest = { manifest, ...signManifest(manifest, privateKey) };
        const out = values.out ?? `${archive}.sig.json`;
        await writeFile(out, `${JSON.stringify(signed, null, 2)}\n`);
        io.out(JSON.stringify({ signatureFile: out, keyId: signed.keyId, manifest }));
        return 0;
      }
      case "push": {
        const archive = oneArchive(rest);
        const url = required(values.url, "--url");
        const token = values.token ?? io.env["MOLT_TOKEN"];
        if (!token) throw new UsageError("set MOLT_TOKEN (or --token) to an operator token");
        if ((values.key === undefined) === (values.signature === undefined)) throw new UsageError("give exactly one of --key and --signature");
        let ids: PackageIds;
        let signature: ManifestSignature;
        if (values.signature !== undefined) {
          const detached = await readSignatureFile(values.signature);
          ids = hasIds(values) ? idsFrom(values) : detached.manifest;
          const manifest = await manifestOfFile(archive, ids);
          if (canonicalJson(manifest) !== canonicalJson(detached.manifest))
            throw new Error(`${values.signature} signs another manifest than ${archive}'s: ${describeDiff(detached.manifest, manifest)}`);
          signature = { signature: detached.signature, keyId: detached.keyId };
        } else {
          ids = idsFrom(values);
          const privateKey = await readFile(values.key!, "utf8");
          signature = signManifest(await manifestOfFile(archive, ids), privateKey);
        }
        const result = await pushPackage({ url, token, ids, archive, signature });
        if (result.status !== 200 && result.status !== 201) return refused(io, "push", result);
        let metadataVersion: number | null = null;
        if (values.key !== undefined) {
          const privateKey = await readFile(values.key, "utf8");
          const sha256 = (result.body as { sha256?: string }).sha256 ?? "";
          const meta = await addToMetadata({ url, token, component: ids.component, privateKey, expires: expiresFrom(values) }, { ...ids, sha256 });
          if (meta && meta.status !== 200 && meta.status !== 201) return refused(io, "metadata", meta);
          metadataVersion = (meta?.body as { metadata?: { version?: number } } | undefined)?.metadata?.version ?? null;
        }
        io.out(JSON.stringify({ status: result.status, keyId: signature.keyId, package: result.body, metadataVersion }));
        return 0;
      }
      case "yank": {
        if (rest.length > 0) throw new UsageError("yank takes no arguments");
        const url = required(values.url, "--url");
        const token = values.token ?? io.env["MOLT_TOKEN"];
        if (!token) throw new UsageError("set MOLT_TOKEN (or --token) to an operator token");
        const privateKey = await readFile(required(values.key, "--key"), "utf8");
        const result = await yankPackage({
          url,
          token,
          privateKey,
          expires: expiresFrom(values),
          component: required(values.component, "--component"),
          version: required(values.version, "--version"),
          ...(values.platform !== undefined ? { platform: values.platform } : {}),
          reason: required(values.reason, "--reason"),
        });
        if (result.status !== 200 && result.status !== 201) return refused(io, "yank", result);
        io.out(JSON.stringify({ status: result.status, yank: result.body }));
        return 0;
      }
      case "verify": {
        if (rest.length < 1 || rest.length > 2) throw new UsageError("give a signature file and, optionally, the archive");
        const [sigFile, archive] = rest as [string, string | undefined];
        const keysFile = required(values.trusted, "--trusted");
        const keys = trustedKeys(JSON.parse(await readFile(keysFile, "utf8")) as never[]);
        const detached = await readSignatureFile(sigFile);
        const verdict = verifyManifest(detached.manifest, detached.signature, detached.keyId, keys);
        if (!verdict.ok) {
          io.err(`refused (${verdict.reason}): ${verdict.message}`);
          return 1;
        }
        if (archive !== undefined) {
          const actual = await manifestOfFile(archive, detached.manifest);
          if (canonicalJson(actual) !== canonicalJson(detached.manifest)) {
            io.err(`refused: ${sigFile} signs another manifest than ${archive}'s: ${describeDiff(detached.manifest, actual)}`);
            return 1;
          }
        }
        io.out(JSON.stringify({ ok: true, keyId: verdict.keyId, manifest: verdict.manifest, archiveChecked: archive !== undefined }));
        return 0;
      }
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)}`);
    }
  } catch (err) {
    const usage = err instanceof UsageError || (err as { code?: string }).code?.startsWith("ERR_PARSE_ARGS") === true;
    io.err(`molt-publish: ${(err as Error).message}${usage ? "\n\n" + USAGE : ""}`);
    return usage ? 2 : 1;
  }
}

type Values = { component?: string; version?: string; platform?: string };

function refused(io: CliIo, what: string, result: PushResult): number {
  io.err(`${what} refused: HTTP ${result.status} ${typeof result.body === "string" ? result.body : JSON.stringify(result.body)}`);
  return 1;
}

function expiresFrom(values: { "expires-days"?: string | undefined }): string {
  const raw = values["expires-days"];
  const days = raw === undefined ? DEFAULT_METADATA_EXPIRY_DAYS : Number(raw);
  if (!Number.isFinite(days) || days <= 0 || days > 3660) throw new UsageError("--expires-days must be a number of days between 0 and 3660");
  return expiresIn(days);
}

const hasIds = (v: Values) => v.component !== undefined || v.version !== undefined || v.platform !== undefined;

function idsFrom(v: Values): PackageIds {
  return { component: required(v.component, "--component"), version: required(v.version, "--version"), platform: required(v.platform, "--platform") };
}

function required(value: string | undefined, flag: string): string {
  if (value === undefined || value === "") throw new UsageError(`${flag} is required`);
  return value;
}

function oneArchive(rest: string[]): string {
  if (rest.length !== 1) throw new UsageError("give exactly one archive (.tar.gz)");
  return rest[0]!;
}

async function readSignatureFile(path: string): Promise<SignedManifest> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, "utf8"));
  } catch (err) {
    throw new Error(`${path}: not a signature file (${(err as Error).message})`);
  }
  const parsed = SignedManifest.safeParse(json);
  if (!parsed.success) throw new Error(`${path}: not a signature file (${parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")})`);
  return parsed.data;
}

function describeDiff(a: PackageManifest, b: PackageManifest): string {
  const keys = Object.keys(a) as (keyof PackageManifest)[];
  return keys
    .filter((k) => a[k] !== b[k])
    .map((k) => `${k} ${String(a[k])} ≠ ${String(b[k])}`)
    .join(", ");
}

