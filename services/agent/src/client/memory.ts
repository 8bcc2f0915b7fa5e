/**
 * Keeps the client's memory to what it uses while it streams a package of any size.
 *
 * Every chunk the client streams (a socket read, a file read, inflated output) is a fresh Buffer,
 * dropped as soon as it is written or hashed. Its bytes live outside the V8 heap and are freed only
 * when V8 collects the small object that owns them, which it starts doing on its own only after
 * such external memory grew by about 64 MB since the last collection; glibc then keeps much of
 * what was freed. Measured (docs/benchmarks.md, agent): a 20 MiB upgrade grew the client by
 * 50–90 MB of dead chunks. The agent starts clients with `--expose-gc`, and the client collects
 * after every few MiB it streams, so the dead chunks never add up to more than that. Without
 * `--expose-gc` (tests, the simulator's in-process runs) this does nothing.
 */
const gc = (globalThis as { gc?: () => void }).gc;

/** How many streamed bytes may be dropped before a collection; small against the 80 MB target. */
export const COLLECT_EVERY_BYTES = 2 * 1024 * 1024;

/** A counter to call with each chunk's size: it collects garbage after every `every` bytes. */
export function collectEvery(every = COLLECT_EVERY_BYTES): (bytes: number) => void {
  if (gc === undefined) return () => undefined;
  let since = 0;
  return (bytes) => {
    since += bytes;
    if (since < every) return;
    since = 0;
    gc();
  };
}
