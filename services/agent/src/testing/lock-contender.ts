/**
 * Test helper process: one contender in a lock race. For each round r it waits for `<dir>/go-r`,
 * (once every contender has written `ready-<pid>`) tries the component lock at `<dir>/lock` once, appends `r held|busy <pid>` to `<dir>/results`,
 * and a holder keeps the lock for `holdMs` before releasing it.
 * Usage: node --import tsx lock-contender.ts <dir> <rounds> <holdMs>
 */
import { access, appendFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { acquireLock, LockBusyError } from "../client/lock.js";

const [dir, roundsText, holdText] = process.argv.slice(2);
if (!dir || !roundsText || !holdText) throw new Error("usage: lock-contender.ts <dir> <rounds> <holdMs>");
await writeFile(join(dir, `ready-${process.pid}`), "");
for (let r = 0; r < Number(roundsText); r++) {
  for (;;) {
    try {
      await access(join(dir, `go-${r}`));
      break;
    } catch {
      await new Promise((res) => setTimeout(res, 1));
    }
  }
  try {
    const lock = await acquireLock(join(dir, "lock"), `t-${r}-${process.pid}`);
    await appendFile(join(dir, "results"), `${r} held ${process.pid}\n`);
    await new Promise((res) => setTimeout(res, Number(holdText)));
    await lock.release();
  } catch (err) {
    if (!(err instanceof LockBusyError)) throw err;
    await appendFile(join(dir, "results"), `${r} busy ${process.pid}\n`);
  }
}
