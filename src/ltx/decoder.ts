/**
 * Streaming LTX reader (FORMAT.md §1). Reads one file from a `ReadableStream` page by page without
 * holding it in memory, and verifies everything Go's decoder verifies plus what it leaves out:
 * exact decompressed sizes in both encodings, strictly ascending pages, snapshot completeness,
 * the page index against the frames, the index length field, nothing after the trailer, the
 * trailer rules, and the file checksum. A snapshot that carries database checksums also has its
 * rolling checksum (§1.9) checked against the trailer.
 *
 * @module
 */

import { ByteReader } from "./_byte_reader.ts";
import { CHECKSUM_FLAG, crc64Digest } from "./crc64.ts";
import { crc64Update, type PageDigest } from "./_codec.ts";
import { LTXChecksumError, LTXError, LTXFormatError } from "./errors.ts";
import {
  decodeHeader,
  type Header,
  HEADER_FLAG_NO_CHECKSUM,
  HEADER_SIZE,
  isSnapshot,
  lockPageNumber,
  type Page,
  PAGE_FLAG_SIZE,
  PAGE_HEADER_SIZE,
  type Trailer,
  TRAILER_SIZE,
} from "./header.ts";
import { decodePageIndex } from "./page_index.ts";
import {
  decodeBufferedBlockPage,
  decodeBufferedFramePage,
  PagePayloadError,
  readBlockPage,
  readFramePage,
} from "./_page_codec.ts";

/** Options of {@linkcode Decoder}. */
export interface DecoderOptions {
  /** The file being read (path or object key), named in every error message. */
  name?: string;
}

const SQLITE_MAGIC = new TextEncoder().encode("SQLite format 3\0");

/**
 * Streams one LTX file from `source`. Call {@linkcode readHeader}, then {@linkcode readPage}
 * until it returns null: only then was the whole file verified. Any error cancels the source
 * and is thrown again by later calls.
 */
export class Decoder {
  #name: string;
  #in: ByteReader;
  #header: Header | undefined;
  #trailer: Trailer | undefined;
  /** The file checksum state, and each page's checksum when the rolling checksum is checked. */
  #digest: PageDigest = { crc: Int32Array.of(-1, -1), withPageChecksum: false, pageChecksum: 0n };
  #lockPage = 0;
  #prevPgno = 0;
  #pgnos: number[] = [];
  #offsets: number[] = [];
  #sizes: number[] = [];
  #rolling: bigint | undefined;
  #done = false;
  #error: unknown;
  #busy = false;

  /** Locks `source`; nothing is read before the first call. */
  constructor(source: ReadableStream<Uint8Array>, options: DecoderOptions = {}) {
    this.#name = options.name ?? "LTX stream";
    this.#in = new ByteReader(source);
  }

  /** The file name used in error messages. */
  get name(): string {
    return this.#name;
  }

  /** The header, once {@linkcode readHeader} returned. */
  get header(): Header | undefined {
    return this.#header;
  }

  /** The verified trailer; set once {@linkcode readPage} returned null. */
  get trailer(): Trailer | undefined {
    return this.#trailer;
  }

  /** Pages returned so far. */
  get pageCount(): number {
    return this.#pgnos.length;
  }

