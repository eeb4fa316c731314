/**
 * Streaming LTX writer (FORMAT.md §1): header, page frames in either encoding, the zero page header,
 * the page index, the trailer and the file checksum, written to a `WritableStream` in large
 * chunks while the pages are fed in.
 *
 * @module
 */

import { CHECKSUM_FLAG, crc64Digest } from "./crc64.ts";
import { crc64Combine } from "./_crc64_combine.ts";
import {
  crc64Update,
  encodePageFrame,
  encodePageFrames as encodePageFramesWasm,
  type PageDigest,
  referenceCodec,
  SharedPageCoder,
} from "./_codec.ts";
import { LTXError, LTXFormatError } from "./errors.ts";
import {
  checkNextPage,
  checkRun,
  encodeHeader,
  type Header,
  HEADER_FLAG_NO_CHECKSUM,
  isSnapshot,
  lockPageNumber,
  PAGE_HEADER_SIZE,
  type PageEncoding,
  type Trailer,
  validateTrailer,
} from "./header.ts";
import { encodePageFrameReference, maxPayloadSize } from "./_page_codec.ts";
import { putUvarint } from "./_varint.ts";

/** Output is handed to the sink in chunks of about this size. */
const CHUNK_SIZE = 256 * 1024;
/**
 * First size of the staging buffer, grown (doubling) up to a chunk and a frame as pages come:
 * most files are a small sync's few pages, and a fresh 260 KiB buffer per encoder (above
 * malloc's mmap threshold: page faults, zeroing, munmap) cost ~0.3 ms per L0 file and per
 * compaction of a new tenant in a burst of 1,000 (CPU profile).
 */
const FIRST_BUFFER_BYTES = 16 * 1024;
/** Room for one page index entry: three varints of at most 10 bytes. */
const MAX_INDEX_ENTRY = 30;

/** Options of {@linkcode Encoder}. */
export interface EncoderOptions {
  /** Page encoding; default "frame", readable by every Litestream v0.5.x (FORMAT.md §0). */
  encoding?: PageEncoding;
  /** The file being written, for error messages. */
  name?: string;
  /**
   * Set when the sink is done with each chunk by the time its `write()` resolves (it copies
   * the bytes or writes them out first, as a `handOffPipe` of src/pipeline guarantees): the
   * encoder then hands it views of one staging buffer that it reuses, instead of a fresh copy
   * per chunk that the sink may keep (garbage that only a GC frees). Same bytes either way.
   */
  reuseChunks?: boolean;
}

/**
 * A run of consecutive page frames coded apart from their file (on another thread), to be
 * spliced into it by {@linkcode Encoder.appendFrames}: the bytes, and what the file's page
 * index, file checksum and rolling checksum need to know about them.
 */
export interface EncodedFrames {
  /** The page numbers, ascending; the first `count` entries are used. */
  pgnos: Uint32Array;
  /** How many pages. */
  count: number;
  /**
   * The page frames, back to back, exactly as {@linkcode Encoder.encodePage} writes them: in
   * one array, or cut into pieces anywhere (the pieces are written as they are).
   */
  bytes: Uint8Array | readonly Uint8Array[];
  /** Each frame's size; the first `count` entries are used. */
  sizes: Uint32Array;
  /** CRC-64 of the bytes the frames add to the file checksum stream (FORMAT.md §1.8). */
  crc: bigint;
  /** Length of that stream: per page, its header, the block size field if any, the page. */
  hashedLength: number;
  /** XOR of the pages' checksums (FORMAT.md §1.9); 0 when not asked for. */
  pageChecksums: bigint;
}

/**
 * Writes `count` pages, `first` to `first + count - 1`, back to back into `into` (exactly
 * `count` pages long), for an encoder's `encodePagesFrom`: straight from where they are kept
 * (a file read) into the encoder's own buffer.
 */
export type PageFill = (into: Uint8Array, first: number, count: number) => Promise<void>;

/** `encodePagesFrom` fills at most this many bytes of pages per call. */
const FILL_BYTES = 1 << 20;

/** Options of {@linkcode encodePageFrames}. */
export interface EncodePageFramesOptions {
  /** Page encoding; default "frame". */
  encoding?: PageEncoding;
  /** Whether to compute the pages' checksums (files without the NoChecksum flag need them). */
  withPageChecksum?: boolean;
}

