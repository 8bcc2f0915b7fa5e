import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import { BlockList, isIP } from "node:net";
import { Agent } from "undici";

/**
 * Addresses a webhook may not reach unless the operator allows them: loopback, private,
 * link-local (the cloud metadata address 169.254.169.254 is one), carrier-grade NAT, multicast,
 * reserved, and their IPv6 counterparts (an IPv4-mapped IPv6 address is checked as its IPv4).
 */
const FORBIDDEN: Array<[string, number, "ipv4" | "ipv6"]> = [
  ["0.0.0.0", 8, "ipv4"],
  ["10.0.0.0", 8, "ipv4"],
  ["100.64.0.0", 10, "ipv4"],
  ["127.0.0.0", 8, "ipv4"],
  ["169.254.0.0", 16, "ipv4"],
  ["172.16.0.0", 12, "ipv4"],
  ["192.0.0.0", 24, "ipv4"],
  ["192.168.0.0", 16, "ipv4"],
  ["198.18.0.0", 15, "ipv4"],
  ["224.0.0.0", 3, "ipv4"],
  ["::", 128, "ipv6"],
  ["::1", 128, "ipv6"],
  ["fc00::", 7, "ipv6"],
  ["fe80::", 10, "ipv6"],
  ["ff00::", 8, "ipv6"],
  ["64:ff9b::", 96, "ipv6"],
];

export class SsrfError extends Error {
  override name = "SsrfError";
}

export interface AddressGuard {
  /** Throws SsrfError when `address` (an IP) may not be reached. */
  check(address: string, host: string): void;
  /** Resolves `host` (or takes it as an IP) and checks every address it has. */
  checkHost(host: string): Promise<void>;
  /** An undici dispatcher that checks each address it connects to, after DNS resolution. */
  dispatcher(opts: { timeoutMs: number }): Agent;
}

/**
 * `allow`: CIDRs the operator lets through anyway (`MOLT_WEBHOOK_ALLOW_NETS`, e.g. `127.0.0.0/8`
 * for a receiver on the same machine).
 */
export function addressGuard(allow: readonly string[] = []): AddressGuard {
  const forbidden = new BlockList();
  for (const [net, prefix, type] of FORBIDDEN) forbidden.addSubnet(net, prefix, type);
  const allowed = new BlockList();
  for (const cidr of allow) {
    const [net, bits] = cidr.split("/");
    const type = isIP(net ?? "") === 6 ? "ipv6" : "ipv4";
    if (!net || !isIP(net)) throw new Error(`MOLT_WEBHOOK_ALLOW_NETS: ${cidr} is not a CIDR`);
    allowed.addSubnet(net, bits === undefined ? (type === "ipv4" ? 32 : 128) : Number(bits), type);
  }
  const check = (address: string, host: string) => {
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
    const ip = mapped ?? address;
    const type = isIP(ip) === 6 ? "ipv6" : "ipv4";
    if (allowed.check(ip, type)) return;
    if (forbidden.check(ip, type)) throw new SsrfError(`${host} is ${ip}, a loopback, private, link-local or reserved address: refused (the operator allows such networks with MOLT_WEBHOOK_ALLOW_NETS)`);
  };
  const bare = (host: string) => host.replace(/^\[|\]$/g, "");
  return {
    check,
    async checkHost(host) {
      const h = bare(host);
      if (isIP(h)) return check(h, h);
      const addresses = await new Promise<LookupAddress[]>((res, rej) => dnsLookup(h, { all: true }, (err, a) => (err ? rej(err) : res(a))));
      for (const a of addresses) check(a.address, h);
    },
    dispatcher({ timeoutMs }) {
      return new Agent({
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
        connect: {
          timeout: timeoutMs,
          // Checked on the address actually connected to, so a name that resolves elsewhere
          // between the subscription's check and a delivery (DNS rebinding) is still refused.
          lookup: (hostname, options, callback) => {
            dnsLookup(hostname, { ...options, all: true }, (err, addresses: LookupAddress[]) => {
              if (err) return callback(err, "", 0);
              try {
                for (const a of addresses) check(a.address, hostname);
              } catch (e) {
                return callback(e as Error, "", 0);
              }
              if ((options as { all?: boolean }).all) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, addresses);
              const first = addresses[0]!;
              callback(null, first.address, first.family);
            });
          },
        },
      });
    },
  };
}
