import type { Gateway } from "./http.js";
import type { Output } from "./output.js";

/** What every command gets: where to write, and the gateway (resolved only by commands that talk to it). */
export interface Context {
  out: Output;
  env: NodeJS.ProcessEnv;
  gateway(): Promise<Gateway>;
}