  /**
   * Reads and validates the header. Later calls return the same header.
   * @throws {LTXFormatError} on a short file, bad magic or a broken header rule (FORMAT.md §1.1).
   */
  async readHeader(): Promise<Header> {
    if (this.#header) return this.#header;
    return await this.#guard(async () => {
      if (!(await this.#in.fill(HEADER_SIZE))) {
        const n = this.#in.buffered;
        throw new LTXFormatError(
          `${this.#name}: not an LTX file: ${n === 0 ? "it is empty" : `only ${n} bytes`}`,
        );
      }
      const bytes = this.#in.take(HEADER_SIZE);
      const header = decodeHeader(bytes, this.#name);
      crc64Update(this.#digest.crc, bytes);
      this.#lockPage = lockPageNumber(header.pageSize);
      if ((header.flags & HEADER_FLAG_NO_CHECKSUM) === 0 && isSnapshot(header)) {
        this.#rolling = 0n;
        this.#digest.withPageChecksum = true;
      }
      this.#header = header;
      return header;
    });
  }

  /**
   * Reads the next page, or verifies the end of the file (index, trailer, checksums) and
   * returns null. After null, later calls return null.
   * @throws {LTXFormatError} on malformed bytes or a broken rule.
   * @throws {LTXChecksumError} when the file checksum or the rolling checksum does not match.
   */
  async readPage(): Promise<Page | null> {
    if (this.#done && this.#error === undefined) return null;
    const header = this.#header ?? (await this.readHeader());
    return await this.#guard(async () => {
      const offset = this.#in.offset;
      // Awaiting fill() costs a turn of the microtask queue; skip it when the bytes are here.
      if (this.#in.buffered < PAGE_HEADER_SIZE && !(await this.#in.fill(PAGE_HEADER_SIZE))) {
        throw new LTXFormatError(
          `${this.#name}: file ends at offset ${this.#in.offset + this.#in.buffered} inside the ` +
            `page frames (truncated upload or partial download?)`,
        );
      }
      const pageHeader = this.#in.take(PAGE_HEADER_SIZE);
      const pgno = ((pageHeader[0] << 24) | (pageHeader[1] << 16) | (pageHeader[2] << 8) |
        pageHeader[3]) >>> 0;
      const flags = (pageHeader[4] << 8) | pageHeader[5];
      crc64Update(this.#digest.crc, pageHeader);
      if (pgno === 0 && flags === 0) {
        await this.#finish(header);
        return null;
      }
      this.#checkPageHeader(header, pgno, flags, offset);

      let data: Uint8Array;
      try {
        // Synchronously when the whole payload is buffered (the common case), else awaiting.
        const size = header.pageSize;
        data = flags === PAGE_FLAG_SIZE
          ? decodeBufferedBlockPage(this.#in, pgno, size, this.#digest) ??
            await readBlockPage(this.#in, pgno, size, this.#digest)
          : decodeBufferedFramePage(this.#in, pgno, size, this.#digest) ??
            await readFramePage(this.#in, pgno, size, this.#digest);
      } catch (err) {
        if (!(err instanceof PagePayloadError)) throw err;
        throw new LTXFormatError(
          `${this.#name}: page ${pgno} at offset ${offset}: ${err.message}` +
            (err.truncated ? " (truncated upload or partial download?)" : ""),
        );
      }
      if (this.#rolling !== undefined) this.#rolling ^= this.#digest.pageChecksum;
      this.#pgnos.push(pgno);
      this.#offsets.push(offset);
      this.#sizes.push(this.#in.offset - offset);
      this.#prevPgno = pgno;
      return { pgno, data };
    });
  }

  /** Stops reading and cancels the source. Later calls throw. */
  async cancel(): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    this.#error = new LTXError(`${this.#name}: the decoder was cancelled`);
    await this.#in.cancel();
  }

  /** Runs one step; on failure cancels the source and remembers the error. */
  async #guard<T>(step: () => Promise<T>): Promise<T> {
    if (this.#error !== undefined) throw this.#error;
    if (this.#busy) {
      throw new LTXError(`${this.#name}: concurrent calls on one decoder; await each call`);
    }
    this.#busy = true;
    try {
      return await step();
    } catch (err) {
      this.#error = err;
      if (!this.#done) {
        this.#done = true;
        await this.#in.cancel(err).catch(() => {});
      }
      throw err;
    } finally {
      this.#busy = false;
    }
  }

  #checkPageHeader(header: Header, pgno: number, flags: number, offset: number): void {
    // The message is formatted only on failure: for every page it would cost more than the checks.
    const fail = (why: string): never => {
      throw new LTXFormatError(`${this.#name}: page frame at offset ${offset}: ${why}`);
    };
    if (flags !== 0 && flags !== PAGE_FLAG_SIZE) {
      const legacy = offset === HEADER_SIZE
        ? ` This looks like a pre-v0.5 (ltx v1) LTX file, whose 4-byte page headers are ` +
          `followed by ${this.#startsWithSQLiteHeader() ? "the raw page" : "page data"}; ` +
          `sluice reads only the v0.5 format. Take a new snapshot with sluice or Litestream v0.5.`
        : "";
      fail(
        `invalid page flags 0x${flags.toString(16).padStart(4, "0")} (0 or 1 allowed).${legacy}`,
      );
    }
    if (pgno === 0) fail(`page number 0 with flags ${flags}`);
    if (pgno === this.#lockPage) fail(`holds the lock page ${pgno}, which is never stored`);
    if (pgno <= this.#prevPgno) {
      fail(`page ${pgno} after page ${this.#prevPgno}; pages must ascend strictly`);
    }
    if (isSnapshot(header)) {
      const expected = this.#prevPgno + 1 === this.#lockPage
        ? this.#prevPgno + 2
        : this.#prevPgno + 1;
      if (pgno > header.commit) {
        fail(`unexpected page ${pgno} after Commit ${header.commit} in a snapshot`);
      }
      if (pgno !== expected) {
        fail(
          `snapshot skips from page ${this.#prevPgno} to ${pgno}; it must hold every ` +
            `page 1…${header.commit}`,
        );
      }
    }
  }

  /** Whether the 4-byte pgno of the first frame is followed by "SQLite format 3". */
  #startsWithSQLiteHeader(): boolean {
    // The page header (6 bytes) was taken; in a v1 file the page started 2 bytes into it.
    if (!(this.#in.buffered >= SQLITE_MAGIC.length - 2)) return false;
    const next = this.#in.peek(SQLITE_MAGIC.length - 2);
    return SQLITE_MAGIC.subarray(2).every((b, i) => next[i] === b);
  }

  /** After the zero page header: snapshot completeness, index, trailer, checksums. */
  async #finish(header: Header): Promise<void> {
    if (isSnapshot(header)) {
      const last = header.commit === this.#lockPage ? header.commit - 1 : header.commit;
      if (this.#prevPgno !== last) {
        throw new LTXFormatError(
          `${this.#name}: snapshot ends at page ${this.#prevPgno} but Commit is ` +
            `${header.commit}: pages ${this.#prevPgno + 1}…${header.commit} are missing`,
        );
      }
    }
    // The rest is the index, its length and the trailer: small, so read it whole. Varints of
    // at most 10 bytes bound it; anything longer is garbage after the trailer.
    const limit = this.#pgnos.length * 30 + 1 + 8 + TRAILER_SIZE;
    const tailStart = this.#in.offset;
    const tail = await this.#in.readToEnd(limit);
    if (tail === null) {
      throw new LTXFormatError(
        `${this.#name}: more than ${limit} bytes follow the last page frame (at offset ` +
          `${tailStart}); a page index for ${this.#pgnos.length} pages is smaller: ` +
          `the file has extra bytes after its trailer`,
      );
    }
    this.#done = true;
    this.#in.release();
    if (tail.length < 1 + 8 + TRAILER_SIZE) {
      throw new LTXFormatError(
        `${this.#name}: file ends ${tail.length} bytes after the page frames, too short for ` +
          `a page index and trailer (truncated upload or partial download?)`,
      );
    }
    crc64Update(this.#digest.crc, tail.subarray(0, tail.length - 8));
    const computed = CHECKSUM_FLAG | crc64Digest(this.#digest.crc);
    const view = new DataView(tail.buffer, tail.byteOffset, tail.length);
    const trailer: Trailer = {
      postApplyChecksum: view.getBigUint64(tail.length - 16),
      fileChecksum: view.getBigUint64(tail.length - 8),
    };
    if (trailer.fileChecksum !== computed) {
      throw new LTXChecksumError(
        `${this.#name}: file checksum mismatch: the trailer says ${hex(trailer.fileChecksum)}, ` +
          `the content gives ${hex(computed)}; the file is corrupt`,
      );
    }
    const index = decodePageIndex(tail, {
      name: this.#name,
      fileSize: tailStart + tail.length,
      exact: true,
    });
    // decodePageIndex checked the length field and trailer placement; now the entries.
    if (index.entries.length !== this.#pgnos.length) {
      throw new LTXFormatError(
        `${this.#name}: the page index lists ${index.entries.length} pages, the file holds ` +
          `${this.#pgnos.length}`,
      );
    }
    for (let i = 0; i < index.entries.length; i++) {
      const e = index.entries[i];
      if (
        e.pgno !== this.#pgnos[i] || e.offset !== this.#offsets[i] || e.size !== this.#sizes[i]
      ) {
        throw new LTXFormatError(
          `${this.#name}: page index entry ${i} is (pgno ${e.pgno}, offset ${e.offset}, size ` +
            `${e.size}) but the frame is (pgno ${this.#pgnos[i]}, offset ${this.#offsets[i]}, ` +
            `size ${this.#sizes[i]})`,
        );
      }
    }
    const noChecksum = (header.flags & HEADER_FLAG_NO_CHECKSUM) !== 0;
    if (noChecksum && trailer.postApplyChecksum !== 0n) {
      throw new LTXFormatError(
        `${this.#name}: post-apply checksum ${hex(trailer.postApplyChecksum)} must be 0 with ` +
          `the NoChecksum flag`,
      );
    }
    if (!noChecksum && (trailer.postApplyChecksum & CHECKSUM_FLAG) === 0n) {
      throw new LTXFormatError(
        `${this.#name}: post-apply checksum ${hex(trailer.postApplyChecksum)} must have bit 63 set`,
      );
    }
    if (this.#rolling !== undefined) {
      const database = CHECKSUM_FLAG | this.#rolling;
      if (database !== trailer.postApplyChecksum) {
        throw new LTXChecksumError(
          `${this.#name}: database checksum mismatch: the trailer says ` +
            `${hex(trailer.postApplyChecksum)}, the pages give ${hex(database)}`,
        );
      }
    }
    this.#trailer = trailer;
  }
}

function hex(n: bigint): string {
  return n.toString(16).padStart(16, "0");
}
