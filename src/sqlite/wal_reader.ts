/**
 * Reads the committed frames of a WAL with Litestream's exact rules (FORMAT.md §4.1,
 * `wal_reader.go`): which frames count, where reading stops, and how a read resumes from the
 * offset where the previous sync ended.
 *
 * @module
 */

import type { RandomAccessFile } from "./file.ts";
import {
  parseFrameHeader,
  parseWALHeader,
  PrevFrameMismatchError,
  WAL_FRAME_HEADER_SIZE,
  WAL_HEADER_SIZE,
  WALError,
  type WALHeader,
} from "./wal.ts";

/** Where to start reading and how much to read. */
export interface WALReadOptions {
  /** Byte offset of the first frame to read: 32 + k·(24 + pageSize). Default 32. */
  offset?: number;
  /** Salt-1 of the frame before `offset` (from the last LTX header). Required when offset > 32. */
  salt1?: number;
  /** Salt-2 of the frame before `offset`. Required when offset > 32. */
  salt2?: number;
  /**
   * Stop after the first commit frame that brings the bytes read to at least this many
   * (Litestream's MaxSyncWALBytes). 0 or absent: read to the end of the valid WAL.
   */
  maxBytes?: number;
  /**
   * The WAL header, when the caller has just read it: saves reading it again. The frames are
   * checked against it as against one read here (a stale one only ends the read early).
   */
  header?: WALHeader;
  /**
   * The stored checksum of the frame before `offset`, when the caller has just read that frame
   * and found `salt1`/`salt2` in it: it seeds the running checksum without another read.
   */
  previousChecksum?: { checksum1: number; checksum2: number };
  /**
   * Gives the buffer the frames are read into (`bytes` long; its contents may be stale), for a
   * caller that reuses buffers across reads. Default: a new one each call.
   */
  allocate?: (bytes: number) => Uint8Array;
  /**
   * Up to this many bytes read from `offset` on are kept in one buffer (grown from a first
   * read of at most 1 MiB while its frames are all valid) and handed back as `frames`, so the
   * caller takes the pages from memory instead of reading them again. Default 1 MiB; beyond
   * it the WAL is read in chunks of this size into one reused buffer.
   */
  singleReadBytes?: number;
}

/** What {@linkcode readWAL} found. */
export interface WALReadResult {
  /** The WAL header (read from offset 0 even when resuming, unless given). */
  header: WALHeader;
  /** pgno → offset of the frame holding the latest committed copy of the page. */
  pageMap: Map<number, number>;
  /** Database size in pages after the last commit frame read; 0 when none. */
  commit: number;
  /** End of the last committed frame (`max(pageMap offsets) + frameSize`); 0 when none. */
  endOffset: number;
  /**
   * Reading stopped at `maxBytes`, after a commit frame: more committed frames may follow.
   * Otherwise it stopped at the end of the committed WAL (whatever the file holds after that
   * is an older generation's tail or a transaction still being written).
   */
  limited?: boolean;
  /** Salt-1 the frames were checked against (the header's, or the given one when resuming). */
  salt1: number;
  /** Salt-2 the frames were checked against. */
  salt2: number;
  /**
   * The bytes read, starting at `offset`, when one read held every frame that counts (the
   * usual small sync): the pages of `pageMap` can be taken from here instead of read again.
   */
  frames?: WALBytes;
}

/** Bytes of a WAL starting at file offset `offset`. */
export interface WALBytes {
  offset: number;
  bytes: Uint8Array;
}

/** Read the WAL in chunks of about this many bytes (whole frames), not frame by frame. */
const READ_CHUNK_BYTES = 1 << 20;

/** Frames beyond the file's size that the first chunk makes room for (appended meanwhile). */
const GROWTH_FRAMES = 8;

/**
 * Reads the committed frames of the WAL in `file`, starting at `options.offset`.
 *
 * Frames are read in order and reading stops, without error, at the first short read, salt
 * mismatch or checksum mismatch: anything after that belongs to an older WAL generation or is
 * still being written. Frames accumulate per transaction and count only once their commit
 * frame is read; pages beyond the final database size are dropped.
 *
 * When `offset > 32`, the frame before it is read without verifying its checksum: its salts
 * must equal `salt1`/`salt2`, and its stored checksum seeds the running checksum.
 *
 * @returns null when the file has no valid WAL header (shorter than 32 bytes, or the header
 * checksum fails).
 * @throws PrevFrameMismatchError when the frame before `offset` is missing or carries other
 * salts (the WAL restarted since): read again from offset 32.
 * @throws WALError on a bad magic or version, or an offset that is not a frame boundary.
 */
