/**
 * Test helper process: one contender in a lock race. It writes `<dir>/ready-<pid>`; then for
 * each round r it waits for `<dir>/go-r`, tries the component lock at `<dir>/lock` once, appends
 * `r held|busy <pid>` to `<dir>/results`, and a holder keeps the lock until `<dir>/end-r`
 * appears (by then every contender has tried).
 * Usage: node --import tsx lock-contender.ts <dir> <rounds>
 */
import { access, appendFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { acquireLock, LockBusyError } from "../client/lock.js";

const [dir, roundsText] = process.argv.slice(2);
if (!dir || !roundsText) throw new Error("usage: lock-contender.ts <dir> <rounds>");

async function until(file: string): Promise<void> {
  for (;;) {
    try {
      await access(join(dir!, file));
      return;
    } catch {
      await new Promise((res) => setTimeout(res, 1));
    }
  }
}

await writeFile(join(dir, `ready-${process.pid}`), "");
for (let r = 0; r < Number(roundsText); r++) {
  await until(`go-${r}`);
  try {
    const lock = await acquireLock(join(dir, "lock"), `t-${r}-${process.pid}`);
    await appendFile(join(dir, "results"), `${r} held ${process.pid}\n`);
    await until(`end-${r}`);
    await lock.release();
  } catch (err) {
    if (!(err instanceof LockBusyError)) throw err;
    await appendFile(join(dir, "results"), `${r} busy ${process.pid}\n`);
  }
}