/** Room {@linkcode encodePageFrames} needs for `count` pages of `pageSize` bytes. */
export function pageFramesBound(pageSize: number, count: number): number {
  return count * (PAGE_HEADER_SIZE + maxPayloadSize(pageSize));
}

/**
 * Codes `count` pages (`data` holds them back to back, `pgnos` their numbers) into page frames
 * that {@linkcode Encoder.appendFrames} splices into a file: the same bytes, checksums and
 * index entries the encoder would have made from the same pages. Runs of pages coded this way
 * on several threads make one file. Checks nothing about the page numbers: `appendFrames` does.
 * @param out where to write the frames; allocated when absent or smaller than
 *   {@linkcode pageFramesBound}.
 */
export function encodePageFrames(
  pageSize: number,
  pgnos: Uint32Array,
  data: Uint8Array,
  count: number,
  options: EncodePageFramesOptions = {},
  out?: Uint8Array,
): EncodedFrames {
  const block = options.encoding === "block";
  const bound = pageFramesBound(pageSize, count);
  const bytes = out && out.length >= bound ? out : new Uint8Array(bound);
  const sizes = new Uint32Array(count);
  const digest: PageDigest = {
    crc: Int32Array.of(-1, -1),
    withPageChecksum: options.withPageChecksum ?? false,
    pageChecksum: 0n,
  };
  let pos = 0;
  let pageChecksums = 0n;
  if (referenceCodec) {
    for (let i = 0; i < count; i++) {
      const page = data.subarray(i * pageSize, (i + 1) * pageSize);
      const size = encodePageFrameReference(pgnos[i], page, block, digest, bytes, pos);
      if (digest.withPageChecksum) pageChecksums ^= digest.pageChecksum;
      sizes[i] = size;
      pos += size;
    }
  } else {
    ({ bytes: pos, pageChecksums } = encodePageFramesWasm(
      pageSize,
      pgnos,
      data,
      count,
      block,
      digest,
      bytes,
      0,
      sizes,
    ));
  }
  return {
    pgnos,
    count,
    bytes: bytes.subarray(0, pos),
    sizes,
    crc: crc64Digest(digest.crc),
    hashedLength: count * hashedFrameLength(pageSize, block),
    pageChecksums,
  };
}

/** Where a batch of {@linkcode SharedFrameEncoder.encode} is, as byte offsets in its memory. */
export interface SharedBatchLayout {
  /** The pages, back to back. */
  src: number;
  /** Their numbers, u32 each. */
  pgnos: number;
  /** Where the frames go: {@linkcode pageFramesBound} bytes and 256 of slack. */
  dst: number;
  /** Where each frame's size goes, u32 each. */
  sizes: number;
}

/**
 * {@linkcode encodePageFrames} on pages in a shared `WebAssembly.Memory`, writing the frames
 * and their sizes there too: a thread that reads pages into the memory and writes the frames
 * out from it hands a batch to another thread's encoder without a copy. One per memory; the
 * memory's first `SHARED_CODER_RESERVED_BYTES` are the codec's.
 */
export class SharedFrameEncoder {
  readonly #memory: WebAssembly.Memory;
  readonly #coder: SharedPageCoder;

  /**
   * Sets the codec up in `memory`.
   * @throws {RangeError} when the memory is not shared or smaller than the codec's part.
   */
  constructor(memory: WebAssembly.Memory) {
    this.#memory = memory;
    this.#coder = new SharedPageCoder(memory);
  }

  /**
   * Codes the `count` pages of `pageSize` bytes at `layout` into frames: what
   * {@linkcode encodePageFrames} returns, the frames and their sizes left in the memory.
   */
  encode(
    layout: SharedBatchLayout,
    count: number,
    pageSize: number,
    options: EncodePageFramesOptions = {},
  ): { bytes: number; crc: bigint; hashedLength: number; pageChecksums: bigint } {
    const block = options.encoding === "block";
    const hashedLength = count * hashedFrameLength(pageSize, block);
    if (referenceCodec) {
      const buffer = this.#memory.buffer;
      const frames = encodePageFrames(
        pageSize,
        new Uint32Array(buffer, layout.pgnos, count),
        new Uint8Array(buffer, layout.src, count * pageSize),
        count,
        options,
        new Uint8Array(buffer, layout.dst, pageFramesBound(pageSize, count)),
      );
      new Uint32Array(buffer, layout.sizes, count).set(frames.sizes.subarray(0, count));
      const bytes = (frames.bytes as Uint8Array).length;
      return { bytes, crc: frames.crc, hashedLength, pageChecksums: frames.pageChecksums };
    }
    const { bytes, crc, pageChecksums } = this.#coder.encodeFrames(
      layout.src,
      layout.pgnos,
      count,
      pageSize,
      layout.dst,
      layout.sizes,
      block,
      options.withPageChecksum ?? false,
    );
    return { bytes, crc: crc64Digest(crc), hashedLength, pageChecksums };
  }
}

