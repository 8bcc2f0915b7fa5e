import { randomUUID } from "node:crypto";
import Fastify, { type FastifyInstance, type FastifyError } from "fastify";
import {
  hasZodFastifySchemaValidationErrors,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from "fastify-type-provider-zod";
import type { Logger } from "pino";
import { ZodError } from "zod";
import { bearerAuth, type TokenMap } from "./auth.js";
import { HttpError, statusForCode } from "./errors.js";
import { describeIssues } from "@molt/contracts";
import type { Registry } from "prom-client";
import { createMetrics, metricsRoutes } from "./metrics.js";

export type App = ReturnType<typeof createHttpApp>;

/**
 * The fastify app every service starts from: zod at the edge, bearer auth, and one error
 * handler that maps error codes to statuses with the body `{ error: { code, message } }`.
 */
export function createHttpApp(opts: { logger: Logger; tokens: TokenMap; bodyLimit?: number; metrics?: Registry }) {
  const app = Fastify({
    loggerInstance: opts.logger,
    // Correlation ids must be unique across replicas; a caller's (or the gateway's) id is kept.
    genReqId: () => randomUUID(),
    requestIdHeader: "x-request-id",
    bodyLimit: opts.bodyLimit ?? 1024 * 1024,
  }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.setErrorHandler((err: FastifyError | Error, req, reply) => {
    if (hasZodFastifySchemaValidationErrors(err)) {
      const issues = err.validation as ReadonlyArray<{ instancePath?: string; message?: string }>;
      const message = issues.map((v) => `${v.instancePath || "(body)"}: ${v.message ?? "invalid"}`).join("; ");
      return reply.code(400).send({ error: { code: "validation", message: `${err.validationContext ?? "request"} ${message}` } });
    }
    if (err instanceof ZodError) {
      return reply.code(400).send({ error: { code: "validation", message: describeIssues(err) } });
    }
    if (err instanceof HttpError) return reply.code(err.statusCode).send({ error: { code: err.code, message: err.message } });
    const code = (err as { code?: unknown }).code;
    const mapped = typeof code === "string" ? statusForCode(code) : undefined;
    if (mapped !== undefined) return reply.code(mapped).send({ error: { code, message: err.message } });
    const status = (err as FastifyError).statusCode;
    if (status !== undefined && status >= 400 && status < 500)
      return reply.code(status).send({ error: { code: (err as FastifyError).code ?? "bad_request", message: err.message } });
    req.log.error({ err }, "request failed");
    return reply.code(500).send({ error: { code: "internal", message: "internal error" } });
  });
  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send({ error: { code: "not_found", message: `no route ${req.method} ${req.url}` } }),
  );
  void app.register(bearerAuth, { tokens: opts.tokens });
  app.get("/healthz", { config: { auth: false } }, () => ({ ok: true }));
  // Every service answers /metrics; one that has its own metrics passes its registry.
  void app.register(metricsRoutes, { registry: opts.metrics ?? createMetrics(String(opts.logger.bindings().service ?? "molt")) });
  return app;
}

export type HttpApp = FastifyInstance;
