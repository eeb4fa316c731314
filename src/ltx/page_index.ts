/**
 * Synchronous parsing of the end of an LTX file (FORMAT.md §1.6, §1.7): the page index, its length
 * field and the trailer. Lets a reader locate pages from the last few KiB of a file (as Go's
 * `FetchPageIndex` does) and is what the streaming decoder uses to check its frames.
 *
 * @module
 */

import { LTXFormatError } from "./errors.ts";
import { HEADER_SIZE, PAGE_HEADER_SIZE, type Trailer, TRAILER_SIZE } from "./header.ts";
import { getUvarint } from "./_varint.ts";

/** One page index entry: where a page frame is and how long it is. */
export interface PageIndexEntry {
  /** Page number. */
  pgno: number;
  /** Absolute file offset of the frame's 6-byte page header. */
  offset: number;
  /** Total frame size in bytes, page header included. */
  size: number;
}

/** The decoded end of a file. */
export interface PageIndex {
  /** Entries in file order (ascending pgno). */
  entries: PageIndexEntry[];
  /** Bytes of the varint region, terminator included (the stored length field). */
  indexLength: number;
  /** The last 16 bytes. */
  trailer: Trailer;
}

/** Options of {@linkcode decodePageIndex}. */
export interface DecodePageIndexOptions {
  /** The file, for error messages. */
  name?: string;
  /** Total file size: checks that the frames end right before the index. */
  fileSize?: number;
  /** `tail` starts exactly at the page index (right after the zero page header). */
  exact?: boolean;
  /**
   * Called with each entry (checked like the others) in place of collecting it: `entries` then
   * stays empty, so a streaming reader compares a large index without holding it as objects.
   */
  onEntry?: (i: number, pgno: number, offset: number, size: number) => void;
}

/** Bytes after the index region: the 8-byte length and the trailer. */
const END_SIZE = 8 + TRAILER_SIZE;

/** Reads the 16-byte trailer at the end of `bytes`. */
export function decodeTrailer(bytes: Uint8Array): Trailer {
  if (bytes.length < TRAILER_SIZE) {
    throw new LTXFormatError(`LTX trailer: ${bytes.length} bytes, expected ${TRAILER_SIZE}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  return {
    postApplyChecksum: view.getBigUint64(bytes.length - 16),
    fileChecksum: view.getBigUint64(bytes.length - 8),
  };
}

/**
 * Parses the page index from `tail`, the last bytes of a file (at least the index, its length
 * field and the trailer). Checks the length field, the terminator position and that entries
 * ascend; it does not verify the file checksum (that needs the whole file).
 * @throws {LTXFormatError} naming the file and the problem.
 */
export function decodePageIndex(
  tail: Uint8Array,
  options: DecodePageIndexOptions = {},
): PageIndex {
  const name = options.name ?? "LTX file";
  const fail = (why: string): never => {
    throw new LTXFormatError(`${name}: invalid page index: ${why}`);
  };
  if (tail.length < 1 + END_SIZE) {
    fail(`the file ends ${tail.length} bytes after the index start, too short for an index`);
  }
  const view = new DataView(tail.buffer, tail.byteOffset, tail.length);
  const lengthField = view.getBigUint64(tail.length - END_SIZE);
  const regionEnd = tail.length - END_SIZE;
  if (options.exact ? lengthField !== BigInt(regionEnd) : lengthField > BigInt(regionEnd)) {
    fail(
      options.exact
        ? `the length field says ${lengthField} bytes but ${regionEnd} bytes precede it ` +
          `(extra bytes after the trailer, or a damaged length)`
        : `the length field says ${lengthField} bytes, more than the ${regionEnd} bytes read`,
    );
  }
  const indexLength = Number(lengthField);
  if (indexLength < 1) fail("the length field is 0 (an index has at least its terminator)");
  const regionStart = regionEnd - indexLength;
  const indexOffset = options.fileSize === undefined
    ? undefined
    : options.fileSize - tail.length + regionStart;

  const entries: PageIndexEntry[] = [];
  const onEntry = options.onEntry;
  let count = 0;
  let pos = regionStart;
  let prevPgno = 0;
  let nextOffset = HEADER_SIZE;
  for (;;) {
    const pgno = getUvarint(tail, pos, regionEnd);
    if (pgno === null) fail(`malformed varint at index byte ${pos - regionStart}`);
    pos = pgno!.next;
    if (pgno!.value === 0) break;
    const offset = getUvarint(tail, pos, regionEnd);
    if (offset === null) fail(`malformed offset varint at index byte ${pos - regionStart}`);
    pos = offset!.next;
    const size = getUvarint(tail, pos, regionEnd);
    if (size === null) fail(`malformed size varint at index byte ${pos - regionStart}`);
    pos = size!.next;
    const entry = { pgno: pgno!.value, offset: offset!.value, size: size!.value };
    if (entry.pgno <= prevPgno || entry.pgno > 0xffffffff) {
      fail(`page ${entry.pgno} listed after page ${prevPgno}`);
    }
    // Frames are contiguous from the end of the header.
    if (entry.offset !== nextOffset) {
      fail(`page ${entry.pgno} at offset ${entry.offset}, expected ${nextOffset}`);
    }
    if (entry.size <= PAGE_HEADER_SIZE) {
      fail(`page ${entry.pgno} has an impossible size ${entry.size}`);
    }
    if (indexOffset !== undefined && entry.offset + entry.size > indexOffset) {
      fail(`page ${entry.pgno} (offset ${entry.offset}, size ${entry.size}) overlaps the index`);
    }
    nextOffset = entry.offset + entry.size;
    prevPgno = entry.pgno;
    if (onEntry) onEntry(count++, entry.pgno, entry.offset, entry.size);
    else entries.push(entry);
  }
  if (pos !== regionEnd) {
    fail(`${regionEnd - pos} bytes follow the terminator inside the index region`);
  }
  if (indexOffset !== undefined && nextOffset + PAGE_HEADER_SIZE !== indexOffset) {
    fail(`the page frames end at ${nextOffset}, but the index starts at ${indexOffset}`);
  }
  return { entries, indexLength, trailer: decodeTrailer(tail) };
}
