/**
 * SQLite's rollback journal (`<db>-journal`, sqlite.org/fileformat.html §3), written the way
 * SQLite's pager writes it, so that a follower killed in the middle of an application leaves a
 * hot journal that SQLite itself rolls back.
 *
 * Layout: a header padded to one sector (magic, record count, checksum nonce, original size in
 * pages, sector size, page size, all big-endian), then one record per original page (page
 * number, the page's bytes before the transaction, a checksum). The header's magic and count
 * are written only after the records are on disk (first fsync), and made durable by a second
 * fsync: until then the journal starts with zeros, which SQLite ignores, so a journal that could
 * hold torn records is never taken for a hot one.
 *
 * @module
 */

import { dirname } from "node:path";
import { syncDirectory } from "../replica/mod.ts";

/** The journal header's magic (pager.c `aJournalMagic`). */
export const JOURNAL_MAGIC: Uint8Array = new Uint8Array([
  0xd9,
  0xd5,
  0x05,
  0xf9,
  0x20,
  0xa1,
  0x63,
  0xd7,
]);
/** The sector size recorded in the header; the header takes one sector. */
export const JOURNAL_SECTOR_SIZE = 512;

/** pager.c `pager_cksum`: the nonce plus every 200th byte from the end of the page. */
export function journalChecksum(nonce: number, page: Uint8Array): number {
  let sum = nonce >>> 0;
  for (let i = page.length - 200; i > 0; i -= 200) sum = (sum + page[i]) >>> 0;
  return sum;
}

/** Writes one rollback journal; nothing is valid until {@linkcode JournalWriter.seal}. */
export class JournalWriter {
  readonly path: string;
  #file: Deno.FsFile;
  #pageSize: number;
  #nonce: number;
  #records = 0;
  #buffer: Uint8Array;
  #buffered = 0;

  private constructor(path: string, file: Deno.FsFile, pageSize: number, nonce: number) {
    this.path = path;
    this.#file = file;
    this.#pageSize = pageSize;
    this.#nonce = nonce;
    const record = pageSize + 8;
    this.#buffer = new Uint8Array(Math.max(1, Math.floor((1 << 20) / record)) * record);
  }

  /**
   * Creates (or replaces) the journal with a header whose magic and count are still zero.
   * `originalPages` is the database size before the transaction.
   */
  static async create(
    path: string,
    pageSize: number,
    originalPages: number,
  ): Promise<JournalWriter> {
    const file = await Deno.open(path, { write: true, create: true, truncate: true });
    const nonce = crypto.getRandomValues(new Uint32Array(1))[0];
    const header = new Uint8Array(JOURNAL_SECTOR_SIZE);
    const view = new DataView(header.buffer);
    view.setUint32(12, nonce);
    view.setUint32(16, originalPages);
    view.setUint32(20, JOURNAL_SECTOR_SIZE);
    view.setUint32(24, pageSize);
    const writer = new JournalWriter(path, file, pageSize, nonce);
    await writer.#write(header);
    return writer;
  }

  /** Number of pages journaled so far. */
  get records(): number {
    return this.#records;
  }

  /** Appends the original content of page `pgno`. */
  async add(pgno: number, original: Uint8Array): Promise<void> {
    const size = this.#pageSize + 8;
    if (this.#buffered + size > this.#buffer.length) await this.#flush();
    const at = this.#buffered;
    const view = new DataView(this.#buffer.buffer, at, size);
    view.setUint32(0, pgno);
    this.#buffer.set(original, at + 4);
    view.setUint32(4 + this.#pageSize, journalChecksum(this.#nonce, original));
    this.#buffered += size;
    this.#records++;
  }

  /**
   * Makes the journal hot-capable: records synced, then the magic and count written and synced,
   * then the directory entry synced. From here on the database file may be written.
   */
  async seal(): Promise<void> {
    await this.#flush();
    await this.#file.sync();
    const head = new Uint8Array(12);
    head.set(JOURNAL_MAGIC);
    new DataView(head.buffer).setUint32(8, this.#records);
    await this.#file.seek(0, Deno.SeekMode.Start);
    await this.#writeAll(head);
    await this.#file.sync();
    await syncDirectory(dirname(this.path));
  }

  /** Closes the descriptor (the file stays). */
  close(): void {
    try {
      this.#file.close();
    } catch { /* already closed */ }
  }

  /** Closes and deletes the journal: the commit point, or the end of an abandoned one. */
  async remove(): Promise<void> {
    this.close();
    try {
      await Deno.remove(this.path);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }

  async #write(bytes: Uint8Array): Promise<void> {
    await this.#writeAll(bytes);
  }

  async #flush(): Promise<void> {
    if (this.#buffered === 0) return;
    await this.#writeAll(this.#buffer.subarray(0, this.#buffered));
    this.#buffered = 0;
  }

  async #writeAll(bytes: Uint8Array): Promise<void> {
    let done = 0;
    while (done < bytes.length) done += await this.#file.write(bytes.subarray(done));
  }
}
