import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { keyIdOf } from "@molt/contracts";
import { generatePublisherKey } from "@molt/publisher";
import { loadPublisherKeys } from "./config.js";

describe("trusted publisher keys from the environment", () => {
  const key = generatePublisherKey();

  it("[upgrade-client] inline JSON or a file; none configured is an empty set", async () => {
    expect(loadPublisherKeys({}).size).toBe(0);
    const inline = loadPublisherKeys({ MOLT_TRUSTED_PUBLISHER_KEYS: JSON.stringify([{ publicKey: key.publicKey }]) });
    expect([...inline.keys()]).toEqual([key.keyId]);
    const dir = await mkdtemp(join(tmpdir(), "molt-keys-"));
    try {
      const file = join(dir, "trusted.json");
      await writeFile(file, JSON.stringify([{ publicKey: key.publicKeyPem, revoked: true }]));
      const fromFile = loadPublisherKeys({ MOLT_TRUSTED_PUBLISHER_KEYS_FILE: file });
      expect(fromFile.get(keyIdOf(key.publicKeyPem))).toMatchObject({ revoked: true });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("[upgrade-client] a bad configuration stops the start with where and why", () => {
    const load = (text: string) => () => loadPublisherKeys({ MOLT_TRUSTED_PUBLISHER_KEYS: text });
    expect(load("{not json")).toThrow(/^MOLT_TRUSTED_PUBLISHER_KEYS: not JSON/);
    expect(load('{"publicKey":"x"}')).toThrow(/expected a JSON array/);
    expect(load(JSON.stringify([{ publicKey: key.publicKey }, { publicKey: "short" }]))).toThrow(/MOLT_TRUSTED_PUBLISHER_KEYS: trusted key 1: .*32 bytes/);
    expect(load(JSON.stringify([{ publicKey: key.publicKey, keyId: "ffffffffffffffff" }]))).toThrow(/is not this key's id/);
    expect(() => loadPublisherKeys({ MOLT_TRUSTED_PUBLISHER_KEYS_FILE: "/nonexistent/trusted.json" })).toThrow(/ENOENT/);
  });
});
