import type { z } from "zod";

/** A validation failure as one line naming each field: `hosts.0: host id must be …; version: …`. */
export function describeIssues(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.join(".") || "(value)"}: ${i.message}`).join("; ");
}
