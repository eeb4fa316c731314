/**
 * The two page encodings of FORMAT.md §1.3 and §1.5: writing them into an output buffer, and reading
 * them from a {@linkcode ByteReader} with every length and checksum checked.
 *
 * - block (page flags 1): u32 BE size N, then one LZ4 block of N bytes;
 * - frame (page flags 0): one LZ4 frame with exactly the parameters Go ltx v0.5.0/v0.5.1 wrote:
 *   64 KiB independent blocks, content checksum, no content size, no dictionary, one block,
 *   stored raw (size bit 31) when compression does not make it smaller.
 *
 * The encoder writes through the WebAssembly codec (`encodePageFrame` in _codec.ts); the
 * decoder reads with {@linkcode readBlockPage} and {@linkcode readFramePage}, which decode in
 * WebAssembly too. The TypeScript writers and readers here are the reference that tests compare
 * the WebAssembly codec against, and the readers also handle the rare frames that are not Go's
 * exact layout.
 *
 * @module
 */

import type { ByteReader } from "./_byte_reader.ts";
import { compressBlock, compressBound, decompressBlock, LZ4CorruptError } from "./_lz4_block.ts";
import { xxh32 } from "./_xxh32.ts";
import {
  crc64Update,
  decodedXXH32,
  decodePageInto,
  pageChecksum,
  type PageDigest,
  referenceCodec,
} from "./_codec.ts";

/** Magic, FLG (version 1, independent blocks, content checksum), BD (64 KiB), HC. */
const FRAME_HEADER = Uint8Array.of(0x04, 0x22, 0x4d, 0x18, 0x64, 0x40, 0xa7);
const FRAME_MAGIC = 0x184d2204;
/** Bytes a frame adds to its block: header 7, block size 4, end mark 4, content checksum 4. */
const FRAME_OVERHEAD = 19;
/** Bit 31 of an LZ4 frame block size: the block is stored uncompressed. */
const RAW_BLOCK = 0x80000000;
/** Block max sizes by the BD index 4…7. */
const BLOCK_MAX_SIZES = [65536, 262144, 1048576, 4194304];

/** Largest payload (after the 6-byte page header) either encoding can produce for a page. */
export function maxPayloadSize(pageSize: number): number {
  return Math.max(4 + compressBound(pageSize), FRAME_OVERHEAD + pageSize);
}

function putU32LE(b: Uint8Array, pos: number, v: number): void {
  b[pos] = v & 0xff;
  b[pos + 1] = (v >>> 8) & 0xff;
  b[pos + 2] = (v >>> 16) & 0xff;
  b[pos + 3] = v >>> 24;
}

function getU32LE(b: Uint8Array, pos: number): number {
  return (b[pos] | (b[pos + 1] << 8) | (b[pos + 2] << 16) | (b[pos + 3] << 24)) >>> 0;
}

/**
 * Writes the block payload (u32 BE size + LZ4 block) of `page` at `pos`. Needs
 * `4 + compressBound(page.length)` bytes of room.
 * @returns the payload size.
 */
export function writeBlockPayload(page: Uint8Array, dst: Uint8Array, pos: number): number {
  const n = compressBlock(page, dst, pos + 4);
  dst[pos] = n >>> 24;
  dst[pos + 1] = (n >>> 16) & 0xff;
  dst[pos + 2] = (n >>> 8) & 0xff;
  dst[pos + 3] = n & 0xff;
  return 4 + n;
}

/**
 * Writes `page` as one LZ4 frame at `pos`, byte-compatible with Go ltx v0.5.0/v0.5.1.
 * Needs `maxPayloadSize(page.length)` bytes of room.
 * @returns the frame size.
 */
