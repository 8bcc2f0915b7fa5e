import type { RawEntry } from "./tar.js";

/**
 * Issue 7's symlink chain: every link normalises inside the package as text, but on disk
 * `a/b` is the root, so `z` (`a/b/..`) is the root's parent and `e` reaches `<parent>/etc/cron.d`.
 */
export function escapingSymlinkChain(): RawEntry[] {
  return [
    { path: "a/", type: "Directory" },
    { path: "a/b", type: "SymbolicLink", linkpath: ".." },
    { path: "z", type: "SymbolicLink", linkpath: "a/b/.." },
    { path: "e", type: "SymbolicLink", linkpath: "z/etc/cron.d" },
  ];
}
