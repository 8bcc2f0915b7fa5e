import replyFrom from "@fastify/reply-from";
import type { FastifyReply, FastifyRequest } from "fastify";
import { createHttpApp, HttpError, type Logger, type TokenMap } from "@molt/runtime";
import { dashboardRoutes } from "./dashboard.js";
import { ownerOf, type Upstreams } from "./routes.js";

/**
 * One URL for everything. The gateway streams requests to the owning service with the
 * Authorization header untouched; each service verifies the token itself with the shared
 * plugin, so nothing behind the gateway trusts an identity header it cannot check.
 */
export function buildApp(deps: { logger: Logger; tokens: TokenMap; upstreams: Upstreams; dashboardDir?: string }) {
  const app = createHttpApp({ logger: deps.logger, tokens: deps.tokens });
  // Bodies pass through as streams (package uploads are large); the owner parses them.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("*", (_req, payload, done) => done(null, payload));
  void app.register(replyFrom, { undici: { connections: 128, pipelining: 1 } });
  const forward = (req: FastifyRequest, reply: FastifyReply) => {
    const path = req.url.split("?")[0] ?? req.url;
    const owner = ownerOf(req.method, path);
    if (!owner) throw new HttpError(404, "not_found", `no service owns ${req.method} ${path}`);
    return reply.from(`${deps.upstreams[owner]}${req.url}`, {
      onError: (rep, { error }) => {
        deps.logger.warn({ err: error, owner }, "upstream failed");
        void rep.code(502).send({ error: { code: "bad_gateway", message: `${owner} did not answer: ${error.message}` } });
      },
    });
  };
  // Token checks happen in the owning service; downloads by hosts carry none.
  app.all("/v1/*", { config: { auth: false } }, forward);
  dashboardRoutes(app, { dir: deps.dashboardDir });
  return app;
}
