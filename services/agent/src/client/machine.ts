import type { DesiredState, Step, TaskKind } from "@molt/contracts";
import type { ComponentPaths } from "../host/layout.js";
import type { Fetch } from "./download.js";
import type { ExtractLimits } from "./extract.js";
import type { Crash } from "./crash.js";
import type { ComponentLock } from "./lock.js";
import { backup } from "./steps/backup.js";
import { begin } from "./steps/begin.js";
import { download } from "./steps/download.js";
import { endAction } from "./steps/end-action.js";
import { override } from "./steps/override.js";
import { switchBack } from "./steps/switch-back.js";

/** What a run is given and never changes: the task, where it lives, how to reach the network. */
export interface TaskInput {
  readonly root: string;
  readonly task: DesiredState;
  readonly paths: ComponentPaths;
  readonly fetch: Fetch;
  readonly limits: ExtractLimits;
  /** A mirror base URL this host downloads through instead of the package URL's origin. */
  readonly mirror: string | undefined;
  readonly now: () => Date;
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
}

export const NO_FACTS: Facts = { lock: null, previousVersion: null, switched: false };

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

export type StepId = "BEGIN" | "BACKUP" | "DOWNLOAD" | "OVERRIDE" | "SWITCH_BACK" | "END_ACTION";
export type Next = StepId | "END";

export interface StepMachine {
  readonly start: StepId;
  readonly steps: Readonly<Partial<Record<StepId, StepSpec>>>;
}

/** A failure that means "this task was not taken": the verdict is `rejected`, not `failed`. */
export class TaskRejectedError extends Error {
  readonly code = "task_rejected";
}

const BEGIN: StepSpec = { step: "begin", run: begin, onSuccess: "BACKUP", onFailure: "END", stopsOn: "cancel-or-deadline" };
const END_ACTION: StepSpec = { step: "end-action", run: endAction, onSuccess: "END", onFailure: "END", stopsOn: "never" };

/**
 * The upgrade as data: each step names where to go on success and on failure, and every path
 * ends in END. Only BEGIN may go straight to END (no lock taken, nothing touched); every other
 * failure still passes END_ACTION, which releases the lock and cleans up.
 */
export const UPGRADE_MACHINE: StepMachine = {
  start: "BEGIN",
  steps: {
    BEGIN,
    BACKUP: { step: "backup", run: backup, onSuccess: "DOWNLOAD", onFailure: "END_ACTION", stopsOn: "cancel-or-deadline" },
    DOWNLOAD: { step: "download", run: download, onSuccess: "OVERRIDE", onFailure: "END_ACTION", stopsOn: "cancel-or-deadline" },
    OVERRIDE: { step: "override", run: override, onSuccess: "END_ACTION", onFailure: "END_ACTION", stopsOn: "deadline" },
    END_ACTION,
  },
};

/**
 * A rollback task (the operator's rollback deployment): back to the host's own previous version
 * from the copy kept in versions/, with no download; journaled like any task.
 */
export const ROLLBACK_TASK_MACHINE: StepMachine = {
  start: "BEGIN",
  steps: {
    BEGIN,
    BACKUP: { step: "backup", run: backup, onSuccess: "SWITCH_BACK", onFailure: "END_ACTION", stopsOn: "cancel-or-deadline" },
    SWITCH_BACK: { step: "override", run: switchBack, onSuccess: "END_ACTION", onFailure: "END_ACTION", stopsOn: "deadline" },
    END_ACTION,
  },
};

export function machineFor(kind: TaskKind): StepMachine {
  switch (kind) {
    case "upgrade":
    case "install":
      return UPGRADE_MACHINE;
    case "rollback":
      return ROLLBACK_TASK_MACHINE;
    case "uninstall":
      throw new TaskRejectedError("uninstall tasks are not supported by this agent yet");
    default: {
      const never: never = kind;
      throw new Error(`unknown task kind ${String(never)}`);
    }
  }
}