export async function readWAL(
  file: RandomAccessFile,
  options: WALReadOptions = {},
): Promise<WALReadResult | null> {
  const header = options.header ?? await readHeader(file);
  if (!header) return null;

  const { pageSize, bigEndianChecksums } = header;
  const frameSize = WAL_FRAME_HEADER_SIZE + pageSize;
  const startOffset = options.offset ?? WAL_HEADER_SIZE;
  if (
    !Number.isSafeInteger(startOffset) || startOffset < WAL_HEADER_SIZE ||
    (startOffset - WAL_HEADER_SIZE) % frameSize !== 0
  ) {
    throw new WALError(
      `unaligned WAL offset ${startOffset} for page size ${pageSize} ` +
        `(must be 32 + k × ${frameSize})`,
    );
  }

  let salt1 = header.salt1;
  let salt2 = header.salt2;
  let s0 = header.checksum1;
  let s1 = header.checksum2;
  if (startOffset > WAL_HEADER_SIZE) {
    if (options.salt1 === undefined || options.salt2 === undefined) {
      throw new WALError(`resuming the WAL at offset ${startOffset} needs the previous salts`);
    }
    salt1 = options.salt1 >>> 0;
    salt2 = options.salt2 >>> 0;
    const known = options.previousChecksum;
    [s0, s1] = known
      ? [known.checksum1 >>> 0, known.checksum2 >>> 0]
      : await seedFromPreviousFrame(file, startOffset - frameSize, frameSize, salt1, salt2);
  }

  const maxBytes = options.maxBytes ?? 0;
  const pageMap = new Map<number, number>();
  let txPages = new Map<number, number>();
  let commit = 0;

  // Sized to what the file holds, plus a few frames for a WAL still growing (a commit that
  // lands between the size and the read then still fits in one read, whose buffer the caller
  // can take over): a zeroed 1 MiB buffer per call cost a tenant's sync ~1 ms for a WAL of
  // three frames.
  const framesInFile = Math.ceil(Math.max(0, (await file.size()) - startOffset) / frameSize) +
    GROWTH_FRAMES;
  const fileBytes = framesInFile * frameSize;
  const wholeFrames = (bytes: number) => Math.max(1, Math.floor(bytes / frameSize)) * frameSize;
  /** Up to this many bytes from `startOffset` on stay in one buffer (returned as `frames`). */
  const keepBytes = wholeFrames(options.singleReadBytes ?? READ_CHUNK_BYTES);
  const allocate = options.allocate ?? ((bytes: number) => new Uint8Array(bytes));
  // The first read is at most a chunk even when more may be kept: a WAL restarted without
  // TRUNCATE keeps its old length, and a small sync must not read all of its stale tail.
  let buffer = allocate(Math.min(wholeFrames(READ_CHUNK_BYTES), keepBytes, fileBytes));
  let view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  let checksum = new FrameChecksum(buffer, bigEndianChecksums);
  /** File offset of `buffer[0]`. */
  let bufferOffset = startOffset;
  /** Bytes of `buffer` holding whole frames read; `readEnd`: bytes read into it at all. */
  let filled = 0;
  let readEnd = 0;
  /** Whether `buffer` still holds every byte read since `startOffset`. */
  let kept = true;
  let limited = false;
  // One read per chunk: a short one ends the valid WAL anyway, and learning that it was the
  // end from a second read (as readAt does) costs a round trip to a pool thread per sync.
  const read = file.readOnce?.bind(file) ?? file.readAt.bind(file);
  reading: for (;;) {
    if (filled === buffer.length) {
      // Full of valid frames. Grow while the caller wants the bytes kept (one copy of what
      // was read: cheaper than the caller reading every page again); then reuse the buffer.
      if (kept && buffer.length < keepBytes) {
        const bigger = allocate(Math.min(keepBytes, Math.max(2 * buffer.length, fileBytes)));
        bigger.set(buffer);
        buffer = bigger;
        view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
        checksum = new FrameChecksum(buffer, bigEndianChecksums);
      } else {
        kept = false;
        bufferOffset += filled;
        filled = 0;
      }
    }
    const wanted = buffer.length - filled;
    const n = await read(buffer.subarray(filled), bufferOffset + filled);
    const first = filled;
    readEnd = filled + n;
    const frames = Math.floor(n / frameSize);
    filled += frames * frameSize;
    for (let i = 0; i < frames; i++) {
      const at = first + i * frameSize;
      if (view.getUint32(at + 8) !== salt1 || view.getUint32(at + 12) !== salt2) break reading;
      checksum.s0 = s0;
      checksum.s1 = s1;
      checksum.update(at, at + 8);
      checksum.update(at + WAL_FRAME_HEADER_SIZE, at + frameSize);
      s0 = checksum.s0 >>> 0;
      s1 = checksum.s1 >>> 0;
      if (view.getUint32(at + 16) !== s0 || view.getUint32(at + 20) !== s1) break reading;

      const frameOffset = bufferOffset + at;
      txPages.set(view.getUint32(at), frameOffset);
      const frameCommit = view.getUint32(at + 4);
      if (frameCommit !== 0) {
        for (const [pgno, offset] of txPages) pageMap.set(pgno, offset);
        txPages = new Map();
        commit = frameCommit;
        if (maxBytes > 0 && frameOffset + frameSize - startOffset >= maxBytes) {
          limited = true;
          break reading;
        }
      }
    }
    // A short read (end of file, or a frame still being appended) ends the valid WAL.
    if (frames * frameSize < wanted) break;
  }

  // A shrink (VACUUM) between transactions leaves copies of pages past the final size.
  for (const pgno of pageMap.keys()) if (pgno > commit) pageMap.delete(pgno);
  if (pageMap.size === 0) {
    return { header, pageMap, commit: 0, endOffset: 0, salt1, salt2 };
  }
  let lastOffset = 0;
  for (const offset of pageMap.values()) if (offset > lastOffset) lastOffset = offset;
  const endOffset = lastOffset + frameSize;
  // The buffer is this call's (or the caller's, from `allocate`) and sized to the WAL: handing
  // it over costs nothing.
  const frames = kept ? { offset: startOffset, bytes: buffer.subarray(0, readEnd) } : undefined;
  return { header, pageMap, commit, endOffset, salt1, salt2, frames, limited };
}

