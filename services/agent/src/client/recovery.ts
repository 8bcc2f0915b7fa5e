import { readFile, rm, unlink } from "node:fs/promises";
import { join } from "node:path";
import { Version } from "@molt/contracts";
import { z } from "zod";
import { fsyncDir, isErrno, writeFileDurable } from "../host/durable.js";
import { type ComponentPaths, installedVersion, switchCurrent } from "../host/layout.js";

/**
 * The switch record, `components/<c>/switch.json`: written durably before `current` is switched
 * and cleared once the new version is confirmed (the run's success path). While it exists the
 * switch is not confirmed, so after a crash the rule of DESIGN applies: roll back to `from`.
 */
export const SwitchRecord = z.object({ taskId: z.string(), from: Version.nullable(), to: Version });
export type SwitchRecord = z.infer<typeof SwitchRecord>;

const recordPath = (paths: ComponentPaths) => join(paths.dir, "switch.json");

export async function writeSwitchRecord(paths: ComponentPaths, record: SwitchRecord): Promise<void> {
  await writeFileDurable(recordPath(paths), `${JSON.stringify(record)}\n`);
}

export async function readSwitchRecord(paths: ComponentPaths): Promise<SwitchRecord | null> {
  let text: string;
  try {
    text = await readFile(recordPath(paths), "utf8");
  } catch (err) {
    if (isErrno(err, "ENOENT")) return null;
    throw err;
  }
  // Written whole (temp + rename), so a record that does not parse was not written by a client.
  return SwitchRecord.parse(JSON.parse(text));
}

export async function clearSwitchRecord(paths: ComponentPaths): Promise<void> {
  try {
    await unlink(recordPath(paths));
  } catch (err) {
    if (isErrno(err, "ENOENT")) return;
    throw err;
  }
  await fsyncDir(paths.dir);
}

/** What undoing an unconfirmed switch did. */
export interface Undone {
  readonly record: SwitchRecord;
  /** The version `current` pointed at before the undo (null: none). */
  readonly found: string | null;
}

/**
 * Undoes an unconfirmed switch (caller holds the component lock): `current` back to `from` (or
 * removed, for an install), then the record is cleared. Idempotent: a crash in here is undone
 * again by the next recovery. Null when there is nothing to undo.
 */
export async function undoSwitch(root: string, component: string, paths: ComponentPaths): Promise<Undone | null> {
  const record = await readSwitchRecord(paths);
  if (record === null) return null;
  const found = await installedVersion(root, component);
  if (record.from === null) {
    await rm(paths.current, { force: true });
    await fsyncDir(paths.dir);
  } else if (found !== record.from) {
    await switchCurrent(paths, record.from, `undo-${record.taskId}`);
  }
  await clearSwitchRecord(paths);
  return { record, found };
}
