import { mkdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { type JournalEntry, StepReport } from "@molt/contracts";
import { type NatsServer, startNatsServer } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fileExists } from "../host/durable.js";
import { openJournal, readForwarded, taskPaths } from "../host/task-files.js";
import { silentLog } from "../log.js";
import { desiredTask } from "../testing/fixtures.js";
import { exitReason, verdictFor, watchTask } from "./forwarder.js";
import type { ClientExit } from "./runners.js";

const at = "2026-01-01T00:00:00.000Z";

describe("the agent's verdict for a client that ended without one", () => {
  it("[spine] rejected when the client never accepted (it touched nothing)", () => {
    expect(verdictFor([], "never started", 0)).toEqual([{ kind: "rejected", reason: "never started" }]);
  });
  it("[spine] closes the open step, then failed naming it", () => {
    const entries: JournalEntry[] = [
      { kind: "accepted", seq: 1, at },
      { kind: "step-started", seq: 2, at, step: "begin" },
      { kind: "step-succeeded", seq: 3, at, step: "begin", durationMs: 1 },
      { kind: "step-started", seq: 4, at, step: "download" },
    ];
    expect(verdictFor(entries, "boom", Date.parse(at) + 250)).toEqual([
      { kind: "step-failed", step: "download", durationMs: 250, error: "boom" },
      { kind: "failed", reason: "boom", step: "download" },
    ]);
  });
  it("[spine] nothing when the journal already ends the task", () => {
    expect(verdictFor([{ kind: "accepted", seq: 1, at }, { kind: "succeeded", seq: 2, at, version: "2.0.0" }], "x", 0)).toEqual([]);
  });
  it("names how the client ended", () => {
    expect(exitReason({ code: 7, signal: null })).toBe("upgrade client exited with code 7");
    expect(exitReason({ code: null, signal: "SIGKILL" })).toBe("upgrade client was killed by SIGKILL");
  });
});

describe("forwarding what an in-process run hands over", () => {
  let nats: NatsServer;
  let nc: NatsConnection;
  const received: StepReport[] = [];
  const root = join(tmpdir(), `molt-forwarder-${process.pid}-${Date.now()}`);
  const pkg = { url: "http://127.0.0.1:1/p", platform: "linux-amd64", sha256: "0".repeat(64), size: 1 };

  beforeAll(async () => {
    nats = await startNatsServer();
    nc = await connect({ servers: nats.url });
    nc.subscribe("molt.feedback.report.>", {
      callback: (_err, msg) => {
        received.push(StepReport.parse(msg.json()));
        msg.respond(JSON.stringify({ status: "accepted" }));
      },
    });
    await nc.flush();
  });
  afterAll(async () => {
    await nc?.close();
    await nats?.stop();
    await rm(root, { recursive: true, force: true });
  });

  const entry = (seq: number, e: Record<string, unknown>) => ({ seq, at, ...e }) as JournalEntry;
  const deps = (hostId: string) => ({ nc, hostId, root, log: silentLog(), retryMs: 50, requestTimeoutMs: 1_000, journalPollMs: 60_000, lingerMs: 5 });

  it("[scale-faults] handed entries are forwarded in order, once each, without reading the journal back; the verdict is not re-read either", async () => {
    const task = desiredTask({ hostId: "fw-1", package: pkg });
    await mkdir(taskPaths(root, task.taskId).dir, { recursive: true });
    let exit!: (e: ClientExit) => void;
    const run = { pid: process.pid, exited: new Promise<ClientExit>((r) => (exit = r)), stop: () => undefined };
    const watch = watchTask(deps(task.hostId), task, { kind: "running", run }, 0);
    // No journal file at all: whatever is forwarded can only come from the hand-over.
    const handed = [
      entry(1, { kind: "accepted" }),
      entry(2, { kind: "step-started", step: "begin" }),
      entry(3, { kind: "step-succeeded", step: "begin", durationMs: 1 }),
      entry(4, { kind: "succeeded", version: "2.0.0" }),
    ];
    for (const e of handed) watch.poke(e);
    exit({ code: 0, signal: null });
    await watch.done;
    const mine = received.filter((r) => r.taskId === task.taskId).flatMap((r) => r.entries);
    expect(mine.map((e) => e.seq)).toEqual([1, 2, 3, 4]);
    expect(await readForwarded(root, task.taskId)).toBe(4);
    expect(await fileExists(taskPaths(root, task.taskId).journal)).toBe(false);
  });

  it("[scale-faults] an entry handed over out of order makes the watch read the journal file, so none is skipped", async () => {
    const task = desiredTask({ hostId: "fw-2", package: pkg });
    const paths = taskPaths(root, task.taskId);
    await mkdir(paths.dir, { recursive: true });
    const journal = await openJournal(paths.journal);
    let exit!: (e: ClientExit) => void;
    const run = { pid: process.pid, exited: new Promise<ClientExit>((r) => (exit = r)), stop: () => undefined };
    const watch = watchTask(deps(task.hostId), task, { kind: "running", run }, 0);
    const first = await journal.append({ kind: "accepted" });
    watch.poke(first);
    await journal.append({ kind: "step-started", step: "begin" }); // written, never handed over
    watch.poke(await journal.append({ kind: "step-succeeded", step: "begin", durationMs: 1 }));
    watch.poke(await journal.append({ kind: "succeeded", version: "2.0.0" }));
    await journal.close();
    exit({ code: 0, signal: null });
    await watch.done;
    const mine = received.filter((r) => r.taskId === task.taskId).flatMap((r) => r.entries);
    expect(mine.map((e) => e.seq)).toEqual([1, 2, 3, 4]);
  });
});
