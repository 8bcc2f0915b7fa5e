import { createReadStream } from "node:fs";
import { chmod, lstat, mkdir, open, readdir, readlink } from "node:fs/promises";
import { join, posix, relative, resolve, sep } from "node:path";
import { extract, list, type Parser, type ReadEntry, type Unpack } from "tar";
import { symlinkEscape } from "@molt/publisher";
import { syncFile } from "../host/durable.js";
import { collectEvery } from "./memory.js";

/** An archive the client refuses to unpack; the message names the entry and the rule. */
export class UnsafeArchiveError extends Error {
  readonly code = "unsafe_archive";
}

export interface ExtractLimits {
  readonly maxEntries: number;
  /** Total bytes of regular files once extracted. */
  readonly maxBytes: number;
}

export interface ArchiveSummary {
  readonly entries: number;
  readonly files: number;
  readonly bytes: number;
}

const FILE_TYPES = new Set(["File", "OldFile", "ContiguousFile"]);

/**
 * Reads the archive's table of contents and refuses it unless every entry stays inside the target:
 * no absolute or backslash paths, no `..`, no links pointing out, no entry reached through a link
 * or replacing another, no devices or fifos, and counts within the limits.
 * The whole archive is checked before a byte is written, so a refused package leaves nothing.
 */
export async function inspectArchive(file: string, limits: ExtractLimits): Promise<ArchiveSummary> {
  const seen = new Map<string, string>();
  /** Symlink path → target, resolved through each other once the listing is complete. */
  const links = new Map<string, string>();
  let entries = 0;
  let files = 0;
  let bytes = 0;
  let problem: string | undefined;
  const check = (entry: ReadEntry): string | undefined => {
    const path = entry.path;
    const norm = safeRelative(path);
    if (typeof norm !== "string") return `entry ${JSON.stringify(path)}: ${norm.reason}`;
    if (++entries > limits.maxEntries) return `more than ${limits.maxEntries} entries`;
    const type = entry.type;
    if (norm === "") return type === "Directory" ? undefined : `entry ${JSON.stringify(path)}: only a directory may name the root`;
    const parts = norm.split("/");
    for (let i = 1; i < parts.length; i++) {
      const prefix = parts.slice(0, i).join("/");
      const t = seen.get(prefix);
      if (t !== undefined && t !== "Directory") return `entry ${JSON.stringify(path)}: goes through ${t} ${JSON.stringify(prefix)}`;
    }
    const before = seen.get(norm);
    if (before !== undefined && !(before === "Directory" && type === "Directory"))
      return `entry ${JSON.stringify(path)}: replaces an earlier ${before}`;
    if (FILE_TYPES.has(type)) {
      // A package never needs to install a privileged binary: refused, not silently stripped.
      if (typeof entry.mode === "number" && (entry.mode & 0o6000) !== 0) return `entry ${JSON.stringify(path)}: setuid or setgid bit`;
      files++;
      bytes += entry.size;
      if (bytes > limits.maxBytes) return `more than ${limits.maxBytes} bytes unpacked`;
    } else if (type === "SymbolicLink") {
      const target = entry.linkpath ?? "";
      if (target === "" || target.includes("\\") || target.includes("\0") || posix.isAbsolute(target) || /^[A-Za-z]:/.test(target))
        return `symlink ${JSON.stringify(path)}: target ${JSON.stringify(target)} is absolute or malformed`;
      const resolved = posix.normalize(posix.join(posix.dirname(norm), target));
      if (resolved === ".." || resolved.startsWith("../"))
        return `symlink ${JSON.stringify(path)}: target ${JSON.stringify(target)} points outside the package`;
      links.set(norm, target);
    } else if (type === "Link") {
      const target = safeRelative(entry.linkpath ?? "");
      if (typeof target !== "string" || target === "" || !FILE_TYPES.has(seen.get(target) ?? ""))
        return `hardlink ${JSON.stringify(path)}: target ${JSON.stringify(entry.linkpath)} is not an earlier file of the package`;
    } else if (type !== "Directory") {
      return `entry ${JSON.stringify(path)}: type ${type} is not allowed`;
    }
    seen.set(norm, type);
    return undefined;
  };
  try {
    await feed(
      file,
      list({
        // Strict: a corrupt or truncated archive is an error, not a warning and a shorter listing.
        strict: true,
        onReadEntry: (entry) => {
          problem ??= check(entry);
          entry.resume();
        },
      }),
      "end",
    );
  } catch (err) {
    throw new UnsafeArchiveError(`unreadable archive: ${(err as Error).message}`);
  }
  if (entries === 0) problem ??= "no entries (not a tar archive?)";
  // Each link inside as text can still lead out through another (a chain): resolved as the kernel will.
  problem ??= symlinkEscape(links) ?? undefined;
  if (problem) throw new UnsafeArchiveError(`unsafe archive: ${problem}`);
  return { entries, files, bytes };
}

