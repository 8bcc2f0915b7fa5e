import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PackageInfo, PackageList, platformOf, signManifest } from "@molt/contracts";
import { generatePublisherKey, manifestOf, pushPackage, writePublisherKey } from "@molt/publisher";
import { create as createTar } from "tar";
import type { Context } from "../context.js";
import { CliError } from "../output.js";
import { refusal } from "../http.js";

export async function keygen(ctx: Context, opts: { out: string; name: string }): Promise<void> {
  const pair = generatePublisherKey();
  let files;
  try {
    files = await writePublisherKey(opts.out, opts.name, pair);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") throw new CliError(`${join(opts.out, opts.name)}.key exists: a key is never overwritten (pick another --name)`);
    throw err;
  }
  const trusted = { keyId: pair.keyId, publicKey: pair.publicKey };
  if (ctx.out.json) return ctx.out.data({ ...trusted, ...files });
  ctx.out.line(`key id:      ${pair.keyId}`);
  ctx.out.line(`private key: ${files.privateKeyFile} (keep it secret)`);
  ctx.out.line(`public key:  ${files.publicKeyFile}`);
  ctx.out.line(`trust it on package-repo (MOLT_TRUSTED_PUBLISHER_KEYS) and hosts (trustedKeys) as ${JSON.stringify(trusted)}`);
}

/**
 * A directory is packed as a package archive: a gzip'd tar of its contents, paths relative to
 * it (what a host unpacks into the component's new version directory), owners dropped.
 */
async function archiveOf(path: string): Promise<{ file: string; cleanup: () => Promise<void> }> {
  const info = await stat(path).catch(() => {
    throw new CliError(`${path}: no such file or directory`);
  });
  if (!info.isDirectory()) return { file: path, cleanup: async () => {} };
  const dir = await mkdtemp(join(tmpdir(), "molt-pack-"));
  const file = join(dir, "package.tar.gz");
  await createTar({ gzip: true, file, cwd: path, portable: true }, ["."]);
  return { file, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export async function push(ctx: Context, path: string, opts: { component: string; version: string; platform?: string; signKey?: string }): Promise<void> {
  const gw = await ctx.gateway();
  if (!gw.token) throw new CliError("pushing needs an operator token: --token, MOLT_TOKEN or the config file");
  const ids = { component: opts.component, version: opts.version, platform: opts.platform ?? platformOf(process.platform, process.arch) };
  const archive = await archiveOf(path);
  try {
    let signature = null;
    if (opts.signKey) {
      const key = await readFile(opts.signKey, "utf8").catch((err: Error) => {
        throw new CliError(`cannot read the signing key ${opts.signKey}: ${err.message}`);
      });
      const manifest = await manifestOf(archive.file, ids).catch((err: Error) => {
        throw new CliError(`${path}: ${err.message}`);
      });
      signature = signManifest(manifest, key);
    }
    let res;
    try {
      res = await pushPackage({ url: gw.url, token: gw.token, ids, archive: archive.file, signature });
    } catch (err) {
      throw new CliError(`cannot reach the gateway at ${gw.url} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    if (res.status >= 400) throw refusal(res.status, typeof res.body === "string" ? res.body : JSON.stringify(res.body));
    const info = PackageInfo.parse(res.body);
    if (ctx.out.json) return ctx.out.data({ ...info, published: res.status === 201, keyId: signature?.keyId ?? null });
    const what = res.status === 201 ? "published" : "already published (same bytes)";
    ctx.out.line(`${ctx.out.c.green("✓")} ${info.component} ${info.version} ${info.platform} ${what}: ${info.size} B, sha256 ${info.sha256.slice(0, 12)}…${signature ? `, signed by ${signature.keyId}` : ", unsigned"}`);
  } finally {
    await archive.cleanup();
  }
}


export async function ls(ctx: Context, component: string): Promise<void> {
  const list = await (await ctx.gateway()).get(`/v1/packages/${encodeURIComponent(component)}`, PackageList);
  if (ctx.out.json) return ctx.out.data(list);
  ctx.out.table(
    ["version", "platform", "size", "sha256", "signed by", "published", "yanked"],
    list.packages.map((p) => [p.version, p.platform, p.size, `${p.sha256.slice(0, 12)}…`, p.keyId ?? ctx.out.c.yellow("unsigned"), p.publishedAt, p.yanked ? ctx.out.c.red(p.yanked.reason) : ""]),
  );
}

