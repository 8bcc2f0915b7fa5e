/**
 * The slice of a pino logger the agent uses. Declared here so the agent code (and the sim, which
 * hands each host a child logger) depends on a shape, not on pino; `createLogger()` satisfies it.
 */
export interface Log {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  child(bindings: Record<string, unknown>): Log;
}

/** A logger that drops everything (tests, and the in-process client which reports through its journal). */
export function silentLog(): Log {
  const log: Log = {
    debug: () => undefined,
    info: () => undefined,
    warn: () => undefined,
    error: () => undefined,
    child: () => log,
  };
  return log;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