export function writeFramePayload(page: Uint8Array, dst: Uint8Array, pos: number): number {
  dst.set(FRAME_HEADER, pos);
  let at = pos + FRAME_HEADER.length;
  const n = compressBlock(page, dst, at + 4);
  if (n < page.length) {
    putU32LE(dst, at, n);
    at += 4 + n;
  } else {
    // Incompressible: a stored block, which also keeps the block within 64 KiB.
    putU32LE(dst, at, (page.length | RAW_BLOCK) >>> 0);
    dst.set(page, at + 4);
    at += 4 + page.length;
  }
  putU32LE(dst, at, 0); // end mark
  putU32LE(dst, at + 4, xxh32(page));
  return at + 8 - pos;
}

/** Thrown by the readers below; the decoder adds the file name and the page. */
export class PagePayloadError extends Error {
  /** `truncated` tells a premature end of the stream from malformed bytes. */
  constructor(message: string, readonly truncated = false) {
    super(message);
    this.name = "PagePayloadError";
  }
}

async function need(reader: ByteReader, n: number, what: string): Promise<void> {
  if (!(await reader.fill(n))) {
    throw new PagePayloadError(`file ends inside ${what}`, true);
  }
}

function decompress(
  src: Uint8Array,
  dst: Uint8Array,
  dstPos: number,
  windowStart: number,
  dstEnd: number = dst.length,
): number {
  try {
    return decompressBlock(src, 0, src.length, dst, dstPos, dstEnd, windowStart);
  } catch (err) {
    if (err instanceof LZ4CorruptError) throw new PagePayloadError(err.message);
    throw err;
  }
}

/**
 * Reads a block payload into `page` (its length is the page size).
 * @returns the 4-byte size field as stored (it is part of the file checksum).
 * @throws {PagePayloadError} on a bad size, malformed LZ4 or a wrong decompressed length.
 */
export async function readBlockPayload(reader: ByteReader, page: Uint8Array): Promise<Uint8Array> {
  await need(reader, 4, "a page size field");
  // A copy: a view of the reader's bytes is not kept across a fill (the chunk may be reused).
  const sizeField = reader.take(4).slice();
  const n = ((sizeField[0] << 24) | (sizeField[1] << 16) | (sizeField[2] << 8) | sizeField[3]) >>>
    0;
  if (n === 0 || n > compressBound(page.length)) {
    throw new PagePayloadError(
      `compressed size ${n} is impossible for a ${page.length}-byte page ` +
        `(1…${compressBound(page.length)})`,
    );
  }
  await need(reader, n, "an LZ4 block");
  const end = decompress(reader.take(n), page, 0, 0);
  if (end !== page.length) {
    throw new PagePayloadError(
      `LZ4 block decompresses to ${end} bytes, not the page size ${page.length}`,
    );
  }
  return sizeField;
}

/**
 * Reads one complete LZ4 frame into `page`. Accepts any standard frame (content size, block
 * checksums, linked or several blocks) as long as it yields exactly the page; checks the header
 * checksum and every block and content checksum present.
 * @throws {PagePayloadError} on anything else.
 */
