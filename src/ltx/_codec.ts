/**
 * The page codec in WebAssembly (source: wasm/codec/, rebuilt by `deno task build:wasm`): LZ4
 * block compression and decompression, xxHash32, CRC-64/GO-ISO, and the fused page operations
 * the encoder and decoder use. The module is instantiated synchronously once, at import; it owns
 * a fixed 512 KiB memory that never grows, with an input region, an output region and a few
 * shared state words (layout in wasm/codec/assembly/index.ts).
 *
 * Every function here is synchronous and leaves nothing in WebAssembly memory that a later call
 * needs: callers interleave (async decoders of a merge), so results are copied out before
 * returning. Inputs too large for a region fall back to the TypeScript reference code, which
 * gives the same results.
 *
 * @module
 */

import { CODEC_SHARED_WASM_BASE64, CODEC_WASM_BASE64 } from "./_codec_wasm.ts";
import { compressBlock, compressBound, decompressBlock, LZ4CorruptError } from "./_lz4_block.ts";
import { crc64UpdateReference } from "./_crc64_ref.ts";
import { xxh32 } from "./_xxh32.ts";

interface CodecExports {
  memory: WebAssembly.Memory;
  inPtr(): number;
  outPtr(): number;
  statePtr(): number;
  ioSize(): number;
  crc64Update(len: number): void;
  pageChecksum(pgno: number, len: number): void;
  xxh32(start: number, end: number, seed: number): number;
  compressBlock(len: number): number;
  decompress(
    srcPos: number,
    srcEnd: number,
    dstPos: number,
    dstEnd: number,
    windowStart: number,
  ): number;
  encodePage(pgno: number, len: number, block: number, withChecksum: number): number;
  batchPtr(): number;
  maxBatch(): number;
  encodePages(count: number, len: number, block: number, withChecksum: number): number;
  encodeFramesAt(
    src: number,
    pgnos: number,
    count: number,
    len: number,
    dst: number,
    sizes: number,
    block: number,
    withChecksum: number,
  ): number;
  heapBase(): number;
  digestPage(pgno: number, len: number, withChecksum: number, withXXH32: number): number;
}

