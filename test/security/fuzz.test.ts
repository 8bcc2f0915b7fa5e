import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  CreateDeploymentBody,
  CreateWebhook,
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
import { hostIssuer } from "@molt/runtime";
import { buildPackage, startNatsServer, startSystem, waitFor, type SecureNatsServer, type System } from "@molt/testkit";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { z } from "zod";
import { arbitraryFromJsonSchema, nearlyValid, type JsonSchema } from "./zod-arbitrary.js";

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
/** FUZZ_SEED replays a failing run's generated inputs (fast-check prints the seed). */
const seed = process.env["FUZZ_SEED"] ? { seed: Number(process.env["FUZZ_SEED"]) } : {};

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
const bodyOf = (schema: z.ZodType | JsonSchema) =>
  fc.oneof(
    { weight: 6, arbitrary: nearlyValid(schema, junk).map((b) => JSON.stringify(b)) },
    { weight: 2, arbitrary: fc.json({ maxDepth: 4 }) },
    { weight: 1, arbitrary: deep },
    { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 200 }) },
  );
/**
 * The contracts' zod schema of a body, where the route takes one from contracts (their
 * arbitraries are checked to parse in zod-arbitrary.test.ts); every other body comes from the
 * JSON Schema the route publishes, which is generated from the route's own zod schema.
 */
const CONTRACT_BODIES: Record<string, z.ZodType> = {
  "POST /v1/deployments": CreateDeploymentBody,
  "POST /v1/deployments/{}/{}": OperatorCommandBody,
  "POST /v1/hosts/{}/{}": QuarantineBody,
  "POST /v1/packages/{}/{}/yank": PackageYankBody,
  "PUT /v1/packages/{}/metadata": SignedRepositoryMetadata,
  "POST /v1/webhooks": CreateWebhook,
};
/** Routes outside the services' OpenAPI documents: the gateway's own, and the documents themselves. */
const UNDOCUMENTED = ["/v1/me", "/asyncapi.json", "/v1/release-events/asyncapi.json", "/", "/docs", "/docs/json", "/healthz", "/metrics", "/v1/{}", "/{}"];
const token = fc.constantFrom<string | null>(OP, OP, VIEW, ADMIN, ADMIN, null, "not-a-token-but-long-enough", "Basic abc");

/** One operation of the merged OpenAPI document (`/docs/json`): every route a client can call. */
interface Operation {
  key: string;
  method: string;
  template: string;
  params: Array<{ name: string; value: fc.Arbitrary<string> }>;
  query: string[];
  body: fc.Arbitrary<string> | null;
}
interface OpenApi {
  paths: Record<string, Record<string, { parameters?: Array<{ in: string; name: string; schema?: JsonSchema }>; requestBody?: { content?: Record<string, { schema?: JsonSchema }> } }>>;
  components?: unknown;
}
/** Ids seen in answers (deployments, tasks, webhooks, hosts): later requests act on real things too. */
const seenIds: string[] = [];
const seenId = fc.nat().map((i) => (seenIds.length > 0 ? seenIds[i % seenIds.length]! : "x"));

function operationsOf(doc: OpenApi): Operation[] {
  const ops: Operation[] = [];
  for (const [template, methods] of Object.entries(doc.paths)) {
    for (const [m, op] of Object.entries(methods)) {
      const method = m.toUpperCase();
      if (!["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"].includes(method)) continue;
      const key = `${method} ${template.replace(/\{[^}]+\}/g, "{}")}`;
      const withDoc = (schema: JsonSchema): JsonSchema => ({ ...schema, ...({ components: doc.components } as object) });
      const params = (op.parameters ?? [])
        .filter((p) => p.in === "path")
        .map((p) => ({
          name: p.name,
          value: fc.oneof(
            { weight: 3, arbitrary: segment },
            { weight: 2, arbitrary: p.schema ? arbitraryFromJsonSchema(withDoc(p.schema)).map((v) => enc(String(v))) : segment },
            { weight: 2, arbitrary: seenId.map(enc) },
          ),
        }));
      const query = (op.parameters ?? []).filter((p) => p.in === "query").map((p) => p.name);
      const published = op.requestBody?.content?.["application/json"]?.schema;
      const contract = CONTRACT_BODIES[key];
      const body = contract ? bodyOf(contract) : published ? bodyOf(withDoc(published)) : null;
      ops.push({ key, method, template, params, query, body: key === "POST /v1/deployments" && body ? fc.oneof(validDeployment, body) : body });
    }
  }
  return ops;
}