export async function readFramePayload(reader: ByteReader, page: Uint8Array): Promise<void> {
  await need(reader, 7, "an LZ4 frame header");
  let head = reader.peek(7);
  if (getU32LE(head, 0) !== FRAME_MAGIC) {
    throw new PagePayloadError(
      `no LZ4 frame magic (found 0x${getU32LE(head, 0).toString(16).padStart(8, "0")})`,
    );
  }
  const flg = head[4];
  const bd = head[5];
  if (flg >>> 6 !== 1) throw new PagePayloadError(`unsupported LZ4 frame version ${flg >>> 6}`);
  if ((flg & 0x02) !== 0 || (bd & 0x8f) !== 0) {
    throw new PagePayloadError("LZ4 frame descriptor has reserved bits set");
  }
  if ((flg & 0x01) !== 0) {
    throw new PagePayloadError("LZ4 frame uses a dictionary, which LTX pages never do");
  }
  const blockIndex = (bd >>> 4) & 7;
  if (blockIndex < 4) throw new PagePayloadError(`invalid LZ4 block max size index ${blockIndex}`);
  const blockMax = BLOCK_MAX_SIZES[blockIndex - 4];
  const independent = (flg & 0x20) !== 0;
  const blockChecksums = (flg & 0x10) !== 0;
  const hasContentSize = (flg & 0x08) !== 0;
  const contentChecksum = (flg & 0x04) !== 0;
  const headerLength = 7 + (hasContentSize ? 8 : 0);
  await need(reader, headerLength, "an LZ4 frame header");
  head = reader.take(headerLength);
  const hc = (xxh32(head, 4, headerLength - 1) >>> 8) & 0xff;
  if (hc !== head[headerLength - 1]) throw new PagePayloadError("LZ4 frame header checksum fails");
  if (hasContentSize) {
    const size = getU32LE(head, 6) + getU32LE(head, 10) * 2 ** 32;
    if (size !== page.length) {
      throw new PagePayloadError(`LZ4 frame content size ${size} is not the page size`);
    }
  }

  const limit = Math.min(blockMax, compressBound(page.length));
  let pos = 0;
  for (;;) {
    await need(reader, 4, "an LZ4 frame block size");
    const sizeWord = getU32LE(reader.take(4), 0);
    if (sizeWord === 0) break; // end mark
    const raw = (sizeWord & RAW_BLOCK) !== 0;
    const n = sizeWord & 0x7fffffff;
    if (n > limit) {
      throw new PagePayloadError(`LZ4 frame block of ${n} bytes is larger than a page allows`);
    }
    const total = n + (blockChecksums ? 4 : 0);
    await need(reader, total, "an LZ4 frame block");
    const taken = reader.take(total);
    const data = taken.subarray(0, n);
    if (blockChecksums && getU32LE(taken, n) !== xxh32(data)) {
      throw new PagePayloadError("LZ4 frame block checksum fails");
    }
    if (raw) {
      if (n > page.length - pos) {
        throw new PagePayloadError("LZ4 frame decompresses to more bytes than the page size");
      }
      page.set(data, pos);
      pos += n;
    } else {
      pos = decompress(data, page, pos, independent ? pos : 0);
    }
  }
  if (pos !== page.length) {
    throw new PagePayloadError(
      `LZ4 frame decompresses to ${pos} bytes, not the page size ${page.length}`,
    );
  }
  if (contentChecksum) {
    await need(reader, 4, "an LZ4 frame content checksum");
    if (getU32LE(reader.take(4), 0) !== xxh32(page)) {
      throw new PagePayloadError("LZ4 frame content checksum fails");
    }
  }
}

/** {@linkcode decodePageInto} with the LZ4 decoder's errors as {@linkcode PagePayloadError}. */
function decodeOrThrow(
  pgno: number,
  pageSize: number,
  block: Uint8Array,
  raw: boolean,
  digest: PageDigest,
  withXXH32: boolean,
  into: Uint8Array,
  at: number,
): number {
  try {
    return decodePageInto(pgno, pageSize, block, raw, digest, withXXH32, into, at);
  } catch (err) {
    if (err instanceof LZ4CorruptError) throw new PagePayloadError(err.message);
    throw err;
  }
}

/**
 * Decodes page `pgno` from a block payload in WebAssembly into `into` at `at` when all of it is
 * buffered, with the checks and messages of {@linkcode readBlockPayload}, and feeds the size
 * field and the page into `digest`. Synchronous: the decoder calls it first and awaits
 * {@linkcode readBlockPage} only when it returns false.
 * @returns true when the page was decoded; false (nothing consumed) when bytes are missing.
 * @throws {PagePayloadError} on a bad size, malformed LZ4 or a wrong decompressed length.
 */
export function decodeBufferedBlockPage(
  reader: ByteReader,
  pgno: number,
  pageSize: number,
  digest: PageDigest,
  into: Uint8Array,
  at: number,
): boolean {
  if (referenceCodec || reader.buffered < 4) return false;
  const n = blockSize(reader.peek(4), pageSize);
  if (reader.buffered < 4 + n) return false;
  crc64Update(digest.crc, reader.take(4));
  decodeBlock(pgno, pageSize, reader.take(n), digest, into, at);
  return true;
}

