#!/usr/bin/env node
import { runCli } from "./program.js";

// `molt … | head`: the reader left, which is not an error of ours.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(0);
  throw err;
});
// exitCode, not exit(): the process ends once stdout has drained, so `molt … --json | jq` gets every byte.
process.exitCode = await runCli(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env });
