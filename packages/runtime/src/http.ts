import { createHash, randomUUID } from "node:crypto";
import rateLimit from "@fastify/rate-limit";
import { fastifySwagger } from "@fastify/swagger";
import fp from "fastify-plugin";
import Fastify, { type FastifyInstance, type FastifyError, type FastifyReply, type FastifyRequest } from "fastify";
import {
  hasZodFastifySchemaValidationErrors,
  jsonSchemaTransform,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from "fastify-type-provider-zod";
import type { Logger } from "pino";
import { ZodError } from "zod";
import { bearerAuth, WRITE_METHODS, type TokenMap } from "./auth.js";
import { commandAudit, type AuditNote, type CommandLog } from "./commands.js";
import { checkQueryString, parseJsonBody, UnsafeBodyError } from "./edge.js";
import { codeForFastifyCode, errorBody, HttpError, statusForCode } from "./errors.js";
import { describeIssues } from "@molt/contracts";
import type { Registry } from "prom-client";
import { createMetrics, metricsRoutes } from "./metrics.js";
import { requestTracing, tracingEnabled } from "./tracing.js";

export type App = ReturnType<typeof createHttpApp>;

/** Requests per token per window; writes and expensive reads (routes with `config.expensive`) count separately. */
export interface RateLimits {
  writes: number;
  expensiveReads: number;
  windowMs: number;
}

declare module "fastify" {
  interface FastifyContextConfig {
    /** A read that costs much (a whole-table scan, a chain verification): rate-limited per token. */
    expensive?: boolean;
  }
}

/** Defaults, overridable by env for every service at once: MOLT_RATE_WRITES, MOLT_RATE_EXPENSIVE, MOLT_RATE_WINDOW_MS. */
export function rateLimitsFromEnv(env: NodeJS.ProcessEnv = process.env): RateLimits {
  const num = (name: string, fallback: number) => {
    const v = env[name];
    const n = v === undefined ? fallback : Number(v);
    if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer (got ${JSON.stringify(v)})`);
    return n;
  };
  return { writes: num("MOLT_RATE_WRITES", 600), expensiveReads: num("MOLT_RATE_EXPENSIVE", 60), windowMs: num("MOLT_RATE_WINDOW_MS", 60_000) };
}

const rateClass = (req: FastifyRequest) => (req.routeOptions.config?.expensive ? "expensive" : WRITE_METHODS.has(req.method) ? "write" : null);

/**
 * The fastify app every service starts from: input checks at the edge (query encoding, JSON
 * depth and storable text), zod, bearer auth, per-token rate limits, the command audit (when a
 * command log is given) and one error handler that maps error codes to statuses with the one
 * error body `{ error: { code, message } }`.
 */
export function createHttpApp(opts: {
  logger: Logger;
  tokens: TokenMap;
  bodyLimit?: number;
  metrics?: Registry;
  commands?: CommandLog;
  rateLimits?: RateLimits | false;
}) {
  const app = Fastify({
    loggerInstance: opts.logger,
    // Correlation ids must be unique across replicas; a caller's (or the gateway's) id is kept.
    genReqId: () => randomUUID(),
    requestIdHeader: "x-request-id",
    bodyLimit: opts.bodyLimit ?? 1024 * 1024,
    // The router's own refusals (a path that is not valid %-encoded UTF-8) in the one error shape.
    frameworkErrors: (err, _req, reply) => {
      void (reply as FastifyReply).code(400).send(errorBody(codeForFastifyCode(err.code), err.message));
    },
  }).withTypeProvider<ZodTypeProvider>();
  // The service's OpenAPI document, generated from its routes' zod schemas; the gateway merges
  // every service's into the one served at /docs. Set up now, not registered (registering loads it
  // only once the app is ready, after the services have declared their routes), so its route
  // hook sees every route.
  fastifySwagger(
    app as unknown as FastifyInstance,
    {
      openapi: { info: { title: `Molt ${String(opts.logger.bindings().service ?? "service")}`, version: "1" }, components: { securitySchemes: { bearer: { type: "http", scheme: "bearer" } } } },
      transform: jsonSchemaTransform,
    },
    (err) => {
      if (err) throw err;
    },
  );
  // Under its name too, for plugins that depend on it (the gateway's Swagger UI).
  void app.register(fp((_app, _opts, done) => done(), { name: "@fastify/swagger" }));
  // A server span per request, the caller's trace continued: only when tracing is configured.
  if (tracingEnabled) void app.register(requestTracing);
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.setErrorHandler((err: FastifyError | Error, req, reply) => {
    if (hasZodFastifySchemaValidationErrors(err)) {
      const issues = err.validation as ReadonlyArray<{ instancePath?: string; message?: string }>;
      const message = issues.map((v) => `${v.instancePath || "(body)"}: ${v.message ?? "invalid"}`).join("; ");
      return reply.code(400).send(errorBody("validation", `${err.validationContext ?? "request"} ${message}`));
    }
    if (err instanceof ZodError) return reply.code(400).send(errorBody("validation", describeIssues(err)));
    if (err instanceof HttpError) return reply.code(err.statusCode).send(errorBody(err.code, err.message));
    const code = (err as { code?: unknown }).code;
    // The client went away before its request was read (an upload cut off, a proxy giving up):
    // its doing, not this server's fault, and nobody is left to read an answer.
    if (code === "ECONNRESET" && (req.raw.destroyed || req.raw.socket.destroyed)) {
      req.log.info({ err: err.message }, "the client went away before its request was read");
      return reply.code(400).send(errorBody("aborted", "the request was cut off"));
    }
    const mapped = typeof code === "string" ? statusForCode(code) : undefined;
    if (mapped !== undefined) return reply.code(mapped).send(errorBody(code as string, err.message));
    const status = (err as FastifyError).statusCode;
    if (status !== undefined && status >= 400 && status < 500)
      return reply.code(status).send(errorBody(codeForFastifyCode((err as FastifyError).code), err.message));
    req.log.error({ err }, "request failed");
    return reply.code(500).send(errorBody("internal", "internal error"));
  });
  app.setNotFoundHandler((req, reply) => reply.code(404).send(errorBody("not_found", `no route ${req.method} ${req.url.slice(0, 300)}`)));
  // What a route tells the command audit (kind, target, replayed); present on every request.
  app.decorateRequest("audit", null as unknown as AuditNote);
  // Before auth: a query that does not decode is refused whoever sends it.
  app.addHook("onRequest", (req, _reply, done) => {
    req.audit = {};
    try {
      checkQueryString(req.url);
      done();
    } catch (err) {
      done(err as Error);
    }
  });
  app.addContentTypeParser("application/json", { parseAs: "string" }, (req, body, done) => {
    try {
      done(null, parseJsonBody(body as string));
    } catch (err) {
      if (err instanceof UnsafeBodyError) req.audit.skip = true;
      done(err as Error, undefined);
    }
  });
  const limits = opts.rateLimits === undefined ? rateLimitsFromEnv() : opts.rateLimits;
  if (limits) {
    // Not `global`: the plugin attaches itself to routes as they are declared, and services
    // declare theirs before it has loaded. One hook on every request asks it instead.
    void app.register(rateLimit, {
      global: false,
      timeWindow: limits.windowMs,
      max: (req) => (rateClass(req) === "expensive" ? limits.expensiveReads : limits.writes),
      // Per token (its hash, never the token), per class; no token: per address.
      keyGenerator: (req) => {
        const auth = req.headers.authorization ?? "";
        const who = auth ? createHash("sha256").update(auth).digest("hex").slice(0, 32) : `ip:${req.ip}`;
        return `${rateClass(req)}:${who}`;
      },
      errorResponseBuilder: (_req, ctx) => new HttpError(429, "rate_limited", `too many requests for this token: at most ${ctx.max} per window; retry in ${ctx.after}`),
    });
    let limiter: ((req: FastifyRequest, reply: FastifyReply) => Promise<void>) | undefined;
    app.addHook("onRequest", async (req, reply) => {
      if (rateClass(req) === null) return;
      limiter ??= app.rateLimit() as unknown as (req: FastifyRequest, reply: FastifyReply) => Promise<void>;
      await limiter(req, reply);
    });
  }
  void app.register(bearerAuth, { tokens: opts.tokens });
  if (opts.commands) void app.register(commandAudit, { commands: opts.commands });
  app.get("/healthz", { config: { auth: false }, schema: { hide: true } }, () => ({ ok: true }));
  app.get("/openapi.json", { config: { auth: false }, schema: { hide: true } }, () => app.swagger());
  // Every service answers /metrics; one that has its own metrics passes its registry.
  void app.register(metricsRoutes, { registry: opts.metrics ?? createMetrics(String(opts.logger.bindings().service ?? "molt")) });
  return app;
}

export type HttpApp = FastifyInstance;
