import { execFile } from "node:child_process";

/** One sample's value from Prometheus' text format, e.g. `molt_tasks{state="failed",service="projector"}`; undefined if absent. */
export function metricSample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const ok = Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`));
    if (ok) return Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return undefined;
}

/**
 * `promtool check metrics` (Debian's prometheus package; scripts/bootstrap.sh --tests installs it)
 * on an exposition: its complaints, empty when it passes. Absent, it throws: the check is never skipped.
 */
export function promtoolCheck(text: string): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const child = execFile("promtool", ["check", "metrics"], (err, stdout, stderr) => {
      if ((err as NodeJS.ErrnoException | null)?.code === "ENOENT")
        reject(new Error("promtool is not installed: run scripts/bootstrap.sh --tests (it installs Debian's prometheus)"));
      else resolve(err ? `${stdout}${stderr}`.trim() || err.message : "");
    });
    child.stdin?.end(text);
  });
}
