import { pino, type Logger } from "pino";

export type { Logger } from "pino";

/** Structured JSON logs; MOLT_LOG_LEVEL sets the level (default info). */
export function createLogger(name: string, bindings: Record<string, unknown> = {}): Logger {
  return pino({ name, level: process.env["MOLT_LOG_LEVEL"] ?? "info", base: { service: name, pid: process.pid, ...bindings } });
}
