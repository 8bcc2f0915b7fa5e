import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildPackage } from "@molt/testkit";
import { runPublisherCli } from "./cli.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "molt-publish-cli-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** One command in this process, its output captured. */
async function cli(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runPublisherCli(argv, { out: (l) => out.push(l), err: (l) => err.push(l), env: {} });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

describe("molt-publish", () => {
  it("[upgrade-client] verify checks a signature file as a host would: trusted, revoked, unknown, other bytes", async () => {
    const made = JSON.parse((await cli("keygen", "--out", dir, "--name", "rel")).out) as { keyId: string; publicKey: string; privateKeyFile: string };
    const archive = join(dir, "app.tar.gz");
    await writeFile(archive, await buildPackage({ VERSION: "1.0.0\n" }));
    const id = ["--component", "app", "--version", "1.0.0", "--platform", "linux-amd64"];
    expect((await cli("sign", "--key", made.privateKeyFile, ...id, archive)).code).toBe(0);
    const sig = `${archive}.sig.json`;

    const trusted = join(dir, "trusted.json");
    await writeFile(trusted, JSON.stringify([{ publicKey: made.publicKey }]));
    const ok = await cli("verify", "--trusted", trusted, sig, archive);
    expect(ok.code, ok.err).toBe(0);
    expect(JSON.parse(ok.out)).toMatchObject({ ok: true, keyId: made.keyId, archiveChecked: true, manifest: { component: "app", version: "1.0.0" } });

    await writeFile(trusted, JSON.stringify([{ publicKey: made.publicKey, revoked: true }]));
    expect(await cli("verify", "--trusted", trusted, sig)).toMatchObject({ code: 1, err: expect.stringMatching(/^refused \(revoked-key\)/) as string });
    await writeFile(trusted, "[]");
    expect(await cli("verify", "--trusted", trusted, sig)).toMatchObject({ code: 1, err: expect.stringMatching(/^refused \(unknown-key\)/) as string });

    await writeFile(trusted, JSON.stringify([{ publicKey: made.publicKey }]));
    const other = join(dir, "other.tar.gz");
    await writeFile(other, await buildPackage({ VERSION: "1.0.1\n" }));
    expect(await cli("verify", "--trusted", trusted, sig, other)).toMatchObject({ code: 1, err: expect.stringMatching(/signs another manifest .*sha256/) as string });

    const edited = JSON.parse(await readFile(sig, "utf8")) as { manifest: { version: string } };
    edited.manifest.version = "9.9.9";
    await writeFile(sig, JSON.stringify(edited));
    expect(await cli("verify", "--trusted", trusted, sig)).toMatchObject({ code: 1, err: expect.stringMatching(/^refused \(bad-signature\)/) as string });
  });

  it("[upgrade-client] usage errors exit 2 with the usage; no command prints it", async () => {
    expect(await cli()).toMatchObject({ code: 2, out: expect.stringContaining("molt-publish keygen") as string });
    expect(await cli("frobnicate")).toMatchObject({ code: 2, err: expect.stringContaining('unknown command "frobnicate"') as string });
    expect(await cli("sign", "x.tar.gz")).toMatchObject({ code: 2, err: expect.stringContaining("--key is required") as string });
    expect(await cli("push", "--bogus")).toMatchObject({ code: 2 });
    expect(await cli("verify", "sig.json")).toMatchObject({ code: 2, err: expect.stringContaining("--trusted is required") as string });
  });
});
