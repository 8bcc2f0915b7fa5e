import { createHash } from "node:crypto";
import { lstat, readdir, readFile, readlink, realpath } from "node:fs/promises";
import { join } from "node:path";

/**
 * A digest of a whole tree (following a top-level symlink such as `current`): every path with its
 * type, permission bits and content or link target, in sorted order. Two trees with the same
 * digest hold exactly the same files.
 */
export async function treeDigest(dir: string): Promise<string> {
  const root = await realpath(dir);
  const hash = createHash("sha256");
  const walk = async (rel: string): Promise<void> => {
    const names = (await readdir(join(root, rel))).sort();
    for (const name of names) {
      const path = join(rel, name);
      const st = await lstat(join(root, path));
      const mode = (st.mode & 0o7777).toString(8);
      if (st.isSymbolicLink()) hash.update(`L ${path} ${await readlink(join(root, path))}\n`);
      else if (st.isDirectory()) {
        hash.update(`D ${path} ${mode}\n`);
        await walk(path);
      } else hash.update(`F ${path} ${mode} ${createHash("sha256").update(await readFile(join(root, path))).digest("hex")}\n`);
    }
  };
  await walk("");
  return hash.digest("hex");
}