/**
 * Streams the archive into tar's parser (or unpacker) in small reads, collecting the dropped
 * chunks as they pass (memory.ts); tar's own file reading takes 16 MiB at a time. Resolves when
 * tar is done (`end` for a listing, `close` once an unpack has written everything).
 */
function feed(file: string, into: Parser | Unpack, done: "end" | "close"): Promise<void> {
  const collect = collectEvery();
  return new Promise((resolve, reject) => {
    const source = createReadStream(file, { highWaterMark: 64 * 1024 });
    into.on("error", (err: Error) => {
      source.destroy();
      reject(err);
    });
    into.on(done, () => resolve());
    source.on("error", reject);
    source.on("data", (chunk) => {
      collect(chunk.length);
      if (!into.write(chunk as Buffer)) {
        source.pause();
        into.once("drain", () => source.resume());
      }
    });
    source.on("end", () => into.end());
  });
}

/** A clean relative path ("" for the root), or why it is refused. */
function safeRelative(path: string): string | { reason: string } {
  if (path.includes("\\")) return { reason: "backslash in path" };
  if (path.includes("\0")) return { reason: "NUL in path" };
  if (posix.isAbsolute(path) || /^[A-Za-z]:/.test(path)) return { reason: "absolute path" };
  const parts = path.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) return { reason: "`..` in path" };
  return parts.join("/");
}

/**
 * Checks, then unpacks `file` into `dest` (which must not exist yet or be empty), stopping when
 * `signal` aborts: ownership never
 * taken from the archive, setuid/setgid/sticky bits stripped, then every extracted path is
 * re-checked on disk (defence in depth) and fsynced, so a later `current` switch never points at
 * files a crash could leave empty.
 */
export async function extractArchive(
  file: string,
  dest: string,
  limits: ExtractLimits,
  opts: { signal?: AbortSignal; onEntry?: () => void } = {},
): Promise<ArchiveSummary> {
  const { signal } = opts;
  const summary = await inspectArchive(file, limits);
  signal?.throwIfAborted();
  await mkdir(dest, { recursive: true });
  await feed(
    file,
    extract({
      cwd: dest,
      strict: true,
      preserveOwner: false,
      preservePaths: false,
      filter: (_path, entry) => {
        // The deadline stops extraction too: the remaining entries are skipped, and the step fails below.
        if (signal?.aborted) return false;
        opts.onEntry?.();
        if (typeof entry.mode === "number") entry.mode &= 0o777;
        return true;
      },
    }),
    "close",
  );
  signal?.throwIfAborted();
  await verifyTree(dest);
  return summary;
}

async function verifyTree(dest: string): Promise<void> {
  const root = resolve(dest);
  const walk = async (dir: string): Promise<void> => {
    for (const d of await readdir(dir, { withFileTypes: true })) {
      const p = join(dir, d.name);
      const st = await lstat(p);
      if (st.isSymbolicLink()) {
        const target = resolve(dir, await readlink(p));
        if (target !== root && !target.startsWith(root + sep))
          throw new UnsafeArchiveError(`unsafe archive: ${relative(root, p)} links outside the package`);
      } else if (st.isDirectory()) {
        await walk(p);
      } else if (st.isFile()) {
        if ((st.mode & 0o7000) !== 0) await chmod(p, st.mode & 0o777);
        const fd = await open(p, "r");
        await syncFile(fd).finally(() => fd.close());
      } else {
        throw new UnsafeArchiveError(`unsafe archive: ${relative(root, p)} is not a file, directory or symlink`);
      }
    }
    const fd = await open(dir, "r");
    await syncFile(fd).finally(() => fd.close());
  };
  await walk(root);
}
