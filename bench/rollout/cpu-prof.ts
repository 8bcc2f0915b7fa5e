// Loaded with `--import` (NODE_OPTIONS) by `pnpm bench:rollout --cpu-prof DIR`: Node 20 refuses
// `--cpu-prof` in NODE_OPTIONS, so this starts V8's profiler through the inspector and writes
// `<DIR>/<pid>-<script>.cpuprofile` when the process exits (on the main thread the inspector
// answers synchronously, so it works inside the 'exit' handler).
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import { basename, join } from "node:path";

const dir = process.env["MOLT_BENCH_CPU_PROF_DIR"];
if (dir) {
  const session = new Session();
  session.connect();
  session.post("Profiler.enable");
  session.post("Profiler.setSamplingInterval", { interval: 1000 });
  session.post("Profiler.start");
  process.once("exit", () => {
    session.post("Profiler.stop", (err, res) => {
      if (err) return;
      const name = process.argv[1] ? basename(process.argv[1]).replace(/\W+/g, "_") : "node";
      const service = process.argv[1]?.match(/services\/([^/]+)\//)?.[1] ?? name;
      writeFileSync(join(dir, `${service}-${process.pid}.cpuprofile`), JSON.stringify(res.profile));
    });
  });
}
