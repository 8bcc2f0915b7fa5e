import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import type { KV } from "@nats-io/kv";
import { canonicalJson } from "@molt/contracts";
import type { Queryable } from "@molt/db";
import type { Logger } from "@molt/runtime";
import { z } from "zod";

/** The KV bucket the chain's head is published to, outside the table it vouches for. */
export { KV_AUDIT_ANCHOR as ANCHOR_BUCKET } from "@molt/contracts";
export const ANCHOR_KEY = "head";
/** Anchors kept (KV history): how far back a rewrite can be placed between two anchors. */
export { KV_AUDIT_ANCHOR_HISTORY as ANCHOR_HISTORY } from "@molt/contracts";

/** What is signed: the head entry's id and hash, and when. */
export const Anchor = z.object({
  id: z.number().int().min(0),
  hash: z.string().regex(/^[0-9a-f]{64}$/),
  at: z.string(),
  keyId: z.string(),
  signature: z.string(),
});
export type Anchor = z.infer<typeof Anchor>;

export interface AnchorKey {
  keyId: string;
  publicKeyPem: string;
  sign(body: { id: number; hash: string; at: string }): Anchor;
  check(a: Anchor): boolean;
}

const signed = (a: { id: number; hash: string; at: string }) => Buffer.from(canonicalJson({ id: a.id, hash: a.hash, at: a.at }));

export function anchorKey(privatePem: string): AnchorKey {
  const priv: KeyObject = createPrivateKey(privatePem);
  if (priv.asymmetricKeyType !== "ed25519") throw new Error("the audit anchor key must be an ed25519 private key (PEM)");
  const pub = createPublicKey(priv);
  const raw = pub.export({ format: "der", type: "spki" });
  const keyId = createHash("sha256").update(raw).digest("hex").slice(0, 16);
  return {
    keyId,
    publicKeyPem: pub.export({ format: "pem", type: "spki" }).toString(),
    sign: (b) => ({ ...b, keyId, signature: sign(null, signed(b), priv).toString("base64") }),
    check: (a) => a.keyId === keyId && verify(null, signed(a), pub, Buffer.from(a.signature, "base64")),
  };
}

/** The key at `file`, created (0600) on first start: the audit service's own signing key. */
export function loadOrCreateAnchorKey(file: string): AnchorKey {
  if (!existsSync(file)) {
    mkdirSync(dirname(file), { recursive: true });
    const { privateKey } = generateKeyPairSync("ed25519");
    writeFileSync(file, privateKey.export({ format: "pem", type: "pkcs8" }), { mode: 0o600, flag: "wx" });
  }
  return anchorKey(readFileSync(file, "utf8"));
}

/** The anchors in the bucket, oldest first, each with whether its signature holds. */
export async function readAnchors(kv: KV, key: AnchorKey): Promise<Array<{ anchor: Anchor; valid: boolean }>> {
  const out: Array<{ anchor: Anchor; valid: boolean }> = [];
  const it = await kv.history({ key: ANCHOR_KEY });
  for await (const e of it) {
    if (e.operation !== "PUT") continue;
    const parsed = Anchor.safeParse(e.json());
    if (parsed.success) out.push({ anchor: parsed.data, valid: key.check(parsed.data) });
  }
  return out.sort((a, b) => a.anchor.id - b.anchor.id);
}

/**
 * Publishes the signed head of the chain every `everyMs` when it has moved. Rows deleted or
 * rewritten after an anchor covers them are found by verify; the last `everyMs` of entries are
 * only as safe as the table until the next anchor.
 */
export function startAnchoring(deps: { db: Queryable; kv: KV; key: AnchorKey; logger: Logger; everyMs: number }): { anchorNow(): Promise<Anchor | null>; stop(): void } {
  let last: { id: number; hash: string } | null = null;
  let running: Promise<Anchor | null> | null = null;
  const anchorNow = async (): Promise<Anchor | null> => {
    const head = await deps.db.query<{ id: number; hash: string }>("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1");
    const row = head.rows[0];
    if (!row || (last && last.id === row.id && last.hash === row.hash)) return null;
    const anchor = deps.key.sign({ id: Number(row.id), hash: row.hash, at: new Date().toISOString() });
    await deps.kv.put(ANCHOR_KEY, JSON.stringify(anchor));
    last = { id: anchor.id, hash: anchor.hash };
    return anchor;
  };
  const tick = () => {
    running ??= anchorNow()
      .catch((err: unknown) => {
        deps.logger.warn({ err }, "could not publish the audit anchor");
        return null;
      })
      .finally(() => (running = null));
  };
  const timer = setInterval(tick, deps.everyMs);
  timer.unref();
  return {
    anchorNow: async () => {
      if (running) await running;
      return anchorNow();
    },
    stop: () => clearInterval(timer),
  };
}
