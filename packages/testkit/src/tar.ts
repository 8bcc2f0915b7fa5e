// Archives built header by header, for tests of what a careful tar tool never writes.
import { Header, type HeaderData } from "tar";

export type RawEntry = HeaderData & { body?: string };

/** A tar built header by header, so a test can write what `tar.create` never would. */
export function rawTar(entries: RawEntry[]): Buffer {
  const blocks: Buffer[] = [];
  for (const { body, ...h } of entries) {
    const data = Buffer.from(body ?? "");
    const header = new Header({ mode: 0o644, mtime: new Date(0), size: data.length, ...h });
    const block = Buffer.alloc(512);
    header.encode(block, 0);
    blocks.push(block);
    if (data.length > 0) blocks.push(data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}
