import type { NatsConnection } from "@nats-io/transport-node";
import { type Heartbeat, HeartbeatAnswer, subjects, Version } from "@molt/contracts";
import { installedVersion } from "../host/layout.js";
import { errorMessage, type Log } from "../log.js";

export interface HeartbeatInput {
  readonly hostId: string;
  /** Each managed component's installed version (see installedVersions). */
  readonly versions: Readonly<Record<string, string | null>>;
  readonly labels: Readonly<Record<string, string>>;
  readonly agentVersion: string;
  readonly now: Date;
}

/** The version `current` points at, per component; null when none or not a valid version. */
export async function installedVersions(root: string, components: readonly string[]): Promise<Record<string, string | null>> {
  const versions: Record<string, string | null> = {};
  for (const c of components) {
    const v = await installedVersion(root, c).catch(() => null);
    // A hand-made version dir with an odd name must not get the whole heartbeat refused.
    versions[c] = v !== null && Version.safeParse(v).success ? v : null;
  }
  return versions;
}

/** os and arch are sent raw (`linux`, `x64`); feedback derives the platform with `platformOf`. */
export function buildHeartbeat(input: HeartbeatInput): Heartbeat {
  return {
    hostId: input.hostId,
    at: input.now.toISOString(),
    os: process.platform,
    arch: process.arch,
    labels: { ...input.labels },
    components: { ...input.versions },
    agentVersion: input.agentVersion,
  };
}

/** One heartbeat by request/reply. Nobody listening is normal (feedback not up yet): debug only. */
export async function sendHeartbeat(nc: NatsConnection, hb: Heartbeat, timeoutMs: number, log: Log): Promise<"ok" | "refused" | "unanswered"> {
  try {
    const msg = await nc.request(subjects.heartbeat(hb.hostId), JSON.stringify(hb), { timeout: timeoutMs });
    const answer = HeartbeatAnswer.safeParse(msg.json());
    if (!answer.success) {
      log.warn({ answer: msg.string().slice(0, 200) }, "heartbeat answer is not a HeartbeatAnswer");
      return "refused";
    }
    if (answer.data.status === "refused") log.warn({ reason: answer.data.reason }, "feedback refused the heartbeat");
    return answer.data.status;
  } catch (err) {
    log.debug({ err: errorMessage(err) }, "heartbeat not answered");
    return "unanswered";
  }
}
