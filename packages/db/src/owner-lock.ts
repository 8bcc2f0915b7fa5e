import { readFileSync, rmSync, writeFileSync } from "node:fs";

export class DataDirBusyError extends Error {
  readonly code = "data_dir_busy";
  constructor(
    readonly dataDir: string,
    readonly pid: number,
  ) {
    super(`${dataDir} is in use by process ${pid}: a PGlite directory has exactly one owner (set DATABASE_URL to share a database)`);
  }
}


function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Claims `dataDir` for this process with a pid file created exclusively beside it (PGlite owns
 * what is inside); returns the release.
 * A file left by a dead process (or by this pid, as after a container restart) is taken over.
 */
export function claimDataDir(dataDir: string): () => void {
  const file = `${dataDir.replace(/[/\\]+$/, "")}.owner.pid`;
  for (let attempt = 0; ; attempt++) {
    try {
      writeFileSync(file, String(process.pid), { flag: "wx" });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST" || attempt > 0) throw err;
      let pid = NaN;
      try {
        pid = Number(readFileSync(file, "utf8").trim());
      } catch {
        // Vanished between our create and read: try once more.
      }
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) throw new DataDirBusyError(dataDir, pid);
      rmSync(file, { force: true });
    }
  }
  let released = false;
  return () => {
    if (released) return;
    released = true;
    rmSync(file, { force: true });
  };
}
