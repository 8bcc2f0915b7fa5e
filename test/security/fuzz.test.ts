import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  CreateDeploymentBody,
  encodeHostToken,
  Heartbeat,
  OperatorCommandBody,
  PackageYankBody,
  PlanPreviewRequest,
  QuarantineBody,
  SignedRepositoryMetadata,
  StepReport,
  STREAM_EVENTS,
  subjects,
} from "@molt/contracts";
import { buildPackage, startNatsServer, startSystem, waitFor, type SecureNatsServer, type System } from "@molt/testkit";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { nearlyValid } from "./zod-arbitrary.js";

/**
 * Property-based fuzz of the running system, every piece its own process: every HTTP endpoint
 * through the gateway and every NATS request subject a service answers, with bodies generated from
 * the contracts' zod schemas (zod-arbitrary.ts: valid, or with one field broken, dropped or
 * added) and hostile strings. What must hold: only 2xx/4xx (a
 * 4xx in the one error shape), nothing appended by a refused request, every process alive, the
 * projector and the audit log still following. Bounded in time (FUZZ_MS, 40 s by default).
 */
const OP = "operator-token-fuzz-000001";
const VIEW = "viewer-token-fuzz-0000001";
const ADMIN = "admin-token-fuzz-00000001";
const FUZZ_MS = Number(process.env["FUZZ_MS"] ?? 40_000);

let nats: SecureNatsServer;
let nc: NatsConnection;
let jsm: JetStreamManager;
let system: System;
let dataDir: string;

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "molt-fuzz-"));
  nats = await startNatsServer({ secure: true });
  const start = (attempt: number) =>
    startSystem({
      nats,
      dataDir: join(dataDir, `attempt-${attempt}`),
      tokens: { [OP]: { actor: "otto", role: "operator" }, [VIEW]: { actor: "vera", role: "viewer" }, [ADMIN]: { actor: "ada", role: "admin" } },
      // Rate limits high enough that the fuzz reaches the handlers (429s are still fine).
      env: { MOLT_RATE_WRITES: "100000", MOLT_RATE_EXPENSIVE: "100000", MOLT_PLAN_PREVIEW_TIMEOUT_MS: "3000" },
    });
  // Seven processes (two with PGlite) start at once; on a loaded machine one may miss the
  // testkit's ready deadline: start again once rather than fail on load.
  system = await start(1).catch(() => start(2));
  // The fuzz speaks on the bus as the admin: the widest identity there is.
  nc = await nats.bus.connect("admin");
  jsm = await jetstreamManager(nc);
}, 300_000);
afterAll(async () => {
  await nc?.close();
  await system?.stop();
  await nats?.stop();
  if (dataDir && !process.env["KEEP"]) await rm(dataDir, { recursive: true, force: true });
});

// ---------- what the fuzz sends ----------
const hostile = fc.oneof(
  fc.constantFrom("", " ", "..", "../../etc/passwd", "\u0000", "a\u0000b", "\ud800", "%FF", "%00", "*", ">", "a.b.c", "😀", "x".repeat(5000), "0000-01-01T00:00:00Z", "-1", "1e400", "NaN", "null", "[]", "{}", "__proto__", "constructor"),
  fc.string({ unit: "binary", maxLength: 40 }),
  fc.string({ maxLength: 300 }),
);
const plausible = fc.oneof(
  fc.constantFrom("metrics-agent", "2.1.0", "1.0.0", "linux-amd64", "web-1.example.com", "10.0.0.7", "d-0123456789abcdef01234567", "a".repeat(64), "true", "false", "5", "0", "100"),
  fc.stringMatching(/^[a-z0-9_-]{1,20}$/),
);
const text = fc.oneof(hostile, plausible);
/** encodeURIComponent throws on a lone surrogate: the client cannot send one, so it becomes U+FFFD. */
const enc = (s: string) => encodeURIComponent(s.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, "\uFFFD"));
/** A path segment: usually %-encoded, sometimes raw (the router must still cope). */
const segment = fc.oneof(
  { weight: 4, arbitrary: text.map(enc) },
  { weight: 1, arbitrary: fc.constantFrom("%FF", "%", "%zz", "%C0%80", "%ED%A0%80", "..", "%2e%2e", "a%2Fb", "%00") },
);
const QUERY_KEYS = ["limit", "after", "before", "actor", "kind", "target", "source", "since", "state", "online", "label", "version", "component", "platform", "dryRun", "full", "cluster", "x"];
const query = fc
  .array(
    fc.tuple(
      fc.oneof(fc.constantFrom(...QUERY_KEYS), text.map(enc)),
      fc.oneof({ weight: 4, arbitrary: text.map(enc) }, { weight: 1, arbitrary: fc.constantFrom("%FF", "%", "%00", "%E0%A4") }),
    ),
    { maxLength: 4 },
  )
  .map((pairs) => (pairs.length ? `?${pairs.map(([k, v]) => `${k}=${v}`).join("&")}` : ""));

