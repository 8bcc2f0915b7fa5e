import { rm } from "node:fs/promises";
import { afterAll, beforeAll } from "vitest";
import { buildPackage, type BuiltPackage, type PackageServer, startPackageServer, tempDir } from "./fixtures.js";

export interface PackageSuite {
  readonly server: PackageServer;
  readonly pkg: BuiltPackage;
  /** A fresh temp dir, removed after the file's tests. */
  tempRoot(prefix: string): Promise<string>;
}

/**
 * What most client tests share: a real package server, one package built from `files`, and temp
 * dirs cleaned up afterwards (registered as the file's beforeAll / afterAll).
 */
export function packageSuite(files: Parameters<typeof buildPackage>[0]): PackageSuite {
  let server: PackageServer | undefined;
  let pkg: BuiltPackage | undefined;
  const roots: string[] = [];
  beforeAll(async () => {
    server = await startPackageServer();
    pkg = await buildPackage(files);
  });
  afterAll(async () => {
    await server?.close();
    await Promise.all(roots.map((r) => rm(r, { recursive: true, force: true })));
  });
  return {
    get server() {
      if (!server) throw new Error("packageSuite used before beforeAll ran");
      return server;
    },
    get pkg() {
      if (!pkg) throw new Error("packageSuite used before beforeAll ran");
      return pkg;
    },
    async tempRoot(prefix) {
      const dir = await tempDir(prefix);
      roots.push(dir);
      return dir;
    },
  };
}