type Req = { key: string; method: string; path: string; body?: string | Uint8Array; contentType?: string; token: string | null };
function requestsOf(ops: Operation[]): fc.Arbitrary<Req> {
  const queryOf = (names: string[]) =>
    fc
      .array(
        fc.tuple(
          fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...names, ...QUERY_KEYS) }, text.map(enc)),
          fc.oneof({ weight: 4, arbitrary: text.map(enc) }, { weight: 1, arbitrary: fc.constantFrom("%FF", "%", "%00", "%E0%A4") }),
        ),
        { maxLength: 4 },
      )
      .map((pairs) => (pairs.length ? `?${pairs.map(([k, v]) => `${k}=${v}`).join("&")}` : ""));
  const documented = fc.constantFrom(...ops).chain((op) =>
    fc
      .record({
        values: fc.tuple(...op.params.map((p) => p.value)),
        q: queryOf(op.query),
        body: op.body ?? fc.constant(undefined),
        contentType: fc.constantFrom("application/json", "application/json", "application/json", "text/plain", "application/x-www-form-urlencoded"),
        token,
        // Mostly the documented method; now and then another on the same path.
        method: fc.constantFrom(op.method, op.method, op.method, op.method, "GET", "POST", "PUT", "DELETE", "PATCH"),
      })
      .map(({ values, q, body, contentType, token: t, method }): Req => {
        let i = 0;
        const path = op.template.replace(/\{[^}]+\}/g, () => values[i++] ?? "x");
        return { key: method === op.method ? op.key : `${method} (other) ${op.key}`, method, path: path + q, ...(body !== undefined ? { body, contentType } : {}), token: t };
      }),
  );
  const undocumented = fc
    .tuple(fc.constantFrom(...UNDOCUMENTED), segment, query, token, fc.constantFrom("GET", "GET", "HEAD", "POST"))
    .map(([tpl, seg, q, t, method]): Req => ({ key: `${method} ${tpl}`, method, path: tpl.replace("{}", seg) + q, token: t }));
  // Uploads: random bytes with hostile names (a gzip body, so not in the JSON schemas).
  const uploads = fc
    .tuple(query, fc.uint8Array({ maxLength: 4096 }), token, fc.constantFrom("application/gzip", "application/octet-stream", "application/json"))
    .map(([q, bytes, t, contentType]): Req => ({ key: "POST /v1/packages (bytes)", method: "POST", path: `/v1/packages${q}`, body: bytes, contentType, token: t }));
  return fc.oneof({ weight: 8, arbitrary: documented }, { weight: 1, arbitrary: undocumented }, { weight: 1, arbitrary: uploads });
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
  // A live view (server-sent events) never ends: its answer is the status and the first bytes.
  if ((res.headers.get("content-type") ?? "").startsWith("text/event-stream")) {
    await res.body?.cancel();
    return { status: res.status, text: "", id };
  }
  const text = await res.text();
  if (res.status < 300 && (res.headers.get("content-type") ?? "").startsWith("application/json")) {
    const found = text.slice(0, 100_000).matchAll(/"(?:id|deploymentId|taskId|hostId)":"([^"]{1,128})"/g);
    for (const [, v] of found) if (v && !seenIds.includes(v) && seenIds.length < 200) seenIds.push(v);
  }
  return { status: res.status, text, id };
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
    // Every subject a service answers on, as the server lists the account's subscriptions (not a
    // list kept by hand): each must be one the fuzz sends to.
    const fuzzed = [subjects.reports, subjects.heartbeats, subjects.planPreview];
    const sys = await nats.bus.connect("system");
    try {
      const reply = await sys.request("$SYS.REQ.SERVER.PING.SUBSZ", JSON.stringify({ subscriptions: true, account: hostIssuer(nats.bus.authority).account, limit: 100_000 }), { timeout: 5_000 });
      const listed = reply.json<{ data: { subscriptions_list?: Array<{ subject: string }> } }>().data.subscriptions_list ?? [];
      // Not answers: replies (inboxes), JetStream's own API, and the streams capturing their subjects.
      const captured = new Set<string>();
      for await (const si of jsm.streams.list()) for (const x of si.config.subjects ?? []) captured.add(x);
      const answered = [...new Set(listed.map((x) => x.subject).filter((x) => !/^(_INBOX|\$JS|\$KV|\$O|\$SYS)/.test(x) && !captured.has(x)))].sort();
      expect(answered.length).toBeGreaterThan(0);
      expect(answered).toEqual([...fuzzed].sort());
    } finally {
      await sys.close();
    }
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
      { numRuns: 2000, interruptAfterTimeLimit: Math.max(1000, deadline - Date.now()), endOnFailure: true, ...seed },
    );
  });

  it("[security] every HTTP route through the gateway (each operation of the merged OpenAPI document, and the undocumented ones): only 2xx/4xx in the one error shape, nothing appended by a refusal", async () => {
    const doc = (await (await fetch(`${system.gatewayUrl}/docs/json`)).json()) as OpenApi;
    const ops = operationsOf(doc);
    // The document is every service's routes: a vacuous one would make the fuzz vacuous.
    for (const key of ["POST /v1/deployments", "POST /v1/deployments/{}/{}", "GET /v1/deployments/{}/events", "POST /v1/hosts/{}/enrol", "POST /v1/projector/rebuild", "GET /v1/audit/verify", "PUT /v1/packages/{}/metadata", "POST /v1/webhooks", "DELETE /v1/webhooks/{}", "GET /v1/webhooks/{}/attempts", "GET /v1/release-events/status"])
      expect(ops.map((o) => o.key), key).toContain(key);
    const reached = new Map<string, number>();
    const deadline = Date.now() + FUZZ_MS;
    await fc.assert(
      fc.asyncProperty(requestsOf(ops), async (r) => {
        const res = await send(r);
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        reached.set(r.key, (reached.get(r.key) ?? 0) + 1);
        const what = `${r.method} ${r.path.slice(0, 200)} → ${res.status} ${res.text.slice(0, 300)}`;
        expect(res.status < 500, what).toBe(true);
        if (res.status >= 400) {
          refusedIds.add(res.id);
          if (r.method !== "HEAD") expect(JSON.parse(res.text), what).toEqual({ error: { code: expect.any(String) as string, message: expect.any(String) as string } });
        }
      }),
      { numRuns: 5000, interruptAfterTimeLimit: Math.max(1000, deadline - Date.now()), endOnFailure: true, ...seed },
    );
    // Every documented operation was called with its own method.
    expect(ops.filter((o) => !reached.has(o.key)).map((o) => o.key)).toEqual([]);
    if (process.env["FUZZ_STATS"]) process.stderr.write(`fuzz: ${ops.length} operations, ${seenIds.length} ids seen; per operation ${JSON.stringify(Object.fromEntries([...reached].filter(([k]) => !k.includes("(other)"))))}\n`);
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

  it("[security] afterwards: every process alive, projector, audit and release events caught up with no error, the chain verifies, uploads are audited", async () => {
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
        expect((await api<{ error: string | null }>("/v1/release-events/status")).error).toBeNull();
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