/** What a broken field holds instead: hostile text, or a value of another JSON type. */
const junk = fc.oneof({ weight: 3, arbitrary: text }, fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.anything({ maxDepth: 2 }));
const deep = fc.integer({ min: 100, max: 6000 }).map((n) => `{"component":${"[".repeat(n)}${"]".repeat(n)}}`);
/** Valid CreateDeploymentBody (an empty plan allowed), so accepted commands and their events are in the mix. */
const validDeployment = fc
  .record({ hosts: fc.uniqueArray(fc.constantFrom("web-1.example.com", "10.0.0.7", "i-0abc", "db-2"), { minLength: 1, maxLength: 3 }), version: fc.constantFrom("2.1.0", "3.0.0") })
  .map(({ hosts, version }) => JSON.stringify({ component: "metrics-agent", version, hosts, allowEmpty: true }));
/** A body for an endpoint that takes `schema`: generated from it (valid, or one thing broken), or not JSON-shaped at all. */
const bodyOf = (schema: z.ZodType) =>
  fc.oneof(
    { weight: 6, arbitrary: nearlyValid(schema, junk).map((b) => JSON.stringify(b)) },
    { weight: 2, arbitrary: fc.json({ maxDepth: 4 }) },
    { weight: 1, arbitrary: deep },
    { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 200 }) },
  );
/** Every JSON command endpoint with the contracts' schema of its body; `{}` are path segments. */
const COMMANDS: Array<{ path: string; method: string; schema: z.ZodType }> = [
  { path: "/v1/deployments", method: "POST", schema: CreateDeploymentBody },
  { path: "/v1/deployments?dryRun=true", method: "POST", schema: CreateDeploymentBody },
  { path: "/v1/deployments/{}/{}", method: "POST", schema: OperatorCommandBody },
  { path: "/v1/hosts/{}/{}", method: "POST", schema: QuarantineBody },
  { path: "/v1/hosts/{}/enrol", method: "POST", schema: z.object({}) },
  { path: "/v1/packages/{}/{}/yank", method: "POST", schema: PackageYankBody },
  { path: "/v1/packages/{}/metadata", method: "PUT", schema: SignedRepositoryMetadata },
];
const token = fc.constantFrom<string | null>(OP, OP, VIEW, ADMIN, null, "not-a-token-but-long-enough", "Basic abc");

type Req = { method: string; path: string; body?: string | Uint8Array; contentType?: string; token: string | null };
const request: fc.Arbitrary<Req> = fc.oneof(
  // Reads of every view.
  fc
    .tuple(
      fc.constantFrom(
        "/v1/deployments",
        "/v1/deployments/{}",
        "/v1/deployments/{}/tasks",
        "/v1/hosts",
        "/v1/hosts/{}",
        "/v1/hosts/{}/timeline",
        "/v1/fleet/versions",
        "/v1/tasks/{}",
        "/v1/projector/status",
        "/v1/projector/dead-letters",
        "/v1/packages/{}",
        "/v1/packages/{}/{}/{}",
        "/v1/packages/{}/{}/{}/download",
        "/v1/packages/{}/metadata",
        "/v1/blobs/{}",
        "/v1/audit",
        "/v1/audit/status",
        "/v1/audit/anchor",
        "/v1/audit/verify",
        "/v1/{}",
      ),
      fc.array(segment, { minLength: 3, maxLength: 3 }),
      query,
      token,
      fc.constantFrom("GET", "GET", "HEAD"),
    )
    .map(([tpl, segs, q, t, method]) => ({ method, path: fill(tpl, segs) + q, token: t })),
  // Commands: each endpoint with a body from its own schema (valid deployments mixed in, so accepted commands and their events are in the mix).
  fc
    .constantFrom(...COMMANDS)
    .chain((c) =>
      fc.tuple(
        fc.constant(c),
        fc.array(fc.oneof(segment, fc.constantFrom("pause", "resume", "approve", "cancel", "retry", "rollback", "quarantine", "clear", "metrics-agent", "2.1.0")), { minLength: 3, maxLength: 3 }),
        c.schema === CreateDeploymentBody ? fc.oneof(validDeployment, bodyOf(c.schema)) : bodyOf(c.schema),
        fc.constantFrom("application/json", "application/json", "application/json", "text/plain", "application/x-www-form-urlencoded"),
        token,
        fc.constantFrom(c.method, c.method, c.method, "PUT", "DELETE", "PATCH"),
      ),
    )
    .map(([c, segs, body, contentType, t, method]) => ({ method, path: fill(c.path, segs), body, contentType, token: t })),
  // Uploads: random bytes with hostile names.
  fc
    .tuple(query, fc.uint8Array({ maxLength: 4096 }), token, fc.constantFrom("application/gzip", "application/octet-stream", "application/json"))
    .map(([q, bytes, t, contentType]) => ({ method: "POST", path: `/v1/packages${q}`, body: bytes, contentType, token: t })),
);
function fill(tpl: string, segs: string[]): string {
  let i = 0;
  return tpl.replace(/\{\}/g, () => segs[i++] ?? "x");
}

