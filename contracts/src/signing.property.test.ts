import { generateKeyPairSync } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { PackageManifest } from "./events.js";
import { canonicalJson, keyIdOf, signManifest, trustedKeys, verifyManifest } from "./signing.js";

/** The same value with every object's keys in another order (reversed), at every level. */
function reorder(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(reorder);
  if (value !== null && typeof value === "object")
    return Object.fromEntries(Object.entries(value as Record<string, unknown>).reverse().map(([k, v]) => [k, reorder(v)]));
  return value;
}

describe("canonicalJson, for any JSON value", () => {
  it("[upgrade-client] is valid JSON of the same value, whatever the key order, and a fixed point", () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const text = canonicalJson(value);
        expect(canonicalJson(reorder(value))).toBe(text);
        // -0 is written as 0, as JSON.stringify does; otherwise the value comes back as it was.
        expect(JSON.parse(text)).toEqual(JSON.parse(JSON.stringify(value)));
        expect(canonicalJson(JSON.parse(text))).toBe(text);
        expect(text).not.toMatch(/^\s|\s$/);
      }),
      { numRuns: 500 },
    );
  });
});

const manifestArb: fc.Arbitrary<PackageManifest> = fc.record({
  component: fc.stringMatching(/^[a-z0-9_-]{1,20}$/),
  version: fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9.+_-]{0,15}$/),
  platform: fc.constantFrom("linux-amd64", "linux-arm64", "darwin-arm64"),
  sha256: fc.stringMatching(/^[0-9a-f]{64}$/),
  size: fc.integer({ min: 1, max: 2 ** 40 }),
  files: fc.nat({ max: 1_000_000 }),
  entries: fc.integer({ min: 1, max: 1_000_000 }),
  unpackedSize: fc.nat({ max: 2 ** 45 }),
});

describe("manifest signatures, for any manifest", () => {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const keys = trustedKeys([{ publicKey: publicKey.export({ type: "spki", format: "pem" }).toString() }]);

  it("[upgrade-client] a signature verifies for exactly the manifest signed: any changed field is bad-signature", () => {
    fc.assert(
      fc.property(manifestArb, manifestArb, fc.constantFrom(...(["component", "version", "platform", "sha256", "size", "files", "entries", "unpackedSize"] as const)), (m, other, field) => {
        const { signature, keyId } = signManifest(m, privateKey);
        expect(keyId).toBe(keyIdOf(publicKey));
        expect(verifyManifest(reorder(m), signature, keyId, keys)).toEqual({ ok: true, manifest: m, keyId });
        fc.pre(other[field] !== m[field]);
        expect(verifyManifest({ ...m, [field]: other[field] }, signature, keyId, keys)).toMatchObject({ ok: false, reason: "bad-signature" });
      }),
      { numRuns: 200 },
    );
  });
});