const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * {@linkcode walChecksum} over ranges of one buffer without allocating per frame: the hot loop
 * of a sync (about 5 GB/s when the WAL's byte order is the host's).
 */
class FrameChecksum {
  s0 = 0;
  s1 = 0;
  readonly #words: Uint32Array | undefined;
  readonly #view: DataView;
  readonly #littleEndian: boolean;

  constructor(buffer: Uint8Array, bigEndian: boolean) {
    this.#littleEndian = !bigEndian;
    this.#view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    // Words in host order can be read as a Uint32Array (buffer starts 4-byte aligned).
    this.#words = this.#littleEndian === HOST_IS_LITTLE_ENDIAN && buffer.byteOffset % 4 === 0
      ? new Uint32Array(buffer.buffer, buffer.byteOffset, buffer.byteLength >>> 2)
      : undefined;
  }

  /** Adds bytes `start…end` (multiples of 8) to the running checksum. */
  update(start: number, end: number): void {
    let s0 = this.s0, s1 = this.s1;
    const words = this.#words;
    if (words) {
      for (let i = start >>> 2, last = end >>> 2; i < last; i += 2) {
        s0 = (s0 + words[i] + s1) | 0;
        s1 = (s1 + words[i + 1] + s0) | 0;
      }
    } else {
      const view = this.#view, littleEndian = this.#littleEndian;
      for (let i = start; i < end; i += 8) {
        s0 = (s0 + view.getUint32(i, littleEndian) + s1) | 0;
        s1 = (s1 + view.getUint32(i + 4, littleEndian) + s0) | 0;
      }
    }
    this.s0 = s0;
    this.s1 = s1;
  }
}

/**
 * Reads the whole frame at `offset` unverified and returns its stored checksum, the seed for
 * the frames after it.
 */
async function readHeader(file: RandomAccessFile): Promise<WALHeader | null> {
  const headerBytes = new Uint8Array(WAL_HEADER_SIZE);
  const headerLength = await file.readAt(headerBytes, 0);
  return parseWALHeader(headerBytes.subarray(0, headerLength));
}

async function seedFromPreviousFrame(
  file: RandomAccessFile,
  offset: number,
  frameSize: number,
  salt1: number,
  salt2: number,
): Promise<[number, number]> {
  const frame = new Uint8Array(frameSize);
  const n = await file.readAt(frame, offset);
  if (n < frameSize) {
    throw new PrevFrameMismatchError(
      `prev frame mismatch: the WAL ends before the frame at offset ${offset} is complete`,
    );
  }
  const prev = parseFrameHeader(frame);
  if (prev.salt1 !== salt1 || prev.salt2 !== salt2) {
    throw new PrevFrameMismatchError(
      `prev frame mismatch: the frame at offset ${offset} has salts ` +
        `${hex(prev.salt1)}/${hex(prev.salt2)}, expected ${hex(salt1)}/${hex(salt2)} ` +
        `(the WAL was restarted; read again from offset 32)`,
    );
  }
  return [prev.checksum1, prev.checksum2];
}

function hex(n: number): string {
  return n.toString(16).padStart(8, "0");
}
