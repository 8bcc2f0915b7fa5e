import { Transform } from "node:stream";
import replyFrom from "@fastify/reply-from";
import type { FastifyReply, FastifyRequest } from "fastify";
import { createHttpApp, errorBody, HttpError, injectTrace, type Logger, type RateLimits, type TokenMap } from "@molt/runtime";
import { dashboardRoutes } from "./dashboard.js";
import { docsRoutes } from "./docs.js";
import { ownerOf, type Owner, type Upstreams } from "./routes.js";

const MiB = 1024 * 1024;

/** The largest body each owner takes: the gateway refuses more itself, before forwarding a byte. */
export interface BodyLimits {
  /** JSON commands (action) and anything else: the services' own body limit. */
  json: number;
  /** Package uploads (package-repo's MOLT_MAX_PACKAGE_BYTES). */
  packages: number;
}

export const DEFAULT_BODY_LIMITS: BodyLimits = { json: 1 * MiB, packages: 512 * MiB };

const limitFor = (owner: Owner, limits: BodyLimits) => (owner === "packageRepo" ? limits.packages : limits.json);

class BodyTooLargeError extends HttpError {
  constructor(limit: number) {
    super(413, "too_large", `the body is larger than the limit of ${limit} bytes for this route`);
  }
}

declare module "fastify" {
  interface FastifyRequest {
    /** Set when the streamed body went past the owner's limit. */
    tooLarge: BodyTooLargeError | null;
  }
}

/**
 * One URL for everything. The gateway streams requests to the owning service with the
 * Authorization header untouched; each service verifies the token itself with the shared
 * plugin, so nothing behind the gateway trusts an identity header it cannot check.
 *
 * Bodies over the owner's limit are refused here (by their Content-Length, or once a chunked
 * body passes it): relaying them would race the owner's 413 against the owner closing the
 * connection, which the client saw as a 502 "write EPIPE". `Expect: 100-continue` is answered
 * by this server and not forwarded (undici refuses to send it).
 */
export function buildApp(deps: { logger: Logger; tokens: TokenMap; upstreams: Upstreams; bodyLimits?: BodyLimits; rateLimits?: RateLimits | false; dashboardDir?: string }) {
  const limits = deps.bodyLimits ?? DEFAULT_BODY_LIMITS;
  const app = createHttpApp({ logger: deps.logger, tokens: deps.tokens, bodyLimit: Math.max(limits.json, limits.packages), ...(deps.rateLimits !== undefined ? { rateLimits: deps.rateLimits } : {}) });
  app.decorateRequest("tooLarge", null);
  const ownerOfRequest = (req: FastifyRequest) => ownerOf(req.method, req.url.split("?")[0] ?? req.url);

  // Bodies pass through as streams (package uploads are large), counted on the way.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("*", (req, payload, done) => {
    const owner = ownerOfRequest(req);
    const limit = owner ? limitFor(owner, limits) : limits.json;
    let seen = 0;
    const counted = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        seen += chunk.length;
        if (seen > limit) {
          req.tooLarge = new BodyTooLargeError(limit);
          // The rest is read and dropped, so the 413 reaches the client and the connection
          // stays usable (left unread, the next request on it would never be read).
          payload.unpipe(counted);
          payload.resume();
          return cb(req.tooLarge);
        }
        cb(null, chunk);
      },
    });
    payload.on("error", (err) => counted.destroy(err));
    done(null, payload.pipe(counted));
  });
  // Declared too large: refused before anything is read or forwarded.
  app.addHook("onRequest", (req, _reply, done) => {
    const owner = ownerOfRequest(req);
    const declared = Number(req.headers["content-length"] ?? 0);
    const limit = owner ? limitFor(owner, limits) : limits.json;
    done(declared > limit ? new BodyTooLargeError(limit) : undefined);
  });
  // Downloads are relayed as streams (never buffered): each host's download holds one upstream
  // connection for its whole body, so the pool is sized for a rollout's concurrent downloads
  // (bench/download: 200) rather than for short API calls; past it, requests queue.
  void app.register(replyFrom, { undici: { connections: 512, pipelining: 1 } });
  const forward = (req: FastifyRequest, reply: FastifyReply) => {
    const path = req.url.split("?")[0] ?? req.url;
    const owner = ownerOf(req.method, path);
    const upstream = owner && deps.upstreams[owner];
    if (!owner || !upstream) throw new HttpError(404, "not_found", `no service owns ${req.method} ${path.slice(0, 300)}`);
    return reply.from(`${upstream}${req.url}`, {
      rewriteRequestHeaders: (_req, headers) => {
        const { expect: _expect, ...rest } = headers;
        // The request's span (when tracing) goes on to the owner as `traceparent`.
        injectTrace((k, v) => (rest[k] = v));
        return rest;
      },
      onError: (rep, { error }) => {
        if (req.tooLarge) return void rep.code(413).send(errorBody(req.tooLarge.code, req.tooLarge.message));
        deps.logger.warn({ err: error, owner }, "upstream failed");
        void rep.code(502).send(errorBody("bad_gateway", `${owner} did not answer: ${error.message}`));
      },
    });
  };
  // Token checks happen in the owning service; downloads by hosts carry none.
  // Fastify logs every request twice at info: for the gateway that is every poll of every
  // dashboard and CLI (hundreds a minute). Its own refusals and upstream failures still log.
  app.all("/v1/*", { config: { auth: false }, logLevel: "warn" }, forward);
  // The release events' AsyncAPI document, where integrators look for it.
  app.get("/asyncapi.json", { config: { auth: false }, logLevel: "warn" }, forward);
  dashboardRoutes(app, { dir: deps.dashboardDir });
  docsRoutes(app, deps.upstreams);
  return app;
}
