import { expect } from "vitest";
import type { Decider } from "./decider.js";

type ErrorClass = abstract new (...args: never[]) => Error;

/**
 * Given/when/then for deciders: `given(decider)(events).when(command).then(decision)`.
 * Test-only (imports vitest), so it stays out of the package entry.
 */
export function given<State, Command, Event, Decision>(decider: Decider<State, Command, Event, Decision>) {
  return (events: readonly Event[]) => {
    const state = events.reduce((s, e) => decider.evolve(s, e), decider.initialState());
    return {
      when(command: Command) {
        const decide = () => decider.decide(command, state);
        return {
          then(expected: Decision): void {
            expect(decide()).toEqual(expected);
          },
          thenThrows(errorClass: ErrorClass, message?: string | RegExp): void {
            expect(decide).toThrow(errorClass);
            if (message !== undefined) expect(decide).toThrow(message);
          },
        };
      },
    };
  };
}
