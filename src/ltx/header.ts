/**
 * The 100-byte LTX header (FORMAT.md §1.1), its validation rules, and the small shared types of the
 * format (trailer, page, page encoding, lock page).
 *
 * @module
 */

import { LTXError, LTXFormatError } from "./errors.ts";

/** Size of the file header in bytes. */
export const HEADER_SIZE = 100;
/** Size of the trailer (post-apply checksum, file checksum) in bytes. */
export const TRAILER_SIZE = 16;
/** Size of a page header (pgno u32, flags u16) in bytes. */
export const PAGE_HEADER_SIZE = 6;
/** Header flag: database checksums are not tracked (Litestream sets it on every file). */
export const HEADER_FLAG_NO_CHECKSUM = 0x2;
/** Legacy header flag of ltx ≤ 0.3 (whole body compressed); invalid in v0.5 files. */
export const LEGACY_HEADER_FLAG_COMPRESS_LZ4 = 0x1;
/** Page header flag: a 4-byte size and an LZ4 block follow (ltx ≥ 0.5.2). */
export const PAGE_FLAG_SIZE = 0x0001;

/** "frame": page flags 0, one LZ4 frame per page (every Litestream v0.5.x reads it).
 *  "block": page flags 1, size + LZ4 block (Litestream ≥ v0.5.16 only). */
export type PageEncoding = "frame" | "block";

/** The decoded file header. TXIDs, offsets and the timestamp are safe integers. */
export interface Header {
  /** Header flags; only {@linkcode HEADER_FLAG_NO_CHECKSUM} is allowed. */
  flags: number;
  /** Database page size: a power of two, 512…65536. */
  pageSize: number;
  /** Database size in pages after applying this file. */
  commit: number;
  /** First TXID covered (1 = a full snapshot). */
  minTXID: number;
  /** Last TXID covered. */
  maxTXID: number;
  /** Milliseconds since the Unix epoch when the file was written. */
  timestamp: number;
  /** Rolling database checksum before applying; 0 for snapshots and NoChecksum files. */
  preApplyChecksum: bigint;
  /** Byte offset in the source WAL where this file's frames start; 0 when not from a WAL. */
  walOffset: number;
  /** Bytes of WAL covered; 0 when `walOffset` is 0. */
  walSize: number;
  /** WAL header salt 1 at the time (u32). */
  walSalt1: number;
  /** WAL header salt 2 at the time (u32). */
  walSalt2: number;
  /** LiteFS node id; Litestream and sluice write 0. */
  nodeID: bigint;
}

/** The last 16 bytes of a file. */
export interface Trailer {
  /** Rolling database checksum after applying; 0 for NoChecksum files. */
  postApplyChecksum: bigint;
  /** CRC-64/GO-ISO of the file (FORMAT.md §1.8) with bit 63 set. */
  fileChecksum: bigint;
}

/** One database page; `data.length` equals the page size. */
export interface Page {
  /** Page number, from 1. */
  pgno: number;
  /** The page bytes. */
  data: Uint8Array;
}

const MAGIC = [0x4c, 0x54, 0x58, 0x31]; // "LTX1"
const U64_MAX = 0xffffffffffffffffn;
const CHECKSUM_BIT = 0x8000000000000000n;

/** A snapshot (every page 1…commit) is exactly a file whose MinTXID is 1. */
export function isSnapshot(h: Header): boolean {
  return h.minTXID === 1;
}

/** SQLite's lock page (the one holding PENDING_BYTE), never stored: `floor(2^30/size) + 1`. */
export function lockPageNumber(pageSize: number): number {
  return Math.floor(0x40000000 / pageSize) + 1;
}

/**
 * Checks that a run of pages given to an encoder's `encodePages` holds whole pages.
 * @throws {LTXError} when `bytes` is not `count` pages of `pageSize`.
 */
export function checkRun(name: string, count: number, bytes: number, pageSize: number): void {
  if (!Number.isInteger(count) || count < 0 || bytes !== count * pageSize) {
    throw new LTXError(
      `${name}: encodePages(): ${bytes} bytes are not ${count} pages of ${pageSize} bytes`,
    );
  }
}

/**
 * Checks that page `pgno` of `size` bytes may come next in a file with `header`, after page
 * `prevPgno` (0 before the first): the rules of FORMAT.md §1.4 that every encoder enforces.
 * @throws {LTXFormatError} on a wrong size, pgno 0, the lock page, a pgno above Commit, a page
 *   out of order, or a gap in a snapshot; the message starts with `name`.
 */
