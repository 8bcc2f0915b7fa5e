import { fileURLToPath } from "node:url";

export { inspectArchive, symlinkEscape, ArchiveRefusedError, type ArchiveLimits, type ArchiveSummary } from "./archive.js";
export { manifestOf, manifestOfFile, PUBLISHER_LIMITS, type PackageIds } from "./manifest.js";
export { generatePublisherKey, writePublisherKey, type PublisherKeyPair } from "./keys.js";
export { addToMetadata, fetchMetadata, pushMetadata, pushPackage, signAndPush, signNextMetadata, yankPackage, type MetadataInput, type PushInput, type PushResult } from "./push.js";
export { DEFAULT_METADATA_EXPIRY_DAYS, expiresIn, nextMetadata, sortEntries, type MetadataChange, type MetadataEntry } from "./metadata.js";
export { runPublisherCli, USAGE, type CliIo } from "./cli.js";

/** The `molt-publish` entry, for running it as its own process (`node --import tsx <bin> …`). */
export const PUBLISHER_BIN = fileURLToPath(new URL("./bin.ts", import.meta.url));
