import { generateKeyPairSync, sign } from "node:crypto";
import { describe, expect, it } from "vitest";
import type { PackageManifest } from "./events.js";
import {
  canonicalJson,
  keyIdOf,
  manifestBytes,
  rawPublicKeyOf,
  signManifest,
  trustedKeys,
  verifyManifest,
} from "./signing.js";

const pem = () => {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return {
    privateKey: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    publicKey: publicKey.export({ type: "spki", format: "pem" }).toString(),
  };
};

const manifest: PackageManifest = {
  component: "metrics-agent",
  version: "2.1.0",
  platform: "linux-amd64",
  sha256: "a".repeat(64),
  size: 1234,
  files: 3,
  entries: 5,
  unpackedSize: 4096,
};

describe("canonicalJson", () => {
  it("sorts keys at every level by code unit, writes no whitespace and drops undefined like JSON.stringify", () => {
    expect(canonicalJson({ b: 1, a: { d: [1, undefined], c: undefined } })).toBe('{"a":{"d":[1,null]},"b":1}');
    // Integer-like keys: JS objects enumerate them numerically first; code-unit order puts "10" before "9".
    expect(canonicalJson({ 9: "x", 10: "y", a: 0 })).toBe('{"10":"y","9":"x","a":0}');
    expect(canonicalJson({ "é": 1, z: 2, Z: 3 })).toBe('{"Z":3,"z":2,"é":1}');
    expect(canonicalJson(new Date("2026-01-02T03:04:05.000Z"))).toBe('"2026-01-02T03:04:05.000Z"');
    expect(canonicalJson(undefined)).toBe("null");
    expect(canonicalJson([NaN, 1e21, -0, "a\u2028\n"])).toBe(JSON.stringify([NaN, 1e21, -0, "a\u2028\n"]));
    expect(() => canonicalJson({ n: 1n })).toThrow(/bigint/);
  });

  it("gives the same text whatever the key order, and the value back through JSON.parse", () => {
    const a = { x: [{ q: 1, p: 2 }], y: "é\n", z: null };
    const b = { z: null, y: "é\n", x: [{ p: 2, q: 1 }] };
    expect(canonicalJson(a)).toBe(canonicalJson(b));
    expect(JSON.parse(canonicalJson(a))).toEqual(a);
  });
});

describe("manifest signatures", () => {
  const publisher = pem();
  const other = pem();
  const keys = trustedKeys([{ publicKey: publisher.publicKey }]);
  const keyId = keyIdOf(publisher.publicKey);

  it("[upgrade-client] a signature by a trusted key verifies; the bytes signed are the canonical manifest", () => {
    const signed = signManifest(manifest, publisher.privateKey);
    expect(signed.keyId).toBe(keyId);
    expect(signed.keyId).toBe(keyIdOf(publisher.privateKey));
    const reordered = Object.fromEntries(Object.entries(manifest).reverse());
    expect(verifyManifest(reordered, signed.signature, signed.keyId, keys)).toEqual({ ok: true, manifest, keyId });
    // The same signature made by hand with node:crypto over the canonical bytes.
    const byHand = sign(null, manifestBytes(manifest), publisher.privateKey).toString("base64");
    expect(byHand).toBe(signed.signature);
    expect(manifestBytes(manifest).toString()).toBe(
      '{"component":"metrics-agent","entries":5,"files":3,"platform":"linux-amd64","sha256":"' +
        "a".repeat(64) +
        '","size":1234,"unpackedSize":4096,"version":"2.1.0"}',
    );
  });

  it("[upgrade-client] every changed field breaks the signature (bad-signature)", () => {
    const { signature } = signManifest(manifest, publisher.privateKey);
    const changes: Partial<PackageManifest>[] = [
      { component: "other" },
      { version: "2.0.0" },
      { platform: "linux-arm64" },
      { sha256: "b".repeat(64) },
      { size: 1235 },
      { files: 4 },
      { entries: 6 },
      { unpackedSize: 1 << 30 },
    ];
    for (const change of changes) {
      const v = verifyManifest({ ...manifest, ...change }, signature, keyId, keys);
      expect(v, JSON.stringify(change)).toMatchObject({ ok: false, reason: "bad-signature" });
    }
  });

  it("[upgrade-client] a key that is not trusted is unknown-key, even when the signature itself is valid", () => {
    const signed = signManifest(manifest, other.privateKey);
    expect(verifyManifest(manifest, signed.signature, signed.keyId, keys)).toMatchObject({
      ok: false,
      reason: "unknown-key",
      message: expect.stringContaining(signed.keyId) as string,
    });
    // Claiming the trusted key id for another key's signature does not help.
    expect(verifyManifest(manifest, signed.signature, keyId, keys)).toMatchObject({ ok: false, reason: "bad-signature" });
  });

  it("[upgrade-client] rotation: several keys trusted at once; a revoked key is refused by name", () => {
    const next = pem();
    const rotated = trustedKeys([
      { publicKey: publisher.publicKey, revoked: true, comment: "rotated out" },
      { keyId: keyIdOf(next.publicKey), publicKey: rawPublicKeyOf(next.publicKey) },
      { publicKey: other.publicKey },
    ]);
    const old = signManifest(manifest, publisher.privateKey);
    expect(verifyManifest(manifest, old.signature, old.keyId, rotated)).toMatchObject({ ok: false, reason: "revoked-key" });
    const fresh = signManifest(manifest, next.privateKey);
    expect(verifyManifest(manifest, fresh.signature, fresh.keyId, rotated)).toMatchObject({ ok: true });
    const third = signManifest(manifest, other.privateKey);
    expect(verifyManifest(manifest, third.signature, third.keyId, rotated)).toMatchObject({ ok: true });
  });

  it("[upgrade-client] malformed input is a typed refusal, never an exception", () => {
    const { signature } = signManifest(manifest, publisher.privateKey);
    const cases: [unknown, unknown, unknown][] = [
      [{ ...manifest, extra: 1 }, signature, keyId],
      [{ ...manifest, size: -1 }, signature, keyId],
      ["not a manifest", signature, keyId],
      [manifest, undefined, keyId],
      [manifest, "", keyId],
      [manifest, "AAAA", keyId],
      [manifest, signature, "XYZ"],
      [manifest, signature, undefined],
    ];
    for (const [m, s, k] of cases) expect(verifyManifest(m, s, k, keys), JSON.stringify([m, s, k])).toMatchObject({ ok: false, reason: "malformed" });
    expect(verifyManifest(manifest, undefined, keyId, keys)).toMatchObject({ message: "the manifest carries no signature" });
  });

  it("[upgrade-client] a bad trusted-key configuration fails at once with the entry and the reason", () => {
    const rsa = generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey.export({ type: "spki", format: "pem" }).toString();
    expect(() => trustedKeys([{ publicKey: rsa }])).toThrow(/trusted key 0: publisher keys are ed25519, not rsa/);
    expect(() => trustedKeys([{ publicKey: "abc" }])).toThrow(/trusted key 0: .*32 bytes/);
    expect(() => trustedKeys([{ publicKey: publisher.publicKey, keyId: "0123456789abcdef" }])).toThrow(/is not this key's id/);
    expect(() => trustedKeys([{ publicKey: publisher.publicKey }, { publicKey: rawPublicKeyOf(publisher.publicKey) }])).toThrow(/listed twice/);
    expect(() => signManifest(manifest, publisher.publicKey)).toThrow();
  });
});
