import type { SlotRepository } from "@molt/aggregates";
import type { CommandMeta } from "@molt/domain";

/**
 * Drain a host's slot by hand (later plans skip it) or clear a quarantine, whether an operator
 * or its failures set it. Both are events on the slot; quarantining twice changes nothing.
 */
export async function quarantine(
  slots: SlotRepository,
  input: { hostId: string; component: string; action: "quarantine" | "clear"; reason: string; meta: CommandMeta },
): Promise<{ changed: boolean; quarantined: boolean }> {
  const { hostId, component } = input;
  const before = await slots.load(hostId, component);
  const command =
    input.action === "quarantine"
      ? ({ type: "QuarantineSlot", data: { hostId, component, reason: input.reason, by: "operator" } } as const)
      : ({ type: "ClearQuarantine", data: { hostId, component } } as const);
  const out = await slots.handle(hostId, component, command, input.meta, `${hostId}:${component}:${input.action}:${before.seq}`);
  return { changed: out.events.length > 0, quarantined: Boolean(out.state.quarantined) };
}
