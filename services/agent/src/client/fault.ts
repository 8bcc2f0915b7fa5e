import { readFile } from "node:fs/promises";
import { describeIssues, HostId, Step } from "@molt/contracts";
import { z } from "zod";
import { isErrno } from "../host/durable.js";

/**
 * A fault injected from outside for the simulator and tests (`MOLT_SIM_FAULT_FILE`): the named
 * hosts fail the named step with the message. Re-read at every step, so a test can inject a
 * fault for chosen hosts and clear it later by removing the file.
 */
export const FaultSpec = z
  .object({
    hosts: z.array(HostId),
    step: Step,
    message: z.string().min(1).max(1000).default("injected fault"),
  })
  .strict();
export type FaultSpec = z.infer<typeof FaultSpec>;

/**
 * The injected failure for this host at this step, if any. A file that is there but invalid fails
 * the step too: a test must not silently run without the fault it asked for.
 */
export async function injectedFault(file: string | undefined, hostId: string, step: Step): Promise<string | undefined> {
  if (!file) return undefined;
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if (isErrno(err, "ENOENT")) return undefined;
    throw err;
  }
  let parsed;
  try {
    parsed = FaultSpec.safeParse(JSON.parse(text));
  } catch (err) {
    return `fault file ${file} is not JSON: ${(err as Error).message}`;
  }
  if (!parsed.success) return `fault file ${file} is invalid: ${describeIssues(parsed.error)}`;
  const fault = parsed.data;
  return fault.step === step && fault.hosts.includes(hostId) ? fault.message : undefined;
}
