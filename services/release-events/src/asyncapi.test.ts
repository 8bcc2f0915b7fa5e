import { Parser } from "@asyncapi/parser";
import { RELEASE_NAMES, releaseAsyncApi, releaseType } from "@molt/contracts";
import { describe, expect, it } from "vitest";

describe("the AsyncAPI document", () => {
  it("[release-events] is AsyncAPI 3, generated from the zod schemas, and @asyncapi/parser finds no error in it", async () => {
    const doc = releaseAsyncApi({ natsUrl: "nats://127.0.0.1:4222" });
    const { document, diagnostics } = await new Parser().parse(JSON.stringify(doc));
    const errors = diagnostics.filter((d) => Number(d.severity) === 0 /* DiagnosticSeverity.Error */);
    expect(errors.map((d) => `${d.path.join(".")}: ${d.message}`)).toEqual([]);
    expect(document?.version()).toBe("3.0.0");
    const messages = document!.allMessages().all().map((m) => m.name());
    expect(messages.sort()).toEqual(RELEASE_NAMES.map(releaseType).sort());
    // The payload is the envelope's schema: the data of host.upgraded names its from/to versions.
    const upgraded = document!.allMessages().all().find((m) => m.name() === "dev.molt.host.upgraded.v1")!;
    const data = upgraded.payload()!.properties()!["data"]!;
    expect(Object.keys(data.properties() ?? {})).toEqual(expect.arrayContaining(["hostId", "component", "fromVersion", "toVersion", "deploymentId"]));
  });
});
