import { randomBytes, randomUUID } from "node:crypto";
import { CreateWebhook, STREAM_RELEASE } from "@molt/contracts";
import { HttpError, type App } from "@molt/runtime";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { z } from "zod";
import type { Delivery } from "./deliver.js";
import type { AddressGuard } from "./ssrf.js";
import { publicView, type WebhookStore } from "./store.js";

const Params = z.object({ id: z.string().regex(/^wh_[a-z0-9]{32}$/, "not a webhook id") }).strict();
const notFound = (id: string) => new HttpError(404, "not_found", `no webhook ${id}`);

/**
 * The cursor (the last sequence the subscription is done with) a new subscription starts from:
 * `now`, what is published from now on; `beginning`, all the stream holds; a date-time, what was
 * published at or after it (none yet: from now on).
 */
async function startCursor(jsm: JetStreamManager, stream: string, startAt: CreateWebhook["startAt"]): Promise<number> {
  if (startAt === "beginning") return 0;
  if (startAt !== "now") {
    const first = await jsm.direct.getMessage(stream, { start_time: new Date(startAt) });
    if (first) return first.seq - 1;
  }
  return (await jsm.streams.info(stream)).state.last_seq;
}

/**
 * The subscriptions' admin API (admin role): create (the secret is in this answer only), list,
 * pause, resume, delete, and each one's delivery attempts.
 */
export function webhookRoutes(app: App, deps: { nc: NatsConnection; store: WebhookStore; delivery: Delivery; guard: AddressGuard; stream?: string }) {
  const { store, delivery, guard } = deps;
  const admin = { role: "admin" as const };

  app.post("/v1/webhooks", { config: { ...admin, auditKind: "create-webhook" }, schema: { body: CreateWebhook } }, async (req, reply) => {
    const body = req.body;
    const url = new URL(body.url);
    if (url.username || url.password) throw new HttpError(400, "invalid", "a webhook url may not carry credentials");
    try {
      await guard.checkHost(url.hostname);
    } catch (err) {
      const e = err as Error;
      throw new HttpError(400, "invalid", e.name === "SsrfError" ? e.message : `${url.hostname} does not resolve: ${e.message}`);
    }
    const cursor = await startCursor(await jetstreamManager(deps.nc), deps.stream ?? STREAM_RELEASE, body.startAt);
    const secret = `whsec_${randomBytes(32).toString("base64")}`;
    const w = await store.create({ id: `wh_${randomUUID().replaceAll("-", "")}`, url: url.toString(), description: body.description ?? null, secret, filters: body.filters, cursor });
    delivery.start(w.id);
    return reply.code(201).send({ ...publicView(w), secret });
  });

  app.get("/v1/webhooks", { config: admin }, async () => ({ webhooks: (await store.list()).map(publicView) }));

  app.get("/v1/webhooks/:id", { config: admin, schema: { params: Params } }, async (req) => {
    const { id } = req.params;
    const w = await store.get(id);
    if (!w) throw notFound(id);
    return publicView(w);
  });

  app.post("/v1/webhooks/:id/pause", { config: { ...admin, auditKind: "pause-webhook" }, schema: { params: Params } }, async (req) => {
    const { id } = req.params;
    await delivery.stop(id);
    const w = await store.setState(id, "paused");
    if (!w) throw notFound(id);
    return publicView(w);
  });

  app.post("/v1/webhooks/:id/resume", { config: { ...admin, auditKind: "resume-webhook" }, schema: { params: Params } }, async (req) => {
    const { id } = req.params;
    const w = await store.setState(id, "active");
    if (!w) throw notFound(id);
    delivery.start(id);
    return publicView(w);
  });

  app.delete("/v1/webhooks/:id", { config: { ...admin, auditKind: "delete-webhook" }, schema: { params: Params } }, async (req, reply) => {
    const { id } = req.params;
    await delivery.stop(id);
    if (!(await store.remove(id))) throw notFound(id);
    return reply.code(204).send();
  });

  const AttemptsQuery = z.object({ after: z.coerce.number().int().nonnegative().default(0), limit: z.coerce.number().int().min(1).max(1000).default(100) }).strict();
  app.get("/v1/webhooks/:id/attempts", { config: admin, schema: { params: Params, querystring: AttemptsQuery } }, async (req) => {
    const { id } = req.params;
    if (!(await store.get(id))) throw notFound(id);
    const q = req.query;
    return { attempts: await store.attempts(id, q) };
  });
}
