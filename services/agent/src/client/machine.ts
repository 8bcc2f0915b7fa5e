import type { DesiredState, PackageManifest, Step, TaskKind, TrustedKeys } from "@molt/contracts";
import type { ComponentPaths } from "../host/layout.js";
import type { HttpGet } from "./download.js";
import type { ExtractLimits } from "./extract.js";
import type { Crash } from "./crash.js";
import type { ComponentLock } from "./lock.js";
import type { ComponentConfig } from "../agent/components.js";
import { backup } from "./steps/backup.js";
import { begin } from "./steps/begin.js";
import { download } from "./steps/download.js";
import { endAction } from "./steps/end-action.js";
import { postVerify, preStop } from "./steps/hooks.js";
import { override } from "./steps/override.js";
import { remove } from "./steps/remove.js";
import { rollback } from "./steps/rollback.js";
import { start } from "./steps/start.js";
import { stop } from "./steps/stop.js";
import { switchBack } from "./steps/switch-back.js";
import { verify } from "./steps/verify.js";

/** What a run is given and never changes: the task, where it lives, how to reach the network. */
export interface TaskInput {
  readonly root: string;
  readonly task: DesiredState;
  readonly paths: ComponentPaths;
  /** The download's transport: node:http(s), or a given fetch (the simulator). */
  readonly get: HttpGet;
  readonly limits: ExtractLimits;
  /** A mirror base URL this host downloads through instead of the package URL's origin. */
  readonly mirror: string | undefined;
  readonly now: () => Date;
  /** How this component is run (process, health, hooks); files only when not configured. */
  readonly component: ComponentConfig;
  /** Download tries and the first pause between them (doubled each time, up to 30 s). */
  readonly retry: { readonly attempts: number; readonly delayMs: number };
  /** Publisher keys this host trusts; null: none configured (unsigned packages are taken on their sha256). */
  readonly trust: TrustedKeys | null;
  /** Crash points (MOLT_CRASH_AT) for the crash proofs; a no-op outside them. */
  readonly crash: Crash;
}

/**
 * What earlier steps found out and later steps need. Steps never write it: each returns the facts
 * it established, and the machine folds them in, so what a step may rely on is visible in its result.
 */
export interface Facts {
  readonly lock: ComponentLock | null;
  /** The version `current` pointed at when the run began (null: not installed). */
  readonly previousVersion: string | null;
  /** `current` points at the task's version because of this run: from here on a failure means rollback. */
  readonly switched: boolean;
  /** This run stopped the old process (ROLLBACK restarts it). */
  readonly stopped: boolean;
  /** This run started the new version's process (ROLLBACK stops it); its pid when known. */
  readonly started: boolean;
  readonly startedPid: number | null;
  /** The publisher's manifest, verified by DOWNLOAD: OVERRIDE extracts within its limits. */
  readonly manifest: PackageManifest | null;
}

export const NO_FACTS: Facts = { lock: null, previousVersion: null, switched: false, stopped: false, started: false, startedPid: null, manifest: null };

export interface StepResult {
  /** One line for the journal's step-succeeded. */
  readonly detail?: string;
  readonly facts?: Partial<Facts>;
}

export interface StepContext {
  readonly input: TaskInput;
  readonly facts: Facts;
  /** Aborted when the step must stop (see StepSpec.stopsOn); a step passes it to its I/O. */
  readonly signal: AbortSignal;
  /** An earlier step failed: this step runs on the failure path. */
  readonly failing: boolean;
}

/**
 * What may interrupt a step: a cancel (the task withdrawn: SIGTERM / the abort signal) only
 * before anything is changed, the deadline also during extraction and up to the switch, nothing
 * once the host runs other files (then the run finishes, or rolls back, whatever happens).
 */
export type StopsOn = "cancel-or-deadline" | "deadline" | "never";

export interface StepSpec {
  /** The step's name in the journal (and so in slot events). */
  readonly step: Step;
  /** Does the work; resolves with a detail and new facts, throws to fail the step. */
  readonly run: (ctx: StepContext) => Promise<StepResult>;
  readonly onSuccess: Next;
  readonly onFailure: Next;
  readonly stopsOn: StopsOn;
}

export type StepId =
  | "BEGIN"
  | "BACKUP"
  | "DOWNLOAD"
  | "OVERRIDE"
  | "SWITCH_BACK"
  | "REMOVE"
  | "PRE_STOP"
  | "STOP"
  | "START"
  | "VERIFY"
  | "POST_VERIFY"
  | "ROLLBACK"
  | "END_ACTION";
export type Next = StepId | "END";

export interface StepMachine {
  readonly start: StepId;
  readonly steps: Readonly<Partial<Record<StepId, StepSpec>>>;
}

