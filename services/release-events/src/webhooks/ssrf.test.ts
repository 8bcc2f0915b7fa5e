import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addressGuard } from "./ssrf.js";

let server: Server;
let port: number;
beforeAll(async () => {
  server = createServer((_req, res) => res.writeHead(204).end());
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  port = (server.address() as AddressInfo).port;
});
afterAll(() => new Promise((r) => server.close(r)));

describe("the webhook address guard", () => {
  it("[release-events] SSRF: refuses loopback, private, link-local/metadata, CGNAT, reserved and their IPv6 forms; lets public addresses and the operator's allowed networks through", async () => {
    const guard = addressGuard();
    const refused = ["127.0.0.1", "10.1.2.3", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1", "::1", "fd00::1", "fe80::1", "::ffff:10.0.0.1", "::ffff:127.0.0.1", "[::1]"];
    for (const ip of refused) await expect(guard.checkHost(ip), ip).rejects.toThrow(/refused/);
    for (const ip of ["93.184.216.34", "8.8.8.8", "2606:4700::1111"]) await expect(guard.checkHost(ip), ip).resolves.toBeUndefined();
    // After DNS resolution: a name is judged by the addresses it resolves to.
    await expect(guard.checkHost("localhost")).rejects.toThrow(/localhost is .*refused/);
    const allowing = addressGuard(["127.0.0.0/8", "10.9.0.0/16"]);
    for (const ip of ["127.0.0.1", "::ffff:127.0.0.1", "10.9.1.1"]) await expect(allowing.checkHost(ip), ip).resolves.toBeUndefined();
    await expect(allowing.checkHost("10.8.1.1")).rejects.toThrow(/refused/);
    expect(() => addressGuard(["nonsense/8"])).toThrow(/not a CIDR/);
  });

  it("[release-events] SSRF: the delivery connection itself checks the address a name resolves to then (a name re-pointed after the subscription's check is refused)", async () => {
    // Connection-time check, as after a DNS rebinding: `localhost` is looked up by the dispatcher.
    const strict = addressGuard().dispatcher({ timeoutMs: 2_000 });
    const open = addressGuard(["127.0.0.0/8", "::1/128"]).dispatcher({ timeoutMs: 2_000 });
    try {
      const err = await request(`http://localhost:${port}/hook`, { method: "POST", body: "{}", dispatcher: strict }).then(() => null, (e: unknown) => e as Error & { cause?: Error });
      expect(err, "the connection was made").not.toBeNull();
      expect(`${err!.message} ${err!.cause?.message ?? ""}`).toMatch(/refused/);
      const ok = await request(`http://localhost:${port}/hook`, { method: "POST", body: "{}", dispatcher: open });
      expect(ok.statusCode).toBe(204);
      await ok.body.dump();
    } finally {
      await Promise.all([strict.close(), open.close()]);
    }
  });
});
