import { mkdtemp, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { create } from "tar";

/** Builds a real tar.gz holding `files` (path → content), as a publisher would upload it. */
export async function buildPackage(files: Record<string, string>): Promise<Buffer> {
  const dir = await mkdtemp(join(tmpdir(), "molt-pkg-"));
  try {
    const src = join(dir, "src");
    for (const [path, content] of Object.entries(files)) {
      await mkdir(dirname(join(src, path)), { recursive: true });
      await writeFile(join(src, path), content, { mode: path.startsWith("bin/") ? 0o755 : 0o644 });
    }
    const out = join(dir, "pkg.tar.gz");
    await create({ gzip: true, file: out, cwd: src, portable: true }, Object.keys(files));
    return await readFile(out);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