export function checkNextPage(
  header: Header,
  name: string,
  pgno: number,
  size: number,
  prevPgno: number,
): void {
  const fail = (why: string): never => {
    throw new LTXFormatError(`${name}: cannot encode page ${pgno}: ${why}`);
  };
  const lockPage = lockPageNumber(header.pageSize);
  if (!Number.isInteger(pgno) || pgno < 1 || pgno > 0xffffffff) fail("not a page number");
  if (size !== header.pageSize) fail(`${size} bytes, the page size is ${header.pageSize}`);
  if (pgno === lockPage) fail("it is the lock page, which is never stored");
  if (pgno > header.commit) fail(`it is beyond Commit ${header.commit}`);
  if (pgno <= prevPgno) fail(`pages must ascend (the previous one was ${prevPgno})`);
  if (isSnapshot(header)) {
    const expected = prevPgno + 1 === lockPage ? prevPgno + 2 : prevPgno + 1;
    if (pgno !== expected) fail(`a snapshot needs every page; page ${expected} comes next`);
  }
}

/** Whether `n` is a valid page size: a power of two from 512 to 65536 inclusive. */
export function isValidPageSize(n: number): boolean {
  return Number.isInteger(n) && n >= 512 && n <= 65536 && (n & (n - 1)) === 0;
}

function isU32(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= 0xffffffff;
}

function isU64(n: bigint): boolean {
  return typeof n === "bigint" && n >= 0n && n <= U64_MAX;
}

function hex64(n: bigint): string {
  return `0x${n.toString(16).padStart(16, "0")}`;
}

/** Where messages start: "<name>: " or nothing. */
function prefix(name: string | undefined): string {
  return name ? `${name}: ` : "";
}

/**
 * Checks the header rules of FORMAT.md §1.1 (the same as Go's `Header.Validate`) plus the ranges
 * sluice needs (safe integers, u32 fields).
 * @param name the file, for the error message.
 * @throws {LTXFormatError} naming the rule that fails.
 */
export function validateHeader(h: Header, name?: string): void {
  const fail = (why: string): never => {
    throw new LTXFormatError(`${prefix(name)}invalid LTX header: ${why}`);
  };
  if (!isU32(h.flags)) fail(`flags ${h.flags} is not a u32`);
  if ((h.flags & LEGACY_HEADER_FLAG_COMPRESS_LZ4) !== 0) {
    fail(
      `legacy flag CompressLZ4 (0x1) is set: this is a pre-v0.5 (ltx v1) LTX file, which ` +
        `sluice does not support; take a new snapshot with sluice or Litestream v0.5`,
    );
  }
  if ((h.flags & ~HEADER_FLAG_NO_CHECKSUM) !== 0) {
    fail(`invalid flags 0x${h.flags.toString(16).padStart(8, "0")} (only 0x00000002 is allowed)`);
  }
  if (!isValidPageSize(h.pageSize)) {
    fail(`invalid page size ${h.pageSize} (a power of two from 512 to 65536)`);
  }
  if (!isU32(h.commit)) fail(`commit ${h.commit} is not a u32`);
  for (const [field, value] of [["MinTXID", h.minTXID], ["MaxTXID", h.maxTXID]] as const) {
    if (!Number.isSafeInteger(value) || value < 0) {
      fail(`${field} ${value} is not an integer from 0 to 2^53 − 1`);
    }
  }
  if (h.minTXID === 0) fail("MinTXID is 0 (TXIDs start at 1)");
  if (h.maxTXID === 0) fail("MaxTXID is 0 (TXIDs start at 1)");
  if (h.minTXID > h.maxTXID) fail(`MinTXID ${h.minTXID} is above MaxTXID ${h.maxTXID}`);
  if (!Number.isSafeInteger(h.timestamp)) fail(`timestamp ${h.timestamp} is not a safe integer`);
  if (!Number.isSafeInteger(h.walOffset) || h.walOffset < 0) {
    fail(`WAL offset ${h.walOffset} is negative or not a safe integer`);
  }
  if (!Number.isSafeInteger(h.walSize) || h.walSize < 0) {
    fail(`WAL size ${h.walSize} is negative or not a safe integer`);
  }
  if (!isU32(h.walSalt1) || !isU32(h.walSalt2)) fail("WAL salts must be u32 values");
  if ((h.walSalt1 !== 0 || h.walSalt2 !== 0) && h.walOffset === 0) {
    fail("WAL salts are set but the WAL offset is 0");
  }
  if (h.walOffset === 0 && h.walSize !== 0) fail("WAL size is set but the WAL offset is 0");
  if (!isU64(h.nodeID)) fail(`node id ${h.nodeID} is not a u64`);
  if (!isU64(h.preApplyChecksum)) fail(`pre-apply checksum ${h.preApplyChecksum} is not a u64`);
  if (isSnapshot(h)) {
    if (h.preApplyChecksum !== 0n) {
      fail(`pre-apply checksum ${hex64(h.preApplyChecksum)} must be 0 in a snapshot`);
    }
  } else if ((h.flags & HEADER_FLAG_NO_CHECKSUM) !== 0) {
    if (h.preApplyChecksum !== 0n) {
      fail(`pre-apply checksum ${hex64(h.preApplyChecksum)} must be 0 with the NoChecksum flag`);
    }
  } else if ((h.preApplyChecksum & CHECKSUM_BIT) === 0n) {
    fail(`pre-apply checksum ${hex64(h.preApplyChecksum)} must be non-zero with bit 63 set`);
  }
}

