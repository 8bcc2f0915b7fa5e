import type { Logger } from "pino";

export type Closer = () => Promise<void> | void;

/**
 * On SIGINT/SIGTERM run the closers in reverse order of registration (last opened, first closed),
 * then exit. A second signal exits at once.
 */
export function installShutdown(logger: Logger, closers: Closer[], opts: { timeoutMs?: number } = {}): () => Promise<void> {
  let closing: Promise<void> | undefined;
  const shutdown = async () => {
    closing ??= (async () => {
      for (const close of [...closers].reverse()) {
        try {
          await close();
        } catch (err) {
          logger.warn({ err }, "error while shutting down");
        }
      }
    })();
    return closing;
  };
  const onSignal = (signal: NodeJS.Signals) => {
    if (closing) process.exit(1);
    logger.info({ signal }, "shutting down");
    const timer = setTimeout(() => process.exit(1), opts.timeoutMs ?? 10_000);
    timer.unref();
    void shutdown().then(() => process.exit(0));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  return shutdown;
}
