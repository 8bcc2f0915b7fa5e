import { pino, type DestinationStream, type Logger } from "pino";

export type { Logger } from "pino";

/**
 * Structured JSON logs; MOLT_LOG_LEVEL sets the level (default info). Written to stdout, or to
 * `destination` (a test that reads what was logged).
 */
export function createLogger(name: string, bindings: Record<string, unknown> = {}, destination?: DestinationStream): Logger {
  const opts = { name, level: process.env["MOLT_LOG_LEVEL"] ?? "info", base: { service: name, pid: process.pid, ...bindings } };
  return destination ? pino(opts, destination) : pino(opts);
}