function fromBase64(text: string): Uint8Array<ArrayBuffer> {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

const wasm = new WebAssembly.Instance(
  new WebAssembly.Module(fromBase64(CODEC_WASM_BASE64)),
  {},
).exports as unknown as CodecExports;

const IN = wasm.inPtr();
const OUT = wasm.outPtr();
const STATE = wasm.statePtr();
/** Largest input or output a region takes, leaving room for the codec's 16-byte wide copies. */
const REGION = wasm.ioSize() - 256;
/** Largest page (or block input) handled in WebAssembly; its compressed bound fits a region. */
const MAX_PAGE = 65536;
/** Where `encodePages` takes its page numbers, and how many at most; its sizes follow them. */
const BATCH = wasm.batchPtr();
const MAX_BATCH = wasm.maxBatch();
/** The LTX page header before each frame (FORMAT.md §1.3). */
const PAGE_HEADER_BYTES = 6;
/** Below this many bytes a CRC update stays in TypeScript: the call and copy cost more. */
const SMALL_CRC = 64;

/**
 * When true, the encoder, the decoder and the checksums run the TypeScript reference codec
 * instead (benchmarks compare the two; see {@linkcode useReferenceCodec}).
 */
export let referenceCodec = false;

/** Switches every LTX encoder, decoder and checksum to the TypeScript reference codec, or back. */
export function useReferenceCodec(on: boolean): void {
  referenceCodec = on;
}

// Views made once: the memory's initial and maximum sizes are equal (wasm/codec/asconfig.json)
// and the module never grows it, so its buffer never changes (checking that it did cost more
// per page than the WebAssembly call itself).
const bytes = new Uint8Array(wasm.memory.buffer);
const words = new Int32Array(wasm.memory.buffer);
const longs = new BigUint64Array(wasm.memory.buffer);
const batchWords = new Uint32Array(wasm.memory.buffer, BATCH, 2 * MAX_BATCH);

/** The view of the whole memory. */
function memory(): Uint8Array {
  return bytes;
}

function loadState(state: Int32Array): void {
  words[STATE >>> 2] = state[0];
  words[(STATE >>> 2) + 1] = state[1];
}

function saveState(state: Int32Array): void {
  state[0] = words[STATE >>> 2];
  state[1] = words[(STATE >>> 2) + 1];
}

/** The page checksum the last fused call left in the state words. */
function lastPageChecksum(): bigint {
  return longs[(STATE >>> 3) + 1];
}

/**
 * Feeds `b` into the complemented CRC-64 state `state` ([low, high] 32 bits, [-1, -1] to
 * start), in WebAssembly unless `b` is short.
 */
export function crc64Update(state: Int32Array, b: Uint8Array): void {
  if (b.length < SMALL_CRC || referenceCodec) return crc64UpdateReference(state, b);
  const mem = memory();
  loadState(state);
  for (let at = 0; at < b.length; at += REGION) {
    const n = Math.min(REGION, b.length - at);
    mem.set(b.subarray(at, at + n), IN);
    wasm.crc64Update(n);
  }
  saveState(state);
}

const pgnoBytes = new Uint8Array(4);
const pageState = new Int32Array(2);

/** `CHECKSUM_FLAG | crc64(u32be(pgno) ‖ data)` (FORMAT.md §1.9). */
export function pageChecksum(pgno: number, data: Uint8Array): bigint {
  if (data.length > REGION || referenceCodec) {
    new DataView(pgnoBytes.buffer).setUint32(0, pgno);
    pageState.fill(-1);
    crc64UpdateReference(pageState, pgnoBytes);
    (referenceCodec ? crc64UpdateReference : crc64Update)(pageState, data);
    return 0x8000000000000000n | (BigInt(~pageState[1] >>> 0) << 32n) |
      BigInt(~pageState[0] >>> 0);
  }
  memory().set(data, IN);
  wasm.pageChecksum(pgno, data.length);
  return lastPageChecksum();
}

/** XXH32 of `b[start, end)` with `seed`; the same as the reference in _xxh32.ts. */
export function xxh32Wasm(b: Uint8Array, start = 0, end = b.length, seed = 0): number {
  if (end - start > REGION) return xxh32(b, start, end, seed);
  memory().set(b.subarray(start, end), IN);
  return wasm.xxh32(0, end - start, seed) >>> 0;
}

/**
 * {@linkcode compressBlock} in WebAssembly: the same bytes, for inputs up to 64 KiB (larger
 * ones go to the TypeScript code).
 */
export function compressBlockWasm(src: Uint8Array, dst: Uint8Array, dstPos: number): number {
  if (src.length > MAX_PAGE) return compressBlock(src, dst, dstPos);
  const mem = memory();
  mem.set(src, IN);
  const n = wasm.compressBlock(src.length);
  dst.set(mem.subarray(OUT, OUT + n), dstPos);
  return n;
}

function corrupt(code: number): LZ4CorruptError {
  switch (code) {
    case -1:
      return new LZ4CorruptError("empty LZ4 block");
    case -2:
      return new LZ4CorruptError("LZ4 block truncated in a literal length");
    case -3:
      return new LZ4CorruptError("LZ4 literals run past the end of the block");
    case -4:
      return new LZ4CorruptError("LZ4 block decompresses to more bytes than expected");
    case -5:
      return new LZ4CorruptError("LZ4 block truncated in a match offset");
    case -6:
      return new LZ4CorruptError(
        `LZ4 match offset ${words[(STATE >>> 2) + 4]} points before the start of the data`,
      );
    case -7:
      return new LZ4CorruptError("LZ4 block truncated in a match length");
  }
  return new LZ4CorruptError(`LZ4 decoder failure ${code}`);
}

/**
 * {@linkcode decompressBlock} in WebAssembly: the same results and errors. Copies the window
 * `dst[windowStart, dstPos)` in and the output out.
 * @throws {LZ4CorruptError} on malformed input or when the output would not fit.
 */
export function decompressBlockWasm(
  src: Uint8Array,
  srcPos: number,
  srcEnd: number,
  dst: Uint8Array,
  dstPos: number,
  dstEnd: number,
  windowStart: number = dstPos,
): number {
  if (srcEnd - srcPos > REGION || dstEnd - windowStart > REGION || windowStart > dstPos) {
    return decompressBlock(src, srcPos, srcEnd, dst, dstPos, dstEnd, windowStart);
  }
  if (srcEnd > src.length || dstEnd > dst.length || srcPos > srcEnd || dstPos > dstEnd) {
    throw new RangeError("decompressBlock: bounds outside the buffers");
  }
  const mem = memory();
  mem.set(src.subarray(srcPos, srcEnd), IN);
  mem.set(dst.subarray(windowStart, dstPos), OUT);
  const start = dstPos - windowStart;
  const end = wasm.decompress(0, srcEnd - srcPos, start, dstEnd - windowStart, 0);
  if (end < 0) throw corrupt(end);
  dst.set(mem.subarray(OUT + start, OUT + end), dstPos);
  return end + windowStart;
}

/** Running checksums of one LTX file being read or written. */
export interface PageDigest {
  /** Complemented CRC-64 state of the file checksum, [low, high]; updated by each page. */
  readonly crc: Int32Array;
  /** Whether to compute each page's checksum (FORMAT.md §1.9) into `pageChecksum`. */
  withPageChecksum: boolean;
  /** The checksum of the last page, when `withPageChecksum`. */
  pageChecksum: bigint;
}

/**
 * Encodes a whole LTX page frame (page header, then the block or frame payload exactly as
 * _page_codec.ts writes it) of `data` into `dst` at `pos` (room: the page header plus
 * `maxPayloadSize(data.length)`), and feeds the checksummed bytes into `digest`.
 * @returns the page frame size.
 */
export function encodePageFrame(
  pgno: number,
  data: Uint8Array,
  block: boolean,
  digest: PageDigest,
  dst: Uint8Array,
  pos: number,
): number {
  const mem = memory();
  mem.set(data, IN);
  loadState(digest.crc);
  const size = wasm.encodePage(pgno, data.length, block ? 1 : 0, digest.withPageChecksum ? 1 : 0);
  saveState(digest.crc);
  if (digest.withPageChecksum) digest.pageChecksum = lastPageChecksum();
  dst.set(mem.subarray(OUT, OUT + size), pos);
  return size;
}

/**
 * {@linkcode encodePageFrame} for `count` pages of `pageSize` bytes, `data` holding them back to
 * back and `pgnos` their numbers: the frames back to back into `dst` from `pos` (room:
 * `count` times the page header plus `maxPayloadSize(pageSize)`), each frame's size into
 * `sizes`, the file checksum into `digest`. A few calls per batch instead of one per page, each
 * copying a run of pages in and its frames out once.
 * @returns the bytes written and, with `digest.withPageChecksum`, the XOR of the page
 *   checksums (else 0).
 */
export function encodePageFrames(
  pageSize: number,
  pgnos: Uint32Array,
  data: Uint8Array,
  count: number,
  block: boolean,
  digest: PageDigest,
  dst: Uint8Array,
  pos: number,
  sizes: Uint32Array,
): { bytes: number; pageChecksums: bigint } {
  // A frame's room, as _page_codec.ts's maxPayloadSize gives it (that module imports this one).
  const frameBound = PAGE_HEADER_BYTES + Math.max(4 + compressBound(pageSize), 19 + pageSize);
  // Pages per call: their input fits the input region and their frames the output region.
  const perCall = Math.min(MAX_BATCH, Math.floor(REGION / frameBound));
  const mem = memory();
  const withChecksum = digest.withPageChecksum ? 1 : 0;
  let pageChecksums = 0n;
  const start = pos;
  loadState(digest.crc);
  for (let first = 0; first < count; first += perCall) {
    const n = Math.min(perCall, count - first);
    mem.set(data.subarray(first * pageSize, (first + n) * pageSize), IN);
    batchWords.set(pgnos.subarray(first, first + n));
    const written = wasm.encodePages(n, pageSize, block ? 1 : 0, withChecksum);
    if (withChecksum) pageChecksums ^= longs[(STATE >>> 3) + 3];
    sizes.set(batchWords.subarray(MAX_BATCH, MAX_BATCH + n), first);
    dst.set(mem.subarray(OUT, OUT + written), pos);
    pos += written;
  }
  saveState(digest.crc);
  return { bytes: pos - start, pageChecksums };
}

/**
 * Bytes at the start of a memory given to {@linkcode SharedPageCoder} that the codec keeps for
 * itself (its tables, hash table, buffers and state words): pages and frames go above.
 */
export const SHARED_CODER_RESERVED_BYTES = 512 << 10;

/** The shared build, compiled on first use (only codec workers need it). */
let sharedModule: WebAssembly.Module | undefined;

/**
 * The codec instantiated on a shared `WebAssembly.Memory` (one per thread that codes with it),
 * whose pages another thread reads into the memory and whose frames it writes out from there:
 * a batch of pages crosses no copy between the threads and none into or out of WebAssembly.
 */
export class SharedPageCoder {
  readonly #wasm: CodecExports;
  readonly #state: Int32Array;
  readonly #longs: BigUint64Array;

  /**
   * Instantiates the shared build of the codec on `memory` (shared, at least
   * {@linkcode SHARED_CODER_RESERVED_BYTES} long; the codec's own part is initialized here).
   * @throws {RangeError} when the memory is too small or not shared.
   */
  constructor(memory: WebAssembly.Memory) {
    if (!(memory.buffer instanceof SharedArrayBuffer)) {
      throw new RangeError("SharedPageCoder: the memory is not shared");
    }
    sharedModule ??= new WebAssembly.Module(fromBase64(CODEC_SHARED_WASM_BASE64));
    this.#wasm = new WebAssembly.Instance(sharedModule, { env: { memory } })
      .exports as unknown as CodecExports;
    if (
      this.#wasm.heapBase() > SHARED_CODER_RESERVED_BYTES ||
      memory.buffer.byteLength < SHARED_CODER_RESERVED_BYTES
    ) {
      throw new RangeError("SharedPageCoder: the memory is smaller than the codec needs");
    }
    const state = this.#wasm.statePtr();
    this.#state = new Int32Array(memory.buffer, state, 2);
    this.#longs = new BigUint64Array(memory.buffer, state, 4);
  }

  /**
   * {@linkcode encodePageFrames} in the memory: `count` pages of `pageSize` bytes at byte
   * offset `src`, their numbers in the `count` u32 at `pgnos`; the frames go to `dst` (room:
   * `count` times the page header plus `maxPayloadSize(pageSize)`, and 256 bytes of slack),
   * their sizes to the `count` u32 at `sizes`.
   * @returns the bytes of the frames, the CRC-64 state of the file checksum stream they add
   *   (from the start value, complemented; `crc64Digest` gives the checksum) and, with
   *   `withPageChecksum`, the XOR of the pages' checksums (else 0).
   */
  encodeFrames(
    src: number,
    pgnos: number,
    count: number,
    pageSize: number,
    dst: number,
    sizes: number,
    block: boolean,
    withPageChecksum: boolean,
  ): { bytes: number; crc: Int32Array; pageChecksums: bigint } {
    this.#state[0] = -1;
    this.#state[1] = -1;
    const bytes = this.#wasm.encodeFramesAt(
      src,
      pgnos,
      count,
      pageSize,
      dst,
      sizes,
      block ? 1 : 0,
      withPageChecksum ? 1 : 0,
    );
    return {
      bytes,
      crc: Int32Array.of(this.#state[0], this.#state[1]),
      pageChecksums: withPageChecksum ? this.#longs[3] : 0n,
    };
  }
}

/** What {@linkcode decodePage} made of a page's bytes. */
export interface DecodedPage {
  /** The page, when it came out whole (`pos` is the page size); else empty. */
  data: Uint8Array;
  /** Bytes the input decompressed to; -1 when a stored block is larger than the page. */
  pos: number;
  /** XXH32 of the page, when asked for and the page came out whole. */
  xxh32: number;
}

/**
 * XXH32 of the page the last {@linkcode decodePageInto} call with `withXXH32` decoded whole.
 * Read it before the next call.
 */
export let decodedXXH32 = 0;

/** A view of the output region one page long, kept while pages keep their size. */
let outPage: Uint8Array = new Uint8Array(0);

/**
 * Decodes one page from its only LZ4 block (compressed, or stored when `raw`) in WebAssembly
 * into `into` at `at` (room for `pageSize` bytes), allocating nothing. When it comes out whole,
 * feeds it into `digest` and sets {@linkcode decodedXXH32} (when `withXXH32`); otherwise
 * `into` is left untouched and the caller reports a wrong size from the result.
 * @returns the bytes the block decompressed to (the page size when whole); -1 when a stored
 * block is larger than the page.
 * @throws {LZ4CorruptError} from the LZ4 decoder, with the reference decoder's messages.
 */
export function decodePageInto(
  pgno: number,
  pageSize: number,
  block: Uint8Array,
  raw: boolean,
  digest: PageDigest,
  withXXH32: boolean,
  into: Uint8Array,
  at: number,
): number {
  const mem = memory();
  let pos: number;
  if (raw) {
    if (block.length > pageSize) return -1;
    mem.set(block, OUT);
    pos = block.length;
  } else {
    mem.set(block, IN);
    pos = wasm.decompress(0, block.length, 0, pageSize, 0);
    if (pos < 0) throw corrupt(pos);
  }
  if (pos !== pageSize) return pos;
  loadState(digest.crc);
  const hash = wasm.digestPage(
    pgno,
    pageSize,
    digest.withPageChecksum ? 1 : 0,
    withXXH32 ? 1 : 0,
  ) >>> 0;
  saveState(digest.crc);
  if (digest.withPageChecksum) digest.pageChecksum = lastPageChecksum();
  decodedXXH32 = hash;
  if (outPage.length !== pageSize) {
    outPage = mem.subarray(OUT, OUT + pageSize);
  }
  into.set(outPage, at);
  return pos;
}

/**
 * {@linkcode decodePageInto} into a fresh array: for callers (and tests) that keep the page.
 * @throws {LZ4CorruptError} from the LZ4 decoder, with the reference decoder's messages.
 */
export function decodePage(
  pgno: number,
  pageSize: number,
  block: Uint8Array,
  raw: boolean,
  digest: PageDigest,
  withXXH32: boolean,
): DecodedPage {
  const data = new Uint8Array(pageSize);
  const pos = decodePageInto(pgno, pageSize, block, raw, digest, withXXH32, data, 0);
  return pos === pageSize
    ? { data, pos, xxh32: withXXH32 ? decodedXXH32 : 0 }
    : { data: new Uint8Array(0), pos, xxh32: 0 };
}
