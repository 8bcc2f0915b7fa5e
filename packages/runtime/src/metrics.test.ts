import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { describe, expect, it } from "vitest";
import { createMetrics } from "./metrics.js";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

const sample = async (registry: ReturnType<typeof createMetrics>, name: string) => {
  const line = (await registry.metrics()).split("\n").find((l) => l.startsWith(`${name}{`));
  return Number(line?.slice(line.lastIndexOf(" ") + 1));
};
/** The observer hears of a collection asynchronously. */
const settled = () => new Promise((r) => setTimeout(r, 20));

describe("the live heap gauge", () => {
  it("reports the heap after a full collection: memory kept raises it, memory let go of does not count once collected", async () => {
    const registry = createMetrics("test");
    gc();
    await settled();
    const base = await sample(registry, "molt_nodejs_heap_live_bytes");
    expect(base).toBeGreaterThan(0);

    // 32 MiB kept: a leak raises the floor.
    let kept: number[][] | undefined = Array.from({ length: 32 }, (_, i) => new Array<number>(128 * 1024).fill(i + 0.5));
    gc();
    await settled();
    expect(await sample(registry, "molt_nodejs_heap_live_bytes")).toBeGreaterThan(base + 24 * 2 ** 20);
    expect(kept.length).toBe(32);

    // Let go of, it is garbage: heap_size_used may still count it, the gauge does not once collected.
    kept = undefined;
    gc();
    await settled();
    expect(Math.abs((await sample(registry, "molt_nodejs_heap_live_bytes")) - base)).toBeLessThan(8 * 2 ** 20);
  });
});
