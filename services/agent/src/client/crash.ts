/**
 * Crash points for the crash proofs: `MOLT_CRASH_AT=<point>[:<n>]` makes a client process kill
 * itself with SIGKILL the n-th time (default the first) it passes `<point>`, e.g.
 * `override:switched` (after the `current` switch, before it is journaled) or `extract:3` (after
 * the third file is written). Only client processes read it (main.ts); an in-process run never crashes.
 */
export type CrashPoint =
  | "download" // after a chunk of the package is written
  | "extract" // after a file is extracted into staging
  | "override:renamed" // the new version dir renamed into versions/, before the switch
  | "switch:linked" // the temp link made, before it is renamed over `current`
  | "override:switched" // `current` switched, before step-succeeded is journaled
  | "journal:written" // a journal line written, before its fsync
  | "stop:stopped" // the old process stopped, before START
  | "verify:passed"; // VERIFY passed, before it is journaled

export type Crash = (point: CrashPoint) => void;

export const noCrash: Crash = () => undefined;

export function crashFromSpec(spec: string | undefined): Crash {
  if (!spec) return noCrash;
  const m = /^([a-z-]+(?::[a-z-]+)?)(?::(\d+))?$/.exec(spec);
  if (!m) throw new Error(`MOLT_CRASH_AT must look like <point>[:<n>], not ${JSON.stringify(spec)}`);
  const want = m[1];
  let left = Number(m[2] ?? 1);
  return (point) => {
    if (point !== want) return;
    if (--left === 0) process.kill(process.pid, "SIGKILL");
  };
}