/** Bytes one page adds to the file checksum stream (FORMAT.md §1.8). */
function hashedFrameLength(pageSize: number, block: boolean): number {
  return PAGE_HEADER_SIZE + (block ? 4 : 0) + pageSize;
}

/** Bytes per piece of the page index an encoder builds (pieces of a small file are smaller). */
const INDEX_PIECE = 64 << 10;

/**
 * The page index as the encoder builds it: its bytes (FORMAT.md §1.6 entries: three varints
 * per page), encoded as the pages are added, in pieces of {@linkcode INDEX_PIECE} bytes (the
 * first grown by doubling, so that a small sync costs a few hundred bytes). `close` then only
 * writes it: a snapshot of a million pages encodes its ~12 MB of entries while its pages are
 * coded on other threads instead of after them, and keeps them in less memory than numbers.
 */
class IndexBytes {
  /** Entries added. */
  length = 0;
  /** Full pieces, then the one being filled (its first `#pos` bytes). */
  readonly pieces: Uint8Array[] = [new Uint8Array(256)];
  #pos = 0;

  push(pgno: number, offset: number, size: number): void {
    let piece = this.pieces[this.pieces.length - 1];
    if (piece.length - this.#pos < MAX_INDEX_ENTRY) {
      if (piece.length < INDEX_PIECE) {
        // Only the first piece grows: every other one is allocated at its full size.
        const grown = new Uint8Array(piece.length * 2);
        grown.set(piece.subarray(0, this.#pos));
        this.pieces[this.pieces.length - 1] = piece = grown;
      } else {
        this.pieces[this.pieces.length - 1] = piece.subarray(0, this.#pos);
        this.pieces.push(piece = new Uint8Array(INDEX_PIECE));
        this.#pos = 0;
      }
    }
    let at = putUvarint(piece, this.#pos, pgno);
    at = putUvarint(piece, at, offset);
    this.#pos = putUvarint(piece, at, size);
    this.length++;
  }

  /** The index's bytes, in pieces. */
  bytes(): Uint8Array[] {
    const last = this.pieces.length - 1;
    return [...this.pieces.slice(0, last), this.pieces[last].subarray(0, this.#pos)];
  }
}

/**
 * Streams one LTX file to `sink`. Feed pages in ascending order with {@linkcode encodePage},
 * then {@linkcode close}. Pages are copied (compressed) before `encodePage` resolves, so the
 * caller may reuse its buffers.
 */
export class Encoder {
  /** The validated header being written. */
  readonly header: Header;
  #name: string;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #blockEncoding: boolean;
  /** The file checksum state, and each page's checksum unless NoChecksum. */
  #digest: PageDigest = { crc: Int32Array.of(-1, -1), withPageChecksum: false, pageChecksum: 0n };
  #buf: Uint8Array;
  #pos = 0;
  #flushed = 0;
  #maxFrame: number;
  #lockPage: number;
  #prevPgno = 0;
  #index = new IndexBytes();
  #rolling = 0n;
  #reuseChunks: boolean;
  #state: "open" | "closed" | "failed" = "open";
  #busy = false;

  /**
   * Validates `header` and prepares to write; nothing is written before the first page or
   * `close`.
   * @throws {LTXFormatError} when the header breaks a rule of FORMAT.md §1.1, or is a NoChecksum
   *   file with Commit 0 (which Go cannot represent).
   */
  constructor(sink: WritableStream<Uint8Array>, header: Header, options: EncoderOptions = {}) {
    this.#name = options.name ?? "LTX output";
    const encoding = options.encoding ?? "frame";
    if (encoding !== "frame" && encoding !== "block") {
      throw new LTXError(`${this.#name}: unknown page encoding "${encoding}" (frame or block)`);
    }
    let headerBytes: Uint8Array;
    try {
      headerBytes = encodeHeader(header);
    } catch (err) {
      throw new LTXFormatError(`${this.#name}: ${(err as Error).message}`);
    }
    if (header.commit === 0 && (header.flags & HEADER_FLAG_NO_CHECKSUM) !== 0) {
      throw new LTXFormatError(
        `${this.#name}: a NoChecksum LTX file cannot have Commit 0 (an empty database)`,
      );
    }
    this.header = { ...header };
    this.#blockEncoding = encoding === "block";
    this.#reuseChunks = options.reuseChunks ?? false;
    this.#maxFrame = PAGE_HEADER_SIZE + maxPayloadSize(header.pageSize);
    this.#lockPage = lockPageNumber(header.pageSize);
    this.#writer = sink.getWriter();
    this.#buf = new Uint8Array(
      Math.max(FIRST_BUFFER_BYTES, headerBytes.length) + this.#maxFrame,
    );
    this.#buf.set(headerBytes, 0);
    crc64Update(this.#digest.crc, headerBytes);
    this.#digest.withPageChecksum = (header.flags & HEADER_FLAG_NO_CHECKSUM) === 0;
    this.#pos = headerBytes.length;
  }

  /** Pages encoded so far. */
  get pageCount(): number {
    return this.#index.length;
  }

  /** Bytes of the file produced so far (handed to the sink or buffered); the file size after `close`. */
  get bytesWritten(): number {
    return this.#flushed + this.#pos;
  }

  /**
   * Compresses and appends one page.
   * @throws {LTXFormatError} on a wrong size, pgno 0, the lock page, a pgno above Commit, a
   *   page out of order, or a gap in a snapshot (FORMAT.md §1.4).
   */
  async encodePage(pgno: number, data: Uint8Array): Promise<void> {
    this.#enter("encodePage");
    try {
      this.#checkPage(pgno, data);
      this.#makeRoomForFrame();
      const start = this.#pos;
      // Page header and payload; the file checksum takes the page header, the block size
      // field and the page itself.
      const size = (referenceCodec ? encodePageFrameReference : encodePageFrame)(
        pgno,
        data,
        this.#blockEncoding,
        this.#digest,
        this.#buf,
        start,
      );
      if (this.#digest.withPageChecksum) this.#rolling ^= this.#digest.pageChecksum;
      this.#index.push(pgno, this.#flushed + start, size);
      this.#prevPgno = pgno;
      this.#pos += size;
      if (this.#pos >= CHUNK_SIZE) await this.#flush();
    } catch (err) {
      await this.#fail(err);
      throw err;
    } finally {
      this.#busy = false;
    }
  }

  /**
   * Compresses and appends `count` consecutive pages, `first` to `first + count - 1`, held
   * back to back in `data`: the same as `count` calls of {@linkcode encodePage}.
   * @throws {LTXFormatError} as `encodePage` would for the first page that breaks a rule.
   * @throws {LTXError} when `data` does not hold `count` pages.
   */
  async encodePages(first: number, count: number, data: Uint8Array): Promise<void> {
    const { pageSize } = this.header;
    try {
      checkRun(this.#name, count, data.length, pageSize);
    } catch (err) {
      this.#enter("encodePages");
      await this.#fail(err);
      this.#busy = false;
      throw err;
    }
    for (let i = 0; i < count; i++) {
      await this.encodePage(first + i, data.subarray(i * pageSize, (i + 1) * pageSize));
    }
  }

  /**
   * Encodes `count` consecutive pages from `first` that `fill` writes into a buffer of the
   * encoder's (up to 1 MiB of pages per call, each awaited before the next): the same as
   * {@linkcode encodePages} on what `fill` wrote. The worker encoders of src/pipeline let
   * `fill` write into the batch that goes to the worker, sparing the copy.
   * @throws {LTXFormatError} as `encodePage` would for the first page that breaks a rule.
   * @throws what `fill` throws.
   */
  async encodePagesFrom(first: number, count: number, fill: PageFill): Promise<void> {
    const { pageSize } = this.header;
    const perFill = Math.max(1, Math.floor(FILL_BYTES / pageSize));
    const buffer = new Uint8Array(Math.min(perFill, count) * pageSize);
    for (let i = 0; i < count; i += perFill) {
      const n = Math.min(perFill, count - i);
      const into = buffer.subarray(0, n * pageSize);
      try {
        // The pages are checked before they are read, as the worker encoders check them.
        for (let k = 0, prev = this.#prevPgno; k < n; prev = first + i + k++) {
          checkNextPage(this.header, this.#name, first + i + k, pageSize, prev);
        }
        await fill(into, first + i, n);
      } catch (err) {
        await this.#fail(err);
        throw err;
      }
      await this.encodePages(first + i, n, into);
    }
  }

  /**
   * Appends page frames coded by {@linkcode encodePageFrames} (on another thread, with this
   * file's page size and encoding), as if their pages had been fed to `encodePage`: the file
   * is byte for byte the same. The frames' bytes are handed to the sink as they are.
   * @throws {LTXFormatError} on a page number `encodePage` would refuse.
   * @throws {LTXError} when the frames were coded for another page size or encoding.
   */
  async appendFrames(frames: EncodedFrames): Promise<void> {
    this.#enter("appendFrames");
    try {
      const { pageSize } = this.header;
      let prevPgno = this.#prevPgno;
      let total = 0;
      for (let i = 0; i < frames.count; i++) {
        checkNextPage(this.header, this.#name, frames.pgnos[i], pageSize, prevPgno);
        prevPgno = frames.pgnos[i];
        total += frames.sizes[i];
      }
      const pieces = frames.bytes instanceof Uint8Array ? [frames.bytes] : frames.bytes;
      if (
        total !== pieces.reduce((sum, piece) => sum + piece.length, 0) ||
        frames.hashedLength !== frames.count * hashedFrameLength(pageSize, this.#blockEncoding)
      ) {
        throw new LTXError(
          `${this.#name}: page frames coded for another page size or encoding than the file's`,
        );
      }
      // Staged bytes (the header, pages encoded here) go first.
      await this.#flush(true);
      let offset = this.#flushed;
      for (let i = 0; i < frames.count; i++) {
        this.#index.push(frames.pgnos[i], offset, frames.sizes[i]);
        offset += frames.sizes[i];
      }
      const crc = crc64Combine(crc64Digest(this.#digest.crc), frames.crc, frames.hashedLength);
      this.#digest.crc[0] = ~Number(crc & 0xffffffffn);
      this.#digest.crc[1] = ~Number(crc >> 32n);
      if (this.#digest.withPageChecksum) this.#rolling ^= frames.pageChecksums;
      this.#prevPgno = prevPgno;
      this.#flushed = offset;
      for (const piece of pieces) if (piece.length > 0) await this.#writer.write(piece);
    } catch (err) {
      await this.#fail(err);
      throw err;
    } finally {
      this.#busy = false;
    }
  }

  /**
   * Writes the zero page header, the page index and the trailer, then closes the sink.
   * @param postApplyChecksum the rolling database checksum after this file; must be omitted or
   *   0 with NoChecksum. Without NoChecksum a snapshot computes its own when omitted.
   * @throws {LTXFormatError} when a snapshot misses its last pages, or the checksum breaks the
   *   trailer rules.
   */
  async close(postApplyChecksum?: bigint): Promise<Trailer> {
    this.#enter("close");
    try {
      const h = this.header;
      if (isSnapshot(h)) {
        const last = h.commit === this.#lockPage ? h.commit - 1 : h.commit;
        if (this.#prevPgno !== last) {
          throw new LTXFormatError(
            `${this.#name}: snapshot ends at page ${this.#prevPgno} but Commit is ${h.commit}: ` +
              `pages ${this.#prevPgno + 1}…${h.commit} are missing`,
          );
        }
      }
      let postApply = postApplyChecksum ?? 0n;
      if ((h.flags & HEADER_FLAG_NO_CHECKSUM) === 0 && postApplyChecksum === undefined) {
        if (!isSnapshot(h)) {
          throw new LTXFormatError(
            `${this.#name}: an incremental file without the NoChecksum flag needs its ` +
              `post-apply checksum`,
          );
        }
        postApply = CHECKSUM_FLAG | this.#rolling;
      }
      validateTrailer(h, { postApplyChecksum: postApply, fileChecksum: CHECKSUM_FLAG }, this.#name);

      this.#buf.fill(0, this.#pos, this.#pos + PAGE_HEADER_SIZE);
      crc64Update(this.#digest.crc, this.#buf.subarray(this.#pos, this.#pos + PAGE_HEADER_SIZE));
      this.#pos += PAGE_HEADER_SIZE;

      // Page index: (pgno, absolute offset, frame size)*, 0, then its length as u64 BE. Its
      // entries were encoded as the pages came: here they are only hashed and staged.
      let indexLength = 0;
      for (const piece of this.#index.bytes()) {
        crc64Update(this.#digest.crc, piece);
        indexLength += piece.length;
        for (let at = 0; at < piece.length;) {
          // The staging buffer may be smaller than a chunk (it grows with pages only).
          if (this.#pos >= CHUNK_SIZE || this.#pos === this.#buf.length) await this.#flush(true);
          const n = Math.min(piece.length - at, this.#buf.length - this.#pos);
          this.#buf.set(piece.subarray(at, at + n), this.#pos);
          this.#pos += n;
          at += n;
        }
      }
      if (this.#buf.length - this.#pos < 1 + 8 + 16) await this.#flush(true);
      const tail = this.#buf.subarray(this.#pos, this.#pos + 1 + 8 + 16);
      const view = new DataView(tail.buffer, tail.byteOffset, tail.length);
      tail[0] = 0;
      indexLength += 1;
      view.setBigUint64(1, BigInt(indexLength));
      view.setBigUint64(9, postApply);
      crc64Update(this.#digest.crc, tail.subarray(0, 17));
      const fileChecksum = CHECKSUM_FLAG | crc64Digest(this.#digest.crc);
      view.setBigUint64(17, fileChecksum);
      this.#pos += tail.length;
      await this.#flush(true);
      await this.#writer.close();
      this.#state = "closed";
      return { postApplyChecksum: postApply, fileChecksum };
    } catch (err) {
      await this.#fail(err);
      throw err;
    } finally {
      this.#busy = false;
    }
  }

  /** Aborts the sink (nothing more is written) and makes the encoder unusable. */
  async abort(reason?: unknown): Promise<void> {
    if (this.#state !== "open") return;
    this.#state = "failed";
    await this.#writer.abort(reason);
  }

  #enter(method: string): void {
    if (this.#state !== "open") {
      throw new LTXError(`${this.#name}: ${method}() on an encoder that is ${this.#state}`);
    }
    if (this.#busy) {
      throw new LTXError(`${this.#name}: ${method}() while another call is running; await it`);
    }
    this.#busy = true;
  }

  async #fail(reason: unknown): Promise<void> {
    if (this.#state !== "open") return;
    this.#state = "failed";
    await this.#writer.abort(reason).catch(() => {});
  }

  #checkPage(pgno: number, data: Uint8Array): void {
    checkNextPage(this.header, this.#name, pgno, data.length, this.#prevPgno);
  }

  /** Grows the staging buffer when the largest frame would not fit after what it holds. */
  #makeRoomForFrame(): void {
    if (this.#buf.length - this.#pos >= this.#maxFrame) return;
    const grown = new Uint8Array(
      Math.min(
        CHUNK_SIZE + this.#maxFrame,
        Math.max(2 * this.#buf.length, this.#pos + this.#maxFrame),
      ),
    );
    grown.set(this.#buf.subarray(0, this.#pos));
    this.#buf = grown;
  }

  /** Hands the buffered bytes to the sink; with `all` false only once a chunk is full. */
  async #flush(all = false): Promise<void> {
    if (this.#pos === 0 || (!all && this.#pos < CHUNK_SIZE)) return;
    // A copy of exactly the bytes written: the staging buffer stays (warm in cache, no new
    // 260 KiB allocation per chunk), and the sink may keep the chunk. A sink that is done
    // with it when its write resolves gets the staging buffer itself: nothing is written
    // into it before then (every caller awaits this flush).
    const chunk = this.#reuseChunks
      ? this.#buf.subarray(0, this.#pos)
      : this.#buf.slice(0, this.#pos);
    this.#flushed += this.#pos;
    this.#pos = 0;
    await this.#writer.write(chunk);
  }
}
