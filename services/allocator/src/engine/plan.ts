import { createHash } from "node:crypto";
import type { EventOf, PlannedHost, Selector, SkippedHost, Strategy } from "@molt/contracts";
import { DEFAULT_STRATEGY, type RecordPlanPart } from "@molt/domain";
import { CommitTooLargeError, type StoredCommit } from "@molt/event-store";
import { planDeployment, type Candidate, type Plan } from "../planning/plan.js";
import { loadCandidates, loadPackages } from "../planning/resolve.js";
import { fresh, metaOf, type EngineDeps } from "./deps.js";

/** Bytes of hosts per plan part: a quarter of the 1 MiB message limit, whatever the ids. */
const PART_BYTES = 256 * 1024;

export interface PlanRequest {
  component: string;
  version: string;
  hosts: readonly string[];
  selector: Selector | null;
  kind: "upgrade" | "rollback";
  origin: string | null;
  strategy: Strategy;
}

/** Splits a plan into parts under PART_BYTES each; the seal names how many. */
export function splitPlan(plan: Plan): Array<Omit<RecordPlanPart["data"], "planId">> {
  const parts: Array<Omit<RecordPlanPart["data"], "planId">> = [];
  let batches = new Map<number, PlannedHost[]>();
  let skipped: SkippedHost[] = [];
  let bytes = 0;
  const flush = () => {
    if (batches.size === 0 && skipped.length === 0) return;
    parts.push({ part: parts.length, batches: [...batches].map(([index, hosts]) => ({ index, hosts })), skipped });
    batches = new Map();
    skipped = [];
    bytes = 0;
  };
  const add = (size: number) => {
    if (bytes + size > PART_BYTES) flush();
    bytes += size;
  };
  for (const b of plan.batches)
    for (const h of b.hosts) {
      add(JSON.stringify(h).length + 1);
      const list = batches.get(b.index);
      if (list) list.push(h);
      else batches.set(b.index, [h]);
    }
  for (const s of plan.skipped) {
    add(JSON.stringify(s).length + 1);
    skipped.push(s);
  }
  flush();
  return parts;
}

/** Without a fleet reader every named host counts as online and there is no selector index. */
const NO_FLEET: NonNullable<EngineDeps["fleet"]> = { online: () => Promise.resolve(null), index: null };

export function planner(deps: EngineDeps) {
  const downloadUrl = (component: string, version: string) => (p: string) => deps.downloadUrl(component, version, p);

  /** The plan for a request, by the same pure planner whether it is recorded or only previewed. */
  async function compute(req: PlanRequest): Promise<Plan> {
    const fleet = deps.fleet ?? NO_FLEET;
    if (req.kind === "rollback") return computeRollback(req, fleet);
    const [candidates, { packages, yanked }] = await Promise.all([
      loadCandidates({ store: deps.store, fleet }, req),
      loadPackages(deps.store, req.component, req.version, downloadUrl(req.component, req.version)),
    ]);
    return planDeployment({ component: req.component, version: req.version, kind: "upgrade", candidates, packages, yanked, strategy: req.strategy });
  }

  /** Each host the origin changed goes back to its own from-version; the others are skipped with why. */
  async function computeRollback(req: PlanRequest, fleet: NonNullable<EngineDeps["fleet"]>): Promise<Plan> {
    const origin = req.origin === null ? null : (await deps.deployments.load(req.origin)).state;
    if (origin === null || origin.status === "none") return { packages: {}, batches: [], skipped: [] };
    const changed: string[] = [];
    const skipped: Candidate[] = [];
    for (const [hostId, e] of origin.hostIndex) {
      if (e.outcome !== "succeeded") skipped.push({ hostId, skip: `not changed by ${req.origin}` });
      else if (e.fromVersion === null) skipped.push({ hostId, skip: `had no version before ${req.origin}: nothing to return to` });
      else changed.push(hostId);
    }
    const found = await loadCandidates({ store: deps.store, fleet }, { component: req.component, hosts: changed, selector: null });
    const candidates = found.map((c): Candidate => {
      if ("skip" in c) return c;
      const entry = origin.hostIndex.get(c.hostId)!;
      // The origin changed it to its version; the fleet's view (heartbeats) may not show that yet.
      return { ...c, target: entry.fromVersion!, fromVersion: origin.version };
    });
    return planDeployment({
      component: req.component,
      version: req.version,
      kind: "rollback",
      candidates: [...candidates, ...skipped],
      packages: new Map(),
      strategy: req.strategy,
    });
  }

  /** DeploymentRequested → the plan in parts, then the seal. Parts of a plan id are idempotent. */
  async function plan(e: EventOf<"DeploymentRequested">, c: StoredCommit): Promise<void> {
    const d = e.data;
    const { state } = fresh(await deps.deployments.load(d.deploymentId), c.seq, d.deploymentId);
    if (state.planned || state.status === "cancelled" || state.status === "failed") return;
    const computed = await compute({
      component: d.component,
      version: d.version,
      hosts: d.hosts,
      selector: d.selector ?? null,
      kind: d.kind ?? "upgrade",
      origin: d.origin ?? null,
      strategy: d.strategy ?? DEFAULT_STRATEGY,
    });
    const planId = createHash("sha256").update(JSON.stringify(computed)).digest("hex").slice(0, 16);
    const parts = splitPlan(computed);
    const meta = metaOf(e);
    try {
      for (const part of parts)
        await deps.deployments.handle(d.deploymentId, { type: "RecordPlanPart", data: { planId, ...part } }, meta, `${d.deploymentId}:plan:${planId}:${part.part}`);
      const sizes = computed.batches.map((b) => ({ index: b.index, kind: b.kind, size: b.hosts.length }));
      await deps.deployments.handle(
        d.deploymentId,
        { type: "SealPlan", data: { planId, parts: parts.length, packages: computed.packages, batches: sizes, skipped: computed.skipped.length } },
        meta,
        `${d.deploymentId}:planned`,
      );
    } catch (err) {
      if (!(err instanceof CommitTooLargeError)) throw err;
      // Retrying would fail the same way forever: end the deployment with a reason an operator can act on.
      await deps.deployments.handle(
        d.deploymentId,
        { type: "FailDeployment", data: { reason: `a part of the plan does not fit in one commit (${err.bytes} bytes, limit ${err.limit})` } },
        meta,
        `${d.deploymentId}:failed`,
      );
    }
  }

  return { compute, plan };
}