/**
 * Encodes a header into its 100 bytes (reserved bytes zero).
 * @throws {LTXFormatError} when the header breaks a rule of FORMAT.md §1.1.
 */
export function encodeHeader(h: Header): Uint8Array {
  validateHeader(h);
  const bytes = new Uint8Array(HEADER_SIZE);
  const view = new DataView(bytes.buffer);
  bytes.set(MAGIC, 0);
  view.setUint32(4, h.flags);
  view.setUint32(8, h.pageSize);
  view.setUint32(12, h.commit);
  view.setBigUint64(16, BigInt(h.minTXID));
  view.setBigUint64(24, BigInt(h.maxTXID));
  view.setBigInt64(32, BigInt(h.timestamp));
  view.setBigUint64(40, h.preApplyChecksum);
  view.setBigInt64(48, BigInt(h.walOffset));
  view.setBigInt64(56, BigInt(h.walSize));
  view.setUint32(64, h.walSalt1);
  view.setUint32(68, h.walSalt2);
  view.setBigUint64(72, h.nodeID);
  return bytes;
}

/** A u64/i64 field as a number, or a format error when it is not a safe integer. */
function safeNumber(value: bigint, field: string, name?: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
    throw new LTXFormatError(
      `${prefix(name)}invalid LTX header: ${field} ${value} is above 2^53 − 1, which sluice ` +
        `does not support`,
    );
  }
  return Number(value);
}

/**
 * Decodes and validates the first 100 bytes of an LTX file.
 * @param name the file, for error messages.
 * @throws {LTXFormatError} on a short buffer, bad magic, or a broken rule of FORMAT.md §1.1.
 */
export function decodeHeader(bytes: Uint8Array, name?: string): Header {
  if (bytes.length < HEADER_SIZE) {
    throw new LTXFormatError(
      `${
        prefix(name)
      }not an LTX file: ${bytes.length} bytes, shorter than the ${HEADER_SIZE}-byte ` +
        `header`,
    );
  }
  if (MAGIC.some((b, i) => bytes[i] !== b)) {
    throw new LTXFormatError(`${prefix(name)}not an LTX file: the magic is not "LTX1"`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, HEADER_SIZE);
  const header: Header = {
    flags: view.getUint32(4),
    pageSize: view.getUint32(8),
    commit: view.getUint32(12),
    minTXID: safeNumber(view.getBigUint64(16), "MinTXID", name),
    maxTXID: safeNumber(view.getBigUint64(24), "MaxTXID", name),
    timestamp: safeNumber(view.getBigInt64(32), "timestamp", name),
    preApplyChecksum: view.getBigUint64(40),
    walOffset: safeNumber(view.getBigInt64(48), "WAL offset", name),
    walSize: safeNumber(view.getBigInt64(56), "WAL size", name),
    walSalt1: view.getUint32(64),
    walSalt2: view.getUint32(68),
    nodeID: view.getBigUint64(72),
  };
  validateHeader(header, name);
  return header;
}

/**
 * Checks the trailer rules (Go's `Trailer.Validate`, which Go runs only when encoding): the
 * post-apply checksum is 0 with NoChecksum and has bit 63 set otherwise; the file checksum has
 * bit 63 set.
 * @throws {LTXFormatError} naming the rule that fails.
 */
export function validateTrailer(h: Header, t: Trailer, name?: string): void {
  if ((h.flags & HEADER_FLAG_NO_CHECKSUM) !== 0) {
    if (t.postApplyChecksum !== 0n) {
      throw new LTXFormatError(
        `${prefix(name)}invalid LTX trailer: post-apply checksum ` +
          `${hex64(t.postApplyChecksum)} must be 0 with the NoChecksum flag`,
      );
    }
  } else if ((t.postApplyChecksum & CHECKSUM_BIT) === 0n) {
    throw new LTXFormatError(
      `${prefix(name)}invalid LTX trailer: post-apply checksum ` +
        `${hex64(t.postApplyChecksum)} must have bit 63 set`,
    );
  }
  if ((t.fileChecksum & CHECKSUM_BIT) === 0n) {
    throw new LTXFormatError(
      `${prefix(name)}invalid LTX trailer: file checksum ${hex64(t.fileChecksum)} must have ` +
        `bit 63 set`,
    );
  }
}
