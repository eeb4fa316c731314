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
 * Streams one LTX file from `source`. Call {@linkcode readHeader}, then one of the page reads
 * until it returns null (or 0): only then was the whole file verified. Any error cancels the
 * source and is thrown again by later calls. The page reads differ in who owns the bytes:
 *
 * - {@linkcode readPage}: a fresh array per page, the caller's to keep;
 * - {@linkcode readPageInto}: into the caller's buffer, allocating nothing;
 * - {@linkcode readPagesInto}: a batch of pages into the caller's buffer, one await per batch;
 * - {@linkcode readPageView}: the decoder's own reused page, valid until the next read.
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
  /** Each page's number and frame size, for the page index check (offsets follow from sizes). */
  #pgnos = new U32Column();
  #sizes = new U32Column();
  #rolling: bigint | undefined;
  #done = false;
  #error: unknown;
  #busy = false;
  /** The page {@linkcode readPageView} reuses; allocated on its first call. */
  #view: Page | undefined;

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
   * Reads the next page into a fresh array, or verifies the end of the file (index, trailer,
   * checksums) and returns null. After null, later calls return null. Callers that consume
   * each page before reading the next should prefer {@linkcode readPageInto}: a fresh 4 KiB
   * array per page is most of the decoder's garbage and costs about a microsecond a page.
   * @throws {LTXFormatError} on malformed bytes or a broken rule.
   * @throws {LTXChecksumError} when the file checksum or the rolling checksum does not match.
   */
  async readPage(): Promise<Page | null> {
    if (this.#done && this.#error === undefined) return null;
    const header = this.#header ?? (await this.readHeader());
    const data = new Uint8Array(header.pageSize);
    const pgno = await this.#readOne(header, data, 0);
    return pgno === null ? null : { pgno, data };
  }

  /**
   * Decodes the next page into `buffer` at `offset` (the header's page size in bytes), or
   * verifies the end of the file (index, trailer, checksums) and returns null; after null,
   * later calls return null. Nothing is allocated per page, so one buffer serves a whole file.
   * The slot is written only by a call that returns its page number; a failing call may leave
   * it partly written.
   * @returns the page number of the page now in the slot, or null at the verified end.
   * @throws {RangeError} when the slot does not fit in `buffer`.
   * @throws {LTXFormatError} on malformed bytes or a broken rule.
   * @throws {LTXChecksumError} when the file checksum or the rolling checksum does not match.
   */
  async readPageInto(buffer: Uint8Array, offset = 0): Promise<number | null> {
    if (this.#done && this.#error === undefined) return null;
    const header = this.#header ?? (await this.readHeader());
    if (!(offset >= 0 && offset + header.pageSize <= buffer.length)) {
      throw new RangeError(
        `${this.#name}: readPageInto needs ${header.pageSize} bytes at offset ${offset}, the ` +
          `buffer has ${buffer.length}`,
      );
    }
    return await this.#readOne(header, buffer, offset);
  }

  /**
   * Decodes the next page into a buffer of the decoder's own, reused for every page, or
   * verifies the end of the file and returns null (see {@linkcode readPageInto}). The page (the
   * object and its bytes) is valid until the next read on this decoder: for a caller that
   * consumes each page at once (a merge, a writer) without allocating anything or owning a buffer.
   * @returns the page, or null at the verified end.
   * @throws {LTXFormatError} on malformed bytes or a broken rule.
   * @throws {LTXChecksumError} when the file checksum or the rolling checksum does not match.
   */
  async readPageView(): Promise<Page | null> {
    if (this.#done && this.#error === undefined) return null;
    const header = this.#header ?? (await this.readHeader());
    const view = this.#view ??= { pgno: 0, data: new Uint8Array(header.pageSize) };
    const pgno = await this.#readOne(header, view.data, 0);
    if (pgno === null) return null;
    view.pgno = pgno;
    return view;
  }

  /**
   * Decodes up to `pgnos.length` pages: page i into `buffer` at `i × pageSize`, its number
   * into `pgnos[i]`. Pages whose bytes are already buffered are decoded without awaiting, so a
   * batch costs about one turn of the event loop per input chunk instead of one per page (the
   * codec worker reads this way). Fills the whole batch unless the file ends first, whose
   * index, trailer and checksums are then verified.
   * @returns how many pages were decoded: fewer than `pgnos.length` only at the verified end
   * of the file, and 0 once it was reached.
   * @throws {RangeError} when `buffer` is shorter than `pgnos.length` pages.
   * @throws {LTXFormatError} on malformed bytes or a broken rule.
   * @throws {LTXChecksumError} when the file checksum or the rolling checksum does not match.
   */
  async readPagesInto(buffer: Uint8Array, pgnos: Uint32Array): Promise<number> {
    if (this.#done && this.#error === undefined) return 0;
    const header = this.#header ?? (await this.readHeader());
    const size = header.pageSize;
    if (buffer.length < pgnos.length * size) {
      throw new RangeError(
        `${this.#name}: readPagesInto needs ${pgnos.length} pages of ${size} bytes, the ` +
          `buffer has ${buffer.length}`,
      );
    }
    return await this.#guard(async () => {
      let count = 0;
      while (count < pgnos.length) {
        const next = this.#next(header, buffer, count * size);
        const pgno = next instanceof Promise ? await next : next;
        if (pgno === null) break;
        pgnos[count++] = pgno;
      }
      return count;
    });
  }

  /**
   * {@linkcode #next} under the rules of {@linkcode #guard}, in one async call: the reads of
   * one page run once per page, where the closure `#guard` takes and the awaits of its layers
   * cost 5-9% of the CPU of a 4 KiB page read (codec bench).
   */
  async #readOne(header: Header, buffer: Uint8Array, at: number): Promise<number | null> {
    this.#enter();
    try {
      const next = this.#next(header, buffer, at);
      return next instanceof Promise ? await next : next;
    } catch (err) {
      throw await this.#failed(err);
    } finally {
      this.#busy = false;
    }
  }

  /**
   * One page frame into `buffer` at `at`, or the end of the file: synchronously (the page
   * number) when the frame's bytes are buffered, else a promise of it.
   */
  #next(header: Header, buffer: Uint8Array, at: number): number | Promise<number | null> {
    if (this.#in.buffered < PAGE_HEADER_SIZE) return this.#fillThenNext(header, buffer, at);
    const offset = this.#in.offset;
    const pageHeader = this.#in.take(PAGE_HEADER_SIZE);
    const pgno = ((pageHeader[0] << 24) | (pageHeader[1] << 16) | (pageHeader[2] << 8) |
      pageHeader[3]) >>> 0;
    const flags = (pageHeader[4] << 8) | pageHeader[5];
    crc64Update(this.#digest.crc, pageHeader);
    if (pgno === 0 && flags === 0) return this.#finish(header).then(() => null);
    this.#checkPageHeader(header, pgno, flags, offset);

    const size = header.pageSize;
    const digest = this.#digest;
    try {
      // Synchronously when the whole payload is buffered (the common case), else awaiting.
      if (flags === PAGE_FLAG_SIZE) {
        if (!decodeBufferedBlockPage(this.#in, pgno, size, digest, buffer, at)) {
          return this.#payloadThen(
            readBlockPage(this.#in, pgno, size, digest, buffer, at),
            pgno,
            offset,
          );
        }
      } else if (!decodeBufferedFramePage(this.#in, pgno, size, digest, buffer, at)) {
        return this.#payloadThen(
          readFramePage(this.#in, pgno, size, digest, buffer, at),
          pgno,
          offset,
        );
      }
    } catch (err) {
      throw this.#payloadError(err, pgno, offset);
    }
    return this.#decoded(pgno, offset);
  }

  /** {@linkcode #next} once a page header is buffered. */
  async #fillThenNext(header: Header, buffer: Uint8Array, at: number): Promise<number | null> {
    // Awaiting fill() costs a turn of the microtask queue: only done when bytes are missing.
    if (!(await this.#in.fill(PAGE_HEADER_SIZE))) {
      throw new LTXFormatError(
        `${this.#name}: file ends at offset ${this.#in.offset + this.#in.buffered} inside the ` +
          `page frames (truncated upload or partial download?)`,
      );
    }
    return await this.#next(header, buffer, at);
  }

  /** Awaits a payload read that had to wait for bytes, then records the page. */
  async #payloadThen(read: Promise<void>, pgno: number, offset: number): Promise<number> {
    try {
      await read;
    } catch (err) {
      throw this.#payloadError(err, pgno, offset);
    }
    return this.#decoded(pgno, offset);
  }

  /** A payload reader's error, with the file, the page and its offset. */
  #payloadError(err: unknown, pgno: number, offset: number): unknown {
    if (!(err instanceof PagePayloadError)) return err;
    return new LTXFormatError(
      `${this.#name}: page ${pgno} at offset ${offset}: ${err.message}` +
        (err.truncated ? " (truncated upload or partial download?)" : ""),
    );
  }

  /** Records page `pgno`, decoded from the frame at `offset`, for the end-of-file checks. */
  #decoded(pgno: number, offset: number): number {
    if (this.#rolling !== undefined) this.#rolling ^= this.#digest.pageChecksum;
    this.#pgnos.push(pgno);
    this.#sizes.push(this.#in.offset - offset);
    this.#prevPgno = pgno;
    return pgno;
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
    this.#enter();
    try {
      return await step();
    } catch (err) {
      throw await this.#failed(err);
    } finally {
      this.#busy = false;
    }
  }

  /** Starts a step: throws the remembered error, or on a concurrent call. */
  #enter(): void {
    if (this.#error !== undefined) throw this.#error;
    if (this.#busy) {
      throw new LTXError(`${this.#name}: concurrent calls on one decoder; await each call`);
    }
    this.#busy = true;
  }

  /** A step failed with `err`: remembers it and cancels the source. @returns `err`. */
  async #failed(err: unknown): Promise<unknown> {
    this.#error = err;
    if (!this.#done) {
      this.#done = true;
      await this.#in.cancel(err).catch(() => {});
    }
    return err;
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
    // The entries are compared as they are decoded (no array of a million objects for a large
    // file); the first difference is reported once the whole index proved well formed.
    const pgnos = this.#pgnos.values;
    const sizes = this.#sizes.values;
    let entries = 0;
    let offset = HEADER_SIZE; // the frames follow each other from the end of the header
    let mismatch: string | undefined;
    decodePageIndex(tail, {
      name: this.#name,
      fileSize: tailStart + tail.length,
      exact: true,
      onEntry: (i, pgno, at, size) => {
        entries++;
        if (
          mismatch === undefined &&
          (i >= pgnos.length || pgno !== pgnos[i] || at !== offset || size !== sizes[i])
        ) {
          mismatch = `${this.#name}: page index entry ${i} is (pgno ${pgno}, offset ${at}, size ` +
            `${size}) but the frame is (pgno ${pgnos[i]}, offset ${offset}, size ${sizes[i]})`;
        }
        if (i < sizes.length) offset += sizes[i];
      },
    });
    // decodePageIndex checked the length field and trailer placement; now the entries.
    if (entries !== pgnos.length) {
      throw new LTXFormatError(
        `${this.#name}: the page index lists ${entries} pages, the file holds ${pgnos.length}`,
      );
    }
    if (mismatch !== undefined) throw new LTXFormatError(mismatch);
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

/** A growable column of u32s: cheaper per page than a JS array, and compact. */
class U32Column {
  #values = new Uint32Array(1024);
  length = 0;

  /** The values pushed so far (a view, replaced when the column grows). */
  get values(): Uint32Array {
    return this.#values.subarray(0, this.length);
  }

  push(value: number): void {
    if (this.length === this.#values.length) {
      const grown = new Uint32Array(this.#values.length * 2);
      grown.set(this.#values);
      this.#values = grown;
    }
    this.#values[this.length++] = value;
  }
}

function hex(n: bigint): string {
  return n.toString(16).padStart(16, "0");
}
