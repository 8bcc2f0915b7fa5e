import { randomUUID } from "node:crypto";
import { jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { subjects, type CommandRecord } from "@molt/contracts";
import type { Logger } from "@molt/runtime";

/**
 * Every operator command, accepted, replayed or refused, goes to the MOLT_AUDIT stream so the
 * audit log also shows the attempts that changed nothing.
 */
export function commandLog(nc: NatsConnection, logger: Logger) {
  const js = jetstream(nc);
  return {
    async record(r: Omit<CommandRecord, "id" | "at">): Promise<void> {
      const record: CommandRecord = { id: randomUUID(), at: new Date().toISOString(), ...r };
      try {
        await js.publish(subjects.command(r.kind), JSON.stringify(record), { msgID: record.id });
      } catch (err) {
        // The command itself already succeeded or failed; losing its audit record is logged loudly.
        logger.error({ err, record }, "could not append the command record to MOLT_AUDIT");
      }
    },
  };
}
export type CommandLog = ReturnType<typeof commandLog>;