/** The size in a block payload's size field, checked against the page size. */
function blockSize(sizeField: Uint8Array, pageSize: number): number {
  const n = ((sizeField[0] << 24) | (sizeField[1] << 16) | (sizeField[2] << 8) | sizeField[3]) >>>
    0;
  if (n === 0 || n > compressBound(pageSize)) {
    throw new PagePayloadError(
      `compressed size ${n} is impossible for a ${pageSize}-byte page ` +
        `(1…${compressBound(pageSize)})`,
    );
  }
  return n;
}

/**
 * Decodes a block payload's page into `into` at `at` (the reference codec decodes in place);
 * the caller fed the size field into `digest`.
 */
function decodeBlock(
  pgno: number,
  pageSize: number,
  block: Uint8Array,
  digest: PageDigest,
  into: Uint8Array,
  at: number,
): void {
  const length = referenceCodec
    ? decompress(block, into, at, at, at + pageSize) - at
    : decodeOrThrow(pgno, pageSize, block, false, digest, false, into, at);
  if (length !== pageSize) {
    throw new PagePayloadError(
      `LZ4 block decompresses to ${length} bytes, not the page size ${pageSize}`,
    );
  }
  if (referenceCodec) digestReference(pgno, into.subarray(at, at + pageSize), digest);
}

/**
 * Reads a block payload and decodes page `pgno` in WebAssembly into `into` at `at`, with the
 * checks and messages of {@linkcode readBlockPayload}. Feeds the size field and the page into
 * `digest`.
 * @throws {PagePayloadError} on a bad size, malformed LZ4 or a wrong decompressed length.
 */
export async function readBlockPage(
  reader: ByteReader,
  pgno: number,
  pageSize: number,
  digest: PageDigest,
  into: Uint8Array,
  at: number,
): Promise<void> {
  await need(reader, 4, "a page size field");
  const sizeField = reader.take(4);
  const n = blockSize(sizeField, pageSize);
  // Before the fill: a view of the reader's bytes is not kept across one.
  crc64Update(digest.crc, sizeField);
  await need(reader, n, "an LZ4 block");
  // Synchronous from here: the codec's memory is shared with other decoders.
  decodeBlock(pgno, pageSize, reader.take(n), digest, into, at);
}

function isGoFrameHeader(b: Uint8Array): boolean {
  const h = FRAME_HEADER;
  return b[0] === h[0] && b[1] === h[1] && b[2] === h[2] && b[3] === h[3] && b[4] === h[4] &&
    b[5] === h[5] && b[6] === h[6];
}

/** Bytes around the block of Go's frame layout: header 7 and block size 4; end mark and checksum 8. */
const GO_FRAME_HEAD = 11;
const GO_FRAME_TAIL = 8;

/**
 * Decodes page `pgno` from a frame of exactly Go's layout (FRAME_HEADER, one block, content
 * checksum) in WebAssembly into `into` at `at` when all of it is buffered, with the checks and
 * messages of {@linkcode readFramePayload}, and feeds the page into `digest`. Synchronous: the
 * decoder calls it first and awaits {@linkcode readFramePage} only when it returns false.
 * @returns true when the page was decoded; false (nothing consumed) for another layout or
 * missing bytes.
 * @throws {PagePayloadError} when the frame is damaged.
 */
