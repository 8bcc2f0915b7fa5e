#!/usr/bin/env -S node --import tsx
import { runPublisherCli } from "./cli.js";

process.exitCode = await runPublisherCli(process.argv.slice(2), {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
  env: process.env,
});
