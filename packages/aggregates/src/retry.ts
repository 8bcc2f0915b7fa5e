import { ConcurrencyError } from "@molt/event-store";

/**
 * Re-read, re-decide, retry: the expected-sequence loop every writer of an aggregate runs.
 * Contention on one aggregate is short-lived, so a few quick retries with jitter settle it.
 */
export async function retryOnConflict<T>(attempt: () => Promise<T>, maxAttempts = 50): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await attempt();
    } catch (err) {
      if (!(err instanceof ConcurrencyError) || i >= maxAttempts) throw err;
      await new Promise((r) => setTimeout(r, Math.random() * Math.min(100, 2 ** i)));
    }
  }
}