/** A failure that means "this task was not taken": the verdict is `rejected`, not `failed`. */
export class TaskRejectedError extends Error {
  readonly code = "task_rejected";
}

type Row = Omit<StepSpec, "onSuccess" | "onFailure"> & { readonly id: StepId; readonly onFailure?: Next };

/**
 * Chains rows: each row's success goes to the next row, the last one's to END_ACTION; a row's
 * failure goes where it says, else to `fail`. END_ACTION always ends; BEGIN fails to END
 * (no lock taken, nothing touched).
 */
function chain(rows: readonly Row[], fail: Next): StepMachine {
  const steps: Partial<Record<StepId, StepSpec>> = {};
  rows.forEach((row, i) => {
    const { id, onFailure, ...spec } = row;
    steps[id] = { ...spec, onSuccess: rows[i + 1]?.id ?? "END_ACTION", onFailure: onFailure ?? fail };
  });
  steps.ROLLBACK = { step: "rollback", run: rollback, onSuccess: "END_ACTION", onFailure: "END_ACTION", stopsOn: "never" };
  steps.END_ACTION = { step: "end-action", run: endAction, onSuccess: "END", onFailure: "END", stopsOn: "never" };
  return { start: rows[0]?.id ?? "END_ACTION", steps };
}

const BEGIN: Row = { id: "BEGIN", step: "begin", run: begin, onFailure: "END", stopsOn: "cancel-or-deadline" };
const BACKUP: Row = { id: "BACKUP", step: "backup", run: backup, onFailure: "END_ACTION", stopsOn: "cancel-or-deadline" };
const DOWNLOAD: Row = { id: "DOWNLOAD", step: "download", run: download, onFailure: "END_ACTION", stopsOn: "cancel-or-deadline" };

/**
 * The rows after the files are in place, from the component's config: the hook before STOP,
 * STOP and START when it has a process, VERIFY when it has a process or a health check, the hook
 * after VERIFY. Once the host runs other files nothing interrupts a step (the run finishes or
 * rolls back).
 */
function processRows(component: ComponentConfig): Row[] {
  const rows: Row[] = [];
  const hasProcess = component.start !== undefined;
  if (component.hooks?.beforeStop !== undefined) rows.push({ id: "PRE_STOP", step: "pre-stop", run: preStop, stopsOn: "never" });
  if (hasProcess) {
    rows.push({ id: "STOP", step: "stop", run: stop, stopsOn: "never" });
    rows.push({ id: "START", step: "start", run: start, stopsOn: "never" });
  }
  if (hasProcess || component.health !== undefined) rows.push({ id: "VERIFY", step: "verify", run: verify, stopsOn: "never" });
  if (component.hooks?.afterVerify !== undefined) rows.push({ id: "POST_VERIFY", step: "post-verify", run: postVerify, stopsOn: "never" });
  return rows;
}

/**
 * The step machine of a task, as data: each step names where to go on success and on failure,
 * and every path ends in END. Upgrade and install: BEGIN → BACKUP → DOWNLOAD → OVERRIDE →
 * [PRE_STOP] → [STOP → START] → [VERIFY] → [POST_VERIFY] → END_ACTION; any failure from OVERRIDE on
 * goes to ROLLBACK. A rollback task swaps DOWNLOAD + OVERRIDE for a switch back to the kept
 * version. Uninstall: BEGIN → BACKUP → [PRE_STOP] → [STOP] → OVERRIDE (remove) → END_ACTION.
 */
export function machineFor(kind: TaskKind, component: ComponentConfig): StepMachine {
  switch (kind) {
    case "upgrade":
    case "install":
      return chain(
        [BEGIN, BACKUP, DOWNLOAD, { id: "OVERRIDE", step: "override", run: override, stopsOn: "deadline" }, ...processRows(component)],
        "ROLLBACK",
      );
    case "rollback":
      return chain([BEGIN, BACKUP, { id: "SWITCH_BACK", step: "override", run: switchBack, stopsOn: "deadline" }, ...processRows(component)], "ROLLBACK");
    case "uninstall": {
      const rows: Row[] = [BEGIN, BACKUP];
      if (component.hooks?.beforeStop !== undefined) rows.push({ id: "PRE_STOP", step: "pre-stop", run: preStop, stopsOn: "never" });
      if (component.start !== undefined) rows.push({ id: "STOP", step: "stop", run: stop, stopsOn: "never" });
      rows.push({ id: "REMOVE", step: "override", run: remove, stopsOn: "never" });
      return chain(rows, "END_ACTION");
    }
    default: {
      const never: never = kind;
      throw new Error(`unknown task kind ${String(never)}`);
    }
  }
}
