import { existsSync } from "node:fs";
import fastifyStatic from "@fastify/static";
import type { Me } from "@molt/contracts";
import { HttpError, type App } from "@molt/runtime";

/**
 * The dashboard: static files (built by `pnpm build:dashboard`, no CDN) at `/`, and `GET /v1/me`
 * so the page knows whose token it holds and whether to show the write actions. The page reads
 * everything else through the same `/v1` routes as any client, with the same token.
 */
export function dashboardRoutes(app: App, deps: { dir: string | undefined }): void {
  app.get("/v1/me", (req): Me => {
    const p = req.principal;
    if (!p) throw new HttpError(401, "unauthorized", "missing bearer token (Authorization: Bearer <token>)");
    return { actor: p.actor, role: p.role };
  });
  const dir = deps.dir;
  if (dir && existsSync(`${dir}/index.html`)) {
    void app.register(async (files) => {
      // The files are public (the data behind them is not): the page asks for a token itself.
      files.addHook("onRoute", (route) => {
        route.config = { ...route.config, auth: false };
      });
      await files.register(fastifyStatic, { root: dir, prefix: "/", index: "index.html", wildcard: false });
    });
  } else {
    app.get("/", { config: { auth: false } }, (_req, reply) =>
      reply.code(503).type("text/plain").send("the dashboard is not built: run `pnpm build:dashboard` (scripts/bootstrap.sh does)\n"),
    );
  }
}
