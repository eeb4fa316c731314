/**
 * The SQLite WAL file format as Litestream reads it (FORMAT.md §4.1): the 32-byte header, the 24-byte
 * frame headers and the running checksum that chains every frame to the one before it.
 *
 * @module
 */

import type { RandomAccessFile } from "./file.ts";

/** Size of the WAL header at the start of the `-wal` file. */
export const WAL_HEADER_SIZE = 32;
/** Size of the header in front of every page in the WAL. */
export const WAL_FRAME_HEADER_SIZE = 24;

/** Magic with checksum words read little-endian (what x86 SQLite writes). */
const MAGIC_LITTLE_ENDIAN = 0x377f0682;
/** Magic with checksum words read big-endian. */
const MAGIC_BIG_ENDIAN = 0x377f0683;
/** The only WAL format version SQLite has ever written. */
const WAL_VERSION = 3007000;

/** Base class of every error about a WAL file's contents. */
export class WALError extends Error {
  /** @param message what is wrong, naming the file when known */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "WALError";
  }
}

/**
 * The frame just before a resume offset no longer carries the salts saved with the last sync:
 * the WAL was restarted or rewritten since. The caller restarts from offset 32 (or snapshots).
 */
export class PrevFrameMismatchError extends WALError {
  /** @param message what did not match */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "PrevFrameMismatchError";
  }
}

/** The decoded 32-byte WAL header. All numbers are unsigned 32-bit values. */
export interface WALHeader {
  /** Magic 0x377f0683: checksum words are read big-endian (else little-endian). */
  bigEndianChecksums: boolean;
  /** Format version, always 3007000. */
  version: number;
  /** Page size as stored; 65536 is stored literally (unlike the database header). */
  pageSize: number;
  /** Checkpoint sequence number, bumped on every WAL restart. */
  checkpointSeq: number;
  /** Salt-1: incremented on every WAL restart. */
  salt1: number;
  /** Salt-2: randomised on every WAL restart. */
  salt2: number;
  /** Header checksum, first word; seeds the checksum of frame 0. */
  checksum1: number;
  /** Header checksum, second word. */
  checksum2: number;
}

/** The decoded 24-byte header in front of one page in the WAL. */
export interface WALFrameHeader {
  /** Page number the frame holds. */
  pgno: number;
  /** Database size in pages after this commit, or 0 when this is not a commit frame. */
  commit: number;
  /** Must equal the WAL header's salt-1 for the frame to be valid. */
  salt1: number;
  /** Must equal the WAL header's salt-2 for the frame to be valid. */
  salt2: number;
  /** Running checksum after this frame, first word. */
  checksum1: number;
  /** Running checksum after this frame, second word. */
  checksum2: number;
}

const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * SQLite's WAL checksum (`walChecksumBytes`) over `data`, continuing from `(s0, s1)`: for each
 * 8-byte unit `(x0, x1)` read in the WAL's byte order, `s0 += x0 + s1; s1 += x1 + s0`, wrapping
 * at 32 bits. Returns the new pair as unsigned numbers.
 *
 * @throws RangeError when `data.length` is not a multiple of 8.
 */
export function walChecksum(
  bigEndian: boolean,
  data: Uint8Array,
  s0: number,
  s1: number,
): [number, number] {
  if (data.length % 8 !== 0) {
    throw new RangeError(`WAL checksum input must be a multiple of 8 bytes, got ${data.length}`);
  }
  s0 |= 0;
  s1 |= 0;
  if (bigEndian !== HOST_IS_LITTLE_ENDIAN && data.byteOffset % 4 === 0) {
    // Fast path: the words are in host order and aligned, so read them as a Uint32Array.
    const words = new Uint32Array(data.buffer, data.byteOffset, data.length >>> 2);
    for (let i = 0; i < words.length; i += 2) {
      s0 = (s0 + words[i] + s1) | 0;
      s1 = (s1 + words[i + 1] + s0) | 0;
    }
  } else {
    const view = new DataView(data.buffer, data.byteOffset, data.length);
    const littleEndian = !bigEndian;
    for (let i = 0; i < data.length; i += 8) {
      s0 = (s0 + view.getUint32(i, littleEndian) + s1) | 0;
      s1 = (s1 + view.getUint32(i + 4, littleEndian) + s0) | 0;
    }
  }
  return [s0 >>> 0, s1 >>> 0];
}

function isValidPageSize(n: number): boolean {
  return n >= 512 && n <= 65536 && (n & (n - 1)) === 0;
}

/**
 * Decodes a WAL header with Litestream's rules: fewer than 32 bytes or a header whose checksum
 * does not match means "no WAL" (a checkpoint may have been rewriting it) and gives null.
 *
 * @throws WALError on a bad magic, an unsupported version or an impossible page size.
 */
export function parseWALHeader(bytes: Uint8Array): WALHeader | null {
  if (bytes.length < WAL_HEADER_SIZE) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, WAL_HEADER_SIZE);
  const magic = view.getUint32(0);
  if (magic !== MAGIC_LITTLE_ENDIAN && magic !== MAGIC_BIG_ENDIAN) {
    throw new WALError(
      `invalid WAL header magic: ${magic.toString(16)} (expected 377f0682 or 377f0683); ` +
        `the -wal file is not a SQLite WAL`,
    );
  }
  const bigEndianChecksums = magic === MAGIC_BIG_ENDIAN;
  const checksum1 = view.getUint32(24);
  const checksum2 = view.getUint32(28);
  const [c1, c2] = walChecksum(bigEndianChecksums, bytes.subarray(0, 24), 0, 0);
  if (c1 !== checksum1 || c2 !== checksum2) return null;
  const version = view.getUint32(4);
  if (version !== WAL_VERSION) {
    throw new WALError(`unsupported WAL version: ${version} (expected ${WAL_VERSION})`);
  }
  const pageSize = view.getUint32(8);
  if (!isValidPageSize(pageSize)) {
    throw new WALError(`invalid WAL page size: ${pageSize} (a power of two from 512 to 65536)`);
  }
  return {
    bigEndianChecksums,
    version,
    pageSize,
    checkpointSeq: view.getUint32(12),
    salt1: view.getUint32(16),
    salt2: view.getUint32(20),
    checksum1,
    checksum2,
  };
}

/** Decodes a 24-byte frame header from `bytes` (no verification). */
export function parseFrameHeader(bytes: Uint8Array): WALFrameHeader {
  if (bytes.length < WAL_FRAME_HEADER_SIZE) {
    throw new RangeError(`a WAL frame header is 24 bytes, got ${bytes.length}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, WAL_FRAME_HEADER_SIZE);
  return {
    pgno: view.getUint32(0),
    commit: view.getUint32(4),
    salt1: view.getUint32(8),
    salt2: view.getUint32(12),
    checksum1: view.getUint32(16),
    checksum2: view.getUint32(20),
  };
}

/**
 * Reads the frame header at `offset` without verifying it (salts and checksum are returned for
 * the caller to compare). Null when fewer than 24 bytes exist there.
 */
export async function readFrameHeader(
  file: RandomAccessFile,
  offset: number,
): Promise<WALFrameHeader | null> {
  const bytes = new Uint8Array(WAL_FRAME_HEADER_SIZE);
  const n = await file.readAt(bytes, offset);
  return n < WAL_FRAME_HEADER_SIZE ? null : parseFrameHeader(bytes);
}
