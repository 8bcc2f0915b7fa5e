import { createColors } from "picocolors";
import Table from "cli-table3";

/** An error the user can act on: printed as `molt: <message>`, exit code `exitCode`. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
    /** The gateway's HTTP status, when this is its refusal. */
    readonly status: number | null = null,
  ) {
    super(message);
  }
}

export type Colors = ReturnType<typeof createColors>;

/**
 * Where a command writes. Colours and bars only for a person at a terminal: not with `--json`,
 * not when stdout is a pipe or a file, not with NO_COLOR set (https://no-color.org).
 */
export interface Output {
  json: boolean;
  tty: boolean;
  c: Colors;
  line(text?: string): void;
  /** One JSON document (or one line of a stream, with `--json` on a follow/watch). */
  data(value: unknown): void;
  err(text: string): void;
  table(head: string[], rows: Array<Array<string | number>>): void;
}

export function createOutput(opts: { json: boolean; color?: boolean; env: NodeJS.ProcessEnv; stdout: NodeJS.WriteStream; stderr: NodeJS.WriteStream }): Output {
  const tty = opts.stdout.isTTY === true && !opts.json;
  const noColor = opts.env["NO_COLOR"] !== undefined && opts.env["NO_COLOR"] !== "";
  const c = createColors(tty && !noColor && opts.color !== false);
  return {
    json: opts.json,
    tty,
    c,
    line: (text = "") => void opts.stdout.write(`${text}\n`),
    data: (value) => void opts.stdout.write(`${JSON.stringify(value)}\n`),
    err: (text) => void opts.stderr.write(`${text}\n`),
    table(head, rows) {
      if (rows.length === 0) {
        opts.stdout.write(`${c.dim("(none)")}\n`);
        return;
      }
      const t = new Table({
        head: head.map((h) => c.bold(h)),
        // Plain columns (no box) read and grep well; colours off leaves them plain text.
        chars: { top: "", "top-mid": "", "top-left": "", "top-right": "", bottom: "", "bottom-mid": "", "bottom-left": "", "bottom-right": "", left: "", "left-mid": "", mid: "", "mid-mid": "", right: "", "right-mid": "", middle: "  " },
        style: { head: [], border: [], "padding-left": 0, "padding-right": 0 },
      });
      for (const r of rows) t.push(r.map(String));
      opts.stdout.write(`${t.toString()}\n`);
    },
  };
}

/** How a task or deployment state reads in colour. */
export function paintState(c: Colors, state: string): string {
  if (state === "succeeded" || state === "completed") return c.green(state);
  if (state === "failed" || state === "timed-out" || state === "rejected") return c.red(state);
  if (state === "cancelled" || state === "paused") return c.yellow(state);
  if (state === "running" || state === "dispatched") return c.cyan(state);
  return state;
}

export function formatDuration(ms: number | null): string {
  if (ms === null) return "";
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  return `${Math.floor(ms / 60_000)}m${String(Math.round((ms % 60_000) / 1000)).padStart(2, "0")}s`;
}

/** `--since`: an ISO time, or a span back from now (`90s`, `15m`, `2h`, `7d`). */
export function parseSince(value: string, now = Date.now()): string {
  const span = /^(\d+)(s|m|h|d)$/.exec(value);
  if (span) {
    const unit = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[span[2] as "s" | "m" | "h" | "d"];
    return new Date(now - Number(span[1]) * unit).toISOString();
  }
  const t = Date.parse(value);
  if (!Number.isFinite(t)) throw new CliError(`--since ${JSON.stringify(value)}: give an ISO time (2026-01-31T12:00:00Z) or a span (15m, 2h, 7d)`, 2);
  return new Date(t).toISOString();
}
