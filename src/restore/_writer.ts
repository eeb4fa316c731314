/**
 * Writes the merged pages of a restore to the output file sequentially, in large chunks, with
 * zeros at the lock page (FORMAT.md §1.12), and refuses a page set with holes: a database missing a
 * page would look fine until SQLite reads it.
 *
 * @module
 */

import { FlushBehind } from "../replica/mod.ts";
import { CHECKSUM_FLAG, lockPageNumber, type Page, pageChecksum } from "../ltx/mod.ts";

/** The merged page set does not form a complete database. */
export class IncompleteDatabaseError extends Error {
  /** Builds an error; the message names the page and the replica. */
  constructor(message: string) {
    super(message);
    this.name = "IncompleteDatabaseError";
  }
}

/** Options of {@linkcode DatabaseWriter}. */
export interface DatabaseWriterOptions {
  /** Database page size in bytes. */
  pageSize: number;
  /** Database size in pages (the last file's Commit). */
  commit: number;
  /** Compute the rolling database checksum (FORMAT.md §1.9) while writing. */
  checksum?: boolean;
  /** Called after each chunk is written: bytes written so far, total bytes. */
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
  /** Names the restore source in errors. */
  source: string;
  /** Chunk size of the writes. Default 4 MiB. */
  chunkSize?: number;
}

/** Sequential writer of pages 1…commit to an open file. */
export class DatabaseWriter {
  #file: Deno.FsFile;
  #flushBehind: FlushBehind;
  #pageSize: number;
  #commit: number;
  #lockPage: number;
  #source: string;
  #onProgress?: (bytesDone: number, bytesTotal: number) => void;
  #buffer: Uint8Array;
  #buffered = 0;
  #written = 0;
  #next = 1;
  #checksum: bigint | undefined;

  /** Prepares to write to `file` from offset 0. */
  constructor(file: Deno.FsFile, options: DatabaseWriterOptions) {
    this.#file = file;
    this.#flushBehind = new FlushBehind(file);
    this.#pageSize = options.pageSize;
    this.#commit = options.commit;
    this.#lockPage = lockPageNumber(options.pageSize);
    this.#source = options.source;
    this.#onProgress = options.onProgress;
    const chunkPages = Math.max(1, Math.floor((options.chunkSize ?? 4 << 20) / options.pageSize));
    this.#buffer = new Uint8Array(chunkPages * options.pageSize);
    this.#checksum = options.checksum ? 0n : undefined;
  }

  /**
   * Waits for a background flush in flight (before closing the file on an error path).
   * @throws the error a background flush met.
   */
  settle(): Promise<void> {
    return this.#flushBehind.settle();
  }

  /** Total size of the finished database in bytes. */
  get totalBytes(): number {
    return this.#commit * this.#pageSize;
  }

  /**
   * Appends the next page; pages must arrive in ascending order without holes.
   * @throws {IncompleteDatabaseError} on a missing, repeated or out-of-range page.
   */
  async write(page: Page): Promise<void> {
    const { pgno, data } = page;
    if (pgno > this.#commit) {
      throw new IncompleteDatabaseError(
        `${this.#source}: page ${pgno} is beyond the database size of ${this.#commit} pages`,
      );
    }
    if (pgno === this.#lockPage) {
      throw new IncompleteDatabaseError(
        `${this.#source}: holds the lock page ${pgno}, which SQLite never writes`,
      );
    }
    if (data.byteLength !== this.#pageSize) {
      throw new IncompleteDatabaseError(
        `${this.#source}: page ${pgno} has ${data.byteLength} bytes, expected ${this.#pageSize}`,
      );
    }
    if (this.#next === this.#lockPage) await this.#append(this.#lockPage, undefined);
    if (pgno !== this.#next) {
      throw new IncompleteDatabaseError(
        pgno > this.#next
          ? `${this.#source}: page ${this.#next} of ${this.#commit} is missing from the restore ` +
            `plan; the replica is incomplete (take a new snapshot of the source database)`
          : `${this.#source}: page ${pgno} arrived twice or out of order`,
      );
    }
    await this.#append(pgno, data);
  }

  /**
   * Writes what is buffered, checks that every page 1…commit was written, and returns the
   * rolling checksum (when asked for) of the whole database.
   * @throws {IncompleteDatabaseError} when pages at the end are missing.
   */
  async finish(): Promise<bigint | undefined> {
    if (this.#next === this.#lockPage && this.#lockPage <= this.#commit) {
      await this.#append(this.#lockPage, undefined);
    }
    if (this.#next <= this.#commit) {
      throw new IncompleteDatabaseError(
        `${this.#source}: pages ${this.#next}…${this.#commit} are missing from the restore plan; ` +
          `the replica is incomplete (take a new snapshot of the source database)`,
      );
    }
    await this.#flush();
    await this.#flushBehind.settle();
    return this.#checksum === undefined ? undefined : CHECKSUM_FLAG | this.#checksum;
  }

  /** Copies one page (or zeros for the lock page) into the chunk buffer. */
  async #append(pgno: number, data: Uint8Array | undefined): Promise<void> {
    const offset = this.#buffered;
    if (data === undefined) {
      this.#buffer.fill(0, offset, offset + this.#pageSize);
    } else {
      this.#buffer.set(data, offset);
      if (this.#checksum !== undefined) this.#checksum ^= pageChecksum(pgno, data);
    }
    this.#buffered += this.#pageSize;
    this.#next = pgno + 1;
    if (this.#buffered === this.#buffer.byteLength) await this.#flush();
  }

  async #flush(): Promise<void> {
    let offset = 0;
    while (offset < this.#buffered) {
      offset += await this.#file.write(this.#buffer.subarray(offset, this.#buffered));
    }
    this.#written += this.#buffered;
    this.#flushBehind.wrote(this.#buffered);
    this.#buffered = 0;
    this.#onProgress?.(this.#written, this.totalBytes);
  }
}
