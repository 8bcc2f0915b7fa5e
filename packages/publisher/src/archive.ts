import { createReadStream } from "node:fs";
import { open } from "node:fs/promises";
import { Parser, type ReadEntry } from "tar";

/** What the manifest records about an archive; hosts refuse to extract more than this. */
export interface ArchiveSummary {
  /** Regular files. */
  files: number;
  /** Every file-system entry (files, directories, links). */
  entries: number;
  /** Total bytes of the regular files once extracted. */
  unpackedSize: number;
}

export interface ArchiveLimits {
  maxEntries: number;
  maxUnpackedBytes: number;
}

/** The archive is not something every host would extract: answered 400, nothing stored. */
export class ArchiveRefusedError extends Error {
  readonly code = "validation";
}

const REGULAR = new Set(["File", "OldFile", "ContiguousFile"]);
const ALLOWED = new Set([...REGULAR, "Directory", "SymbolicLink", "Link"]);

/**
 * Lists a gzip'd tar without extracting it and refuses what the host's bounded, sanitised
 * extraction would refuse anyway (paths leaving the root, links pointing out, devices, fifos,
 * a path through a symlink), so a bad package fails at upload time and not on every host.
 */
export async function inspectArchive(path: string, limits: ArchiveLimits): Promise<ArchiveSummary> {
  // tar would also take plain, zstd or brotli archives; hosts are promised gzip only.
  if (!(await hasGzipMagic(path))) throw new ArchiveRefusedError("the body is not gzip data (expected a .tar.gz)");
  const summary: ArchiveSummary = { files: 0, entries: 0, unpackedSize: 0 };
  const tree = new TreeCheck();
  return new Promise<ArchiveSummary>((resolve, reject) => {
    const input = createReadStream(path);
    const parser = new Parser({
      // Warnings (bad checksum, truncated input, not a tar at all) become errors.
      strict: true,
      onReadEntry: (entry: ReadEntry) => {
        entry.resume();
        try {
          summary.entries++;
          if (summary.entries > limits.maxEntries)
            throw new ArchiveRefusedError(`the archive has more than ${limits.maxEntries} entries`);
          tree.check(entry);
          if (REGULAR.has(entry.type)) {
            summary.files++;
            summary.unpackedSize += entry.size;
            // Checked on the header, before the body is inflated: a bomb stops here.
            if (summary.unpackedSize > limits.maxUnpackedBytes)
              throw new ArchiveRefusedError(`the archive unpacks to more than ${limits.maxUnpackedBytes} bytes`);
          }
        } catch (err) {
          parser.abort(err as Error);
        }
      },
    });
    // Entry types tar does not know are skipped silently by the parser; a host cannot extract them.
    parser.on("ignoredEntry", (entry: ReadEntry) => {
      parser.abort(new ArchiveRefusedError(`entry ${JSON.stringify(entry.path)} is of unsupported type ${entry.type}`));
    });
    // tar calls an archive of only end-of-archive blocks unrecognised; say what it really is.
    let sawEnd = false;
    parser.on("eof", () => (sawEnd = true));
    let settled = false;
    const fail = (err: unknown) => {
      if (settled) return;
      settled = true;
      input.destroy();
      if (err instanceof ArchiveRefusedError) reject(err);
      else if (sawEnd && summary.entries === 0) reject(new ArchiveRefusedError("the archive is empty"));
      else reject(new ArchiveRefusedError(`not a valid tar.gz: ${describe(err)}`));
    };
    parser.on("error", fail);
    input.on("error", (err) => {
      // An I/O error reading our own temp file is ours, not the uploader's.
      if (settled) return;
      settled = true;
      reject(err);
    });
    parser.on("end", () => {
      if (settled) return;
      settled = true;
      if (summary.entries === 0) return reject(new ArchiveRefusedError("the archive is empty"));
      const refusal = tree.finish();
      if (refusal) reject(refusal);
      else resolve(summary);
    });
    input.pipe(parser);
  });
}

async function hasGzipMagic(path: string): Promise<boolean> {
  const fh = await open(path, "r");
  try {
    const buf = Buffer.alloc(2);
    const { bytesRead } = await fh.read(buf, 0, 2, 0);
    return bytesRead === 2 && buf[0] === 0x1f && buf[1] === 0x8b;
  } finally {
    await fh.close();
  }
}

function describe(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.replace(/^TAR_[A-Z_]+: /, "");
}

/** More links than this on one path is a loop (Linux's own limit is 40). */
const MAX_LINK_HOPS = 40;

/**
 * Path rules over the whole archive, in order: a later entry may not go through a symlink an
 * earlier entry made, and a symlink may not replace a directory an earlier entry made. Once every
 * entry is known, `finish` resolves each symlink as the kernel will on the host.
 */
class TreeCheck {
  /** Symlink path → its target, as written in the archive. */
  private readonly links = new Map<string, string>();
  private readonly dirs = new Set<string>();

