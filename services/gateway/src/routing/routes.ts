/** Which service owns a request: the first rule whose method and path prefix match. */
export interface Upstreams {
  action: string;
  projector: string;
  packageRepo: string;
  audit: string;
  releaseEvents?: string;
}

export type Owner = keyof Upstreams;

interface Rule {
  methods: readonly string[] | "*";
  prefix: string;
  owner: Owner;
}

const READ = ["GET", "HEAD"] as const;

/** Commands go to action, reads of the same resources to the projector's views. */
const RULES: readonly Rule[] = [
  { methods: READ, prefix: "/v1/deployments", owner: "projector" },
  { methods: "*", prefix: "/v1/deployments", owner: "action" },
  { methods: READ, prefix: "/v1/hosts", owner: "projector" },
  { methods: "*", prefix: "/v1/hosts", owner: "action" },
  { methods: READ, prefix: "/v1/projector", owner: "projector" },
  // The views' rebuild (admin; the projector checks the role and audits it).
  { methods: ["POST"], prefix: "/v1/projector/rebuild", owner: "projector" },
  { methods: READ, prefix: "/v1/fleet", owner: "projector" },
  { methods: READ, prefix: "/v1/tasks", owner: "projector" },
  { methods: "*", prefix: "/v1/packages", owner: "packageRepo" },
  { methods: "*", prefix: "/v1/blobs", owner: "packageRepo" },
  { methods: READ, prefix: "/v1/audit", owner: "audit" },
  { methods: "*", prefix: "/v1/webhooks", owner: "releaseEvents" },
  { methods: READ, prefix: "/v1/release-events", owner: "releaseEvents" },
  { methods: READ, prefix: "/asyncapi.json", owner: "releaseEvents" },
];

export function ownerOf(method: string, path: string): Owner | undefined {
  for (const r of RULES) {
    const matchesPath = path === r.prefix || path.startsWith(`${r.prefix}/`) || path.startsWith(`${r.prefix}?`);
    if (matchesPath && (r.methods === "*" || r.methods.includes(method))) return r.owner;
  }
  return undefined;
}