const refusedIds = new Set<string>();
const statuses = new Map<number, number>();

async function send(r: Req): Promise<{ status: number; text: string; id: string }> {
  const id = randomUUID();
  const res = await fetch(`${system.gatewayUrl}${r.path}`, {
    method: r.method,
    headers: {
      "x-request-id": id,
      ...(r.token ? { authorization: r.token.startsWith("Basic") ? r.token : `Bearer ${r.token}` } : {}),
      ...(r.contentType ? { "content-type": r.contentType } : {}),
    },
    ...(r.body !== undefined && r.method !== "GET" && r.method !== "HEAD" ? { body: r.body } : {}),
    signal: AbortSignal.timeout(20_000),
  });
  return { status: res.status, text: await res.text(), id };
}

async function lastSeq(stream: string): Promise<number> {
  return (await jsm.streams.info(stream)).state.last_seq;
}

describe("fuzz: hostile input never breaks a service [security]", () => {
  it("[security] NATS request subjects answer every payload, refuse the bad ones and append nothing for them", async () => {
    const hostToken = fc.oneof(
      fc.constantFrom("web-1.example.com", "10.0.0.7", "i-0abc", "fuzz-host-1").map(encodeHostToken),
      fc.stringMatching(/^[A-Za-z0-9_-]{1,30}$/),
    );
    // Each subject's request schema, valid or with one thing broken; any payload goes to any subject too.
    const payload = fc.oneof(
      nearlyValid(StepReport, junk).map((o) => JSON.stringify(o)),
      nearlyValid(Heartbeat, junk).map((o) => JSON.stringify(o)),
      nearlyValid(PlanPreviewRequest, junk).map((o) => JSON.stringify(o)),
      fc.json({ maxDepth: 3 }),
      deep,
      fc.string({ unit: "binary", maxLength: 300 }),
    );
    const target = fc.oneof(
      hostToken.map((t) => ({ subject: `molt.feedback.report.${t}`, ok: ["accepted", "duplicate", "refused"] })),
      hostToken.map((t) => ({ subject: `molt.feedback.heartbeat.${t}`, ok: ["ok", "refused"] })),
      fc.constant({ subject: subjects.planPreview, ok: ["ok", "error"] }),
    );
    const deadline = Date.now() + FUZZ_MS / 3;
    await fc.assert(
      fc.asyncProperty(target, payload, async (t, body) => {
        const before = await lastSeq(STREAM_EVENTS);
        const reply = await nc.request(t.subject, body, { timeout: 10_000 });
        const answer = reply.json<{ status: string; reason?: string }>();
        expect(t.ok, `${t.subject} answered ${JSON.stringify(answer)}`).toContain(answer.status);
        if (answer.status === "refused" || answer.status === "error") {
          expect(typeof answer.reason).toBe("string");
          // Nothing else writes to the stream yet (no agents, no deployments), so this is exact.
          expect(await lastSeq(STREAM_EVENTS), `${t.subject} refused but appended`).toBe(before);
        }
      }),
      { numRuns: 2000, interruptAfterTimeLimit: Math.max(1000, deadline - Date.now()), endOnFailure: true },
    );
  });

  it("[security] every HTTP endpoint through the gateway: only 2xx/4xx in the one error shape, nothing appended by a refusal", async () => {
    const deadline = Date.now() + FUZZ_MS;
    await fc.assert(
      fc.asyncProperty(request, async (r) => {
        const res = await send(r);
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        const what = `${r.method} ${r.path.slice(0, 200)} → ${res.status} ${res.text.slice(0, 300)}`;
        expect(res.status < 500, what).toBe(true);
        if (res.status >= 400) {
          refusedIds.add(res.id);
          if (r.method !== "HEAD") expect(JSON.parse(res.text), what).toEqual({ error: { code: expect.any(String) as string, message: expect.any(String) as string } });
        }
      }),
      { numRuns: 5000, interruptAfterTimeLimit: Math.max(1000, deadline - Date.now()), endOnFailure: true },
    );
    // The fuzz reached the handlers: both answers and refusals, from many requests.
    const total = [...statuses.values()].reduce((a, b) => a + b, 0);
    expect(total).toBeGreaterThan(50);
    expect([...statuses.keys()].some((s) => s < 300)).toBe(true);
    expect([...statuses.keys()].some((s) => s >= 400)).toBe(true);
    if (process.env["FUZZ_STATS"]) process.stderr.write(`fuzz: ${total} requests, statuses ${JSON.stringify(Object.fromEntries(statuses))}\n`);

    // No event anywhere carries the correlation id of a refused request.
    const last = await lastSeq(STREAM_EVENTS);
    for (let seq = 1; seq <= last; seq++) {
      const m = await jsm.streams.getMessage(STREAM_EVENTS, { seq }).catch(() => null);
      if (!m) continue;
      const commit = m.json<{ events?: Array<{ metadata?: { correlationId?: string } }> }>();
      for (const e of commit.events ?? []) expect(refusedIds.has(e.metadata?.correlationId ?? ""), `event ${seq} from a refused request`).toBe(false);
    }
  });

  it("[security] afterwards: every process alive, projector and audit caught up with no error, the chain verifies, uploads are audited", async () => {
    for (const p of system.processes) expect({ name: p.name, exit: p.proc.exitCode, signal: p.proc.signalCode }).toEqual({ name: p.name, exit: null, signal: null });
    for (const url of [system.gatewayUrl, ...Object.values(system.urls)]) expect((await fetch(`${url}/healthz`)).status).toBe(200);

    // A real upload is recorded as a command.
    const pkg = await buildPackage({ VERSION: "7.7.7\n" });
    const up = await fetch(`${system.gatewayUrl}/v1/packages?component=fuzz-upload&version=7.7.7&platform=linux-amd64`, {
      method: "POST",
      headers: { authorization: `Bearer ${OP}`, "content-type": "application/gzip" },
      body: new Uint8Array(pkg),
    });
    expect(up.status, await up.text()).toBe(201);

    const api = async <T>(path: string, t = ADMIN) => (await fetch(`${system.gatewayUrl}${path}`, { headers: { authorization: `Bearer ${t}` } })).json() as Promise<T>;
    const events = await lastSeq(STREAM_EVENTS);
    const commands = await lastSeq("MOLT_AUDIT");
    await waitFor(
      "projector and audit caught up",
      async () => {
        const p = await api<{ checkpoint: number; error: string | null }>("/v1/projector/status");
        const a = await api<{ streams: Array<{ stream: string; checkpoint: number; error: string | null }> }>("/v1/audit/status");
        expect(p.error).toBeNull();
        for (const s of a.streams) expect(s.error, s.stream).toBeNull();
        const cp = (name: string) => a.streams.find((s) => s.stream === name)?.checkpoint ?? 0;
        return p.checkpoint >= events && cp(STREAM_EVENTS) >= events && cp("MOLT_AUDIT") >= commands ? true : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 250 },
    );
    const uploads = await api<{ entries: Array<{ actor: string; outcome: string; target: string }> }>("/v1/audit?kind=upload-package&source=command");
    expect(uploads.entries).toContainEqual(expect.objectContaining({ actor: "otto", outcome: "accepted", target: "fuzz-upload@7.7.7/linux-amd64" }));
    const unauthorized = await api<{ entries: unknown[] }>("/v1/audit?kind=unauthorized&limit=1");
    expect(unauthorized.entries.length).toBe(1);
    expect(await api("/v1/audit/verify?full=true")).toMatchObject({ ok: true });
  });
});