  /** Run after the last entry, because a later link changes what an earlier one resolves to. */
  finish(): ArchiveRefusedError | null {
    const escape = symlinkEscape(this.links);
    return escape === null ? null : new ArchiveRefusedError(escape);
  }

  check(entry: ReadEntry): void {
    const name = `entry ${JSON.stringify(entry.path)}`;
    if (!ALLOWED.has(entry.type)) {
      const what = /Device|FIFO/.test(entry.type) ? "a device or fifo" : `of unsupported type ${entry.type}`;
      throw new ArchiveRefusedError(`${name} is ${what}`);
    }
    const segments = pathSegments(entry.path, name);
    if (segments.length === 0 && entry.type !== "Directory") throw new ArchiveRefusedError(`${name} has no name`);
    for (let i = 1; i < segments.length; i++) {
      const parent = segments.slice(0, i).join("/");
      if (this.links.has(parent)) throw new ArchiveRefusedError(`${name} goes through the symlink ${JSON.stringify(parent)}`);
      this.dirs.add(parent);
    }
    const key = segments.join("/");
    // Writing over a symlink is how a naive extractor gets tricked into writing outside.
    if (this.links.has(key)) throw new ArchiveRefusedError(`${name} replaces a symlink`);
    if (entry.type === "Directory") {
      this.dirs.add(key);
      return;
    }
    if (this.dirs.has(key)) throw new ArchiveRefusedError(`${name} replaces a directory`);
    if (entry.type === "SymbolicLink") {
      // A symlink's target is relative to the link's own directory.
      const target = entry.linkpath ?? "";
      if (!staysInside(segments.slice(0, -1), target))
        throw new ArchiveRefusedError(`symlink ${JSON.stringify(entry.path)} points outside the package (${JSON.stringify(target)})`);
      this.links.set(key, target);
    } else if (entry.type === "Link") {
      // A hard link's target is a path inside the archive, relative to its root.
      const target = pathSegments(entry.linkpath ?? "", `the target of hard link ${JSON.stringify(entry.path)}`);
      for (let i = 1; i <= target.length; i++) {
        const prefix = target.slice(0, i).join("/");
        if (this.links.has(prefix))
          throw new ArchiveRefusedError(`hard link ${JSON.stringify(entry.path)} points through the symlink ${JSON.stringify(prefix)}`);
      }
      if (target.length === 0) throw new ArchiveRefusedError(`hard link ${JSON.stringify(entry.path)} has no target`);
    }
  }
}

/**
 * Follows each link's target through the package's other links (path → target, paths relative
 * to the package root), `..` applied to where a link really leads (as the kernel does), not to
 * the text: `a/b -> ..` then `z -> a/b/..` reads as "a" but is the root's parent on disk.
 * Returns why the first escaping link is refused, or null when every link stays inside. The
 * repository (on upload) and every host (before extraction) run this same resolution.
 */
export function symlinkEscape(links: ReadonlyMap<string, string>): string | null {
  for (const [path, target] of links) {
    const at = path.split("/").slice(0, -1);
    // The target's segments still to walk, next one last.
    const todo = target.split("/").reverse();
    let hops = 0;
    let via: string | null = null;
    while (todo.length > 0) {
      const segment = todo.pop()!;
      if (segment === "" || segment === ".") continue;
      if (segment === "..") {
        if (at.length === 0) return `symlink ${JSON.stringify(path)} resolves outside the package${via === null ? "" : ` (through ${JSON.stringify(via)})`}`;
        at.pop();
        continue;
      }
      at.push(segment);
      const next = links.get(at.join("/"));
      if (next === undefined) continue;
      if (++hops > MAX_LINK_HOPS) return `symlink ${JSON.stringify(path)}: too many levels of symlinks`;
      via = at.join("/");
      at.pop();
      todo.push(...next.split("/").reverse());
    }
  }
  return null;
}

/** Normalised segments of an archive path; refuses absolute, `..`, backslash and drive-letter paths. */
function pathSegments(path: string, name: string): string[] {
  if (path.startsWith("/") || /^[A-Za-z]:/.test(path)) throw new ArchiveRefusedError(`${name} has an absolute path`);
  if (path.includes("\\")) throw new ArchiveRefusedError(`${name} has a backslash in its path`);
  const segments = path.split("/").filter((s) => s !== "" && s !== ".");
  if (segments.includes("..")) throw new ArchiveRefusedError(`${name} has '..' in its path`);
  return segments;
}

function staysInside(base: string[], target: string): boolean {
  if (target === "" || target.startsWith("/") || /^[A-Za-z]:/.test(target) || target.includes("\\")) return false;
  const at = [...base];
  for (const s of target.split("/")) {
    if (s === "" || s === ".") continue;
    if (s === "..") {
      if (at.length === 0) return false;
      at.pop();
    } else at.push(s);
  }
  return true;
}
