import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { createUser, encodeUser, fmtCreds, fromSeed, type Permissions } from "@nats-io/jwt";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { encodeHostToken, KV_DESIRED, STREAM_EVENTS, subjects } from "@molt/contracts";
import { hostInboxPrefix, hostIssuer, hostPermissions, hostPermissionsTemplate, issueHostCreds } from "@molt/runtime";
import { provisionBus, startNatsServer, waitFor, type SecureNatsServer } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { publishBlocked, refused } from "./bus-probes.js";

/**
 * Issue 7: the key the action service enrols hosts with is a *scoped* signing key of the MOLT
 * account. The server ignores whatever permissions a user signed by it asks for (it refuses the
 * user) and gives it the key's template, host-shaped, with the user's name (the host token)
 * filled in. So a leaked enrolment key mints host users only, never an admin or a service.
 * One secured nats-server from the shipped config, provisioned by the admin; no services.
 */
const HOST_A = "web-a.example.com";
const HOST_B = "web-b.example.com";
const enc = new TextEncoder();
const dec = new TextDecoder();

let nats: SecureNatsServer;
let admin: NatsConnection;
const open: NatsConnection[] = [];

/** A user signed with the host signing key as a thief would: any name, any permissions asked for. */
async function minted(name: string, permissions?: Permissions): Promise<string> {
  const issuer = hostIssuer(nats.bus.authority);
  const user = createUser();
  const jwt = await encodeUser(name, user, fromSeed(enc.encode(issuer.signingSeed)), { issuer_account: issuer.account, ...(permissions ?? {}) }, permissions ? {} : { scopedUser: true });
  return dec.decode(fmtCreds(jwt, user));
}

async function as(creds: string, inboxPrefix?: string): Promise<NatsConnection> {
  const nc = await nats.bus.connect({ creds, ...(inboxPrefix ? { inboxPrefix } : {}) }, { reconnect: false });
  open.push(nc);
  return nc;
}

beforeAll(async () => {
  nats = await startNatsServer({ secure: true });
  await provisionBus(nats.bus);
  admin = await nats.bus.connect("admin");
  const kv = await new Kvm(admin).open(KV_DESIRED);
  await kv.put(`${encodeHostToken(HOST_A)}.probe`, JSON.stringify({ for: HOST_A }));
  await kv.put(`${encodeHostToken(HOST_B)}.probe`, JSON.stringify({ for: HOST_B }));
}, 60_000);

afterAll(async () => {
  await Promise.all(open.map((nc) => nc.close().catch(() => undefined)));
  await admin?.close();
  await nats?.stop();
});

describe("the scoped host signing key", () => {
  it("[security] the template is hostPermissions with the host token as the user's name", () => {
    const tok = encodeHostToken(HOST_A);
    const filled = JSON.parse(JSON.stringify(hostPermissionsTemplate()).replaceAll("{{name()}}", tok)) as Permissions;
    expect(filled).toEqual(hostPermissions(HOST_A));
    expect(filled.pub?.allow).toEqual(expect.arrayContaining([subjects.heartbeat(HOST_A), subjects.report(HOST_A)]));
    expect(filled.sub?.allow).toEqual([subjects.nudge(HOST_A), `${hostInboxPrefix(HOST_A)}.>`]);
  });

  it("[security] enrolment's credentials carry no permissions of their own and get exactly the host's from the server", async () => {
    const issued = await issueHostCreds(hostIssuer(nats.bus.authority), HOST_A);
    const jwt = issued.creds.split("\n")[1]!;
    const claims = JSON.parse(Buffer.from(jwt.split(".")[1]!, "base64url").toString()) as { name: string; nats: Record<string, unknown> };
    expect(claims.name).toBe(encodeHostToken(HOST_A));
    expect(claims.nats["pub"]).toBeUndefined();
    expect(claims.nats["sub"]).toBeUndefined();
    const a = await as(issued.creds, hostInboxPrefix(HOST_A));
    // Its own: heartbeat, nudge, desired keys by direct get.
    expect(await publishBlocked(admin, a, subjects.heartbeat(HOST_B), subjects.heartbeat(HOST_A))).toBe(true);
    const kv = await new Kvm(a).open(KV_DESIRED, { allow_direct: true });
    expect((await kv.get(`${encodeHostToken(HOST_A)}.probe`))?.json()).toEqual({ for: HOST_A });
    await refused(() => kv.get(`${encodeHostToken(HOST_B)}.probe`));
  });

  it("[security] a user minted with the leaked key asking for admin permissions is refused at connect", async () => {
    const wide: Permissions = { pub: { allow: [">"], deny: [] }, sub: { allow: [">"], deny: [] } };
    const message = await refused(async () => as(await minted(encodeHostToken(HOST_B), wide)));
    expect(message.toLowerCase()).toMatch(/authorization/);
  });

  it("[security] a user minted with the leaked key without permissions is host-shaped: no molt.es.>, no JetStream management, no desired-key writes, no command records, no wide subscriptions", async () => {
    const b = await as(await minted(encodeHostToken(HOST_B)), hostInboxPrefix(HOST_B));
    await expectHostShaped(b, subjects.heartbeat(HOST_B));
    // And host B's only: A's heartbeat and A's desired state are out of reach.
    expect(await publishBlocked(admin, b, subjects.heartbeat(HOST_A), subjects.heartbeat(HOST_B))).toBe(true);
    await refused(() => new Kvm(b).open(KV_DESIRED, { allow_direct: true }).then((kv) => kv.get(`${encodeHostToken(HOST_A)}.probe`)));
  });

  it("[security] even a wildcard name ('*', '>') stays host-shaped: it may speak for hosts, as anything that can enrol them can, but never beyond a host's subjects", async () => {
    for (const name of ["*", ">"]) {
      const nc = await as(await minted(name));
      // What a template cannot prevent: the name is the thief's to choose (docs/decisions.md).
      expect(await publishBlocked(admin, nc, subjects.heartbeat(HOST_A), "$JS.API.INFO"), name).toBe(false);
      await expectHostShaped(nc, "$JS.API.INFO");
    }
  });
});

/** Nothing a host may not do: events, desired keys, command records, nudges, stream management, `>`. */
async function expectHostShaped(nc: NatsConnection, canary: string) {
  for (const forbidden of [subjects.slot(HOST_B, "metrics-agent"), subjects.hostMeta(HOST_A), subjects.command("create-deployment"), `$KV.${KV_DESIRED}.${encodeHostToken(HOST_A)}.metrics-agent`, subjects.nudge(HOST_A), "$JS.API.STREAM.DELETE." + STREAM_EVENTS])
    expect(await publishBlocked(admin, nc, forbidden, canary), forbidden).toBe(true);
  await refused(() => jetstream(nc, { timeout: 2_000 }).publish(subjects.hostMeta(HOST_B), "{}"));
  await refused(async () => (await jetstreamManager(nc, { timeout: 2_000 })).streams.delete(STREAM_EVENTS));
  await refused(async () => (await jetstreamManager(nc, { timeout: 2_000 })).streams.update(STREAM_EVENTS, { max_msgs: 1 }));
  const errors: string[] = [];
  nc.subscribe("molt.>", { callback: (err) => void (err ? errors.push(err.message) : undefined) });
  await waitFor("the wide subscription refused", () => (errors.length > 0 ? true : undefined), { timeoutMs: 10_000, intervalMs: 20 });
  const info = await (await jetstreamManager(admin)).streams.info(STREAM_EVENTS);
  expect(info.config.max_msgs).toBe(-1);
  expect(info.state.messages).toBe(0);
}
