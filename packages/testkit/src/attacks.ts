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

/**
 * The longer form: `a/b -> ..`, `z1 -> a/b/..`, `zI -> a/b/z(I-1)`, … `e -> zN/../etc`.
 * As text every target stays inside (`a`, `a/z…`, `etc`); on disk every `zI` is the root's parent
 * and `e` is its grandparent's `etc`.
 */
export function longEscapingSymlinkChain(hops = 4): RawEntry[] {
  const chain: RawEntry[] = [
    { path: "a/", type: "Directory" },
    { path: "a/b", type: "SymbolicLink", linkpath: ".." },
    { path: "z1", type: "SymbolicLink", linkpath: "a/b/.." },
  ];
  for (let i = 2; i <= hops; i++) chain.push({ path: `z${i}`, type: "SymbolicLink", linkpath: `a/b/z${i - 1}` });
  chain.push({ path: "e", type: "SymbolicLink", linkpath: `z${hops}/../etc` });
  return chain;
}