export function decodeBufferedFramePage(
  reader: ByteReader,
  pgno: number,
  pageSize: number,
  digest: PageDigest,
  into: Uint8Array,
  at: number,
): boolean {
  if (referenceCodec || reader.buffered < GO_FRAME_HEAD) return false;
  const head = reader.peek(GO_FRAME_HEAD);
  const sizeWord = getU32LE(head, FRAME_HEADER.length);
  const n = sizeWord & 0x7fffffff;
  const length = GO_FRAME_HEAD + n + GO_FRAME_TAIL;
  if (
    !isGoFrameHeader(head) || sizeWord === 0 || n > goFrameBlockLimit(pageSize) ||
    reader.buffered < length
  ) {
    return false;
  }
  const frame = reader.peek(length);
  if (getU32LE(frame, GO_FRAME_HEAD + n) !== 0) return false;
  reader.skip(length);
  const raw = (sizeWord & RAW_BLOCK) !== 0;
  const pos = decodeOrThrow(
    pgno,
    pageSize,
    frame.subarray(GO_FRAME_HEAD, GO_FRAME_HEAD + n),
    raw,
    digest,
    true,
    into,
    at,
  );
  if (pos === -1) {
    throw new PagePayloadError("LZ4 frame decompresses to more bytes than the page size");
  }
  if (pos !== pageSize) {
    throw new PagePayloadError(
      `LZ4 frame decompresses to ${pos} bytes, not the page size ${pageSize}`,
    );
  }
  if (getU32LE(frame, GO_FRAME_HEAD + n + 4) !== decodedXXH32) {
    throw new PagePayloadError("LZ4 frame content checksum fails");
  }
  return true;
}

function goFrameBlockLimit(pageSize: number): number {
  return Math.min(BLOCK_MAX_SIZES[0], compressBound(pageSize));
}

/**
 * Reads one LZ4 frame and decodes page `pgno` into `into` at `at`, with the checks and messages
 * of {@linkcode readFramePayload}, and feeds the page into `digest`. A frame of Go's layout is
 * decoded in WebAssembly by {@linkcode decodeBufferedFramePage} once all of it is buffered; any
 * other frame goes through the reference reader.
 * @throws {PagePayloadError} on anything but a valid frame of the page.
 */
export async function readFramePage(
  reader: ByteReader,
  pgno: number,
  pageSize: number,
  digest: PageDigest,
  into: Uint8Array,
  at: number,
): Promise<void> {
  if (!referenceCodec && await reader.fill(GO_FRAME_HEAD)) {
    // Wait for the whole frame when its start is Go's; decode it synchronously.
    const head = reader.peek(GO_FRAME_HEAD);
    const sizeWord = getU32LE(head, FRAME_HEADER.length);
    const n = sizeWord & 0x7fffffff;
    if (
      isGoFrameHeader(head) && sizeWord !== 0 && n <= goFrameBlockLimit(pageSize) &&
      await reader.fill(GO_FRAME_HEAD + n + GO_FRAME_TAIL)
    ) {
      if (decodeBufferedFramePage(reader, pgno, pageSize, digest, into, at)) return;
    }
  }
  const page = into.subarray(at, at + pageSize);
  await readFramePayload(reader, page);
  digestReference(pgno, page, digest);
}

/** Feeds `page` into `digest` (file and page checksum) outside the fused WebAssembly calls. */
function digestReference(pgno: number, page: Uint8Array, digest: PageDigest): void {
  crc64Update(digest.crc, page);
  if (digest.withPageChecksum) digest.pageChecksum = pageChecksum(pgno, page);
}

/**
 * The TypeScript reference of `encodePageFrame` (_codec.ts): writes the page header and the
 * payload of `data` at `pos` in `dst` and feeds the checksummed bytes into `digest`.
 * @returns the page frame size.
 */
export function encodePageFrameReference(
  pgno: number,
  data: Uint8Array,
  block: boolean,
  digest: PageDigest,
  dst: Uint8Array,
  pos: number,
): number {
  const view = new DataView(dst.buffer, dst.byteOffset + pos, 6);
  view.setUint32(0, pgno);
  view.setUint16(4, block ? 1 : 0);
  const payload = block
    ? writeBlockPayload(data, dst, pos + 6)
    : writeFramePayload(data, dst, pos + 6);
  crc64Update(digest.crc, dst.subarray(pos, pos + 6 + (block ? 4 : 0)));
  digestReference(pgno, data, digest);
  return 6 + payload;
}
