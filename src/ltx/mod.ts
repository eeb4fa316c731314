/**
 * The LTX file format of Litestream v0.5 (docs/FORMAT.md §1, §3.1):
 * header and trailer, the streaming {@linkcode Encoder} and {@linkcode Decoder} for both page
 * encodings, CRC-64/GO-ISO checksums, the page index, and the page merge used by compaction and
 * restore. Nothing here imports from the rest of sluice.
 *
 * ```ts
 * const decoder = new Decoder(file.readable, { name: path });
 * const header = await decoder.readHeader();
 * for (let page = await decoder.readPage(); page; page = await decoder.readPage()) {
 *   // page.pgno, page.data; the file checksum is verified when readPage() returns null
 * }
 * ```
 *
 * @module
 */

export {
  checkNextPage,
  checkRun,
  decodeHeader,
  encodeHeader,
  type Header,
  HEADER_FLAG_NO_CHECKSUM,
  HEADER_SIZE,
  isSnapshot,
  isValidPageSize,
  LEGACY_HEADER_FLAG_COMPRESS_LZ4,
  lockPageNumber,
  type Page,
  PAGE_FLAG_SIZE,
  PAGE_HEADER_SIZE,
  type PageEncoding,
  type Trailer,
  TRAILER_SIZE,
  validateHeader,
  validateTrailer,
} from "./header.ts";
export { formatFilename, formatTXID, parseFilename, parseTXID } from "./txid.ts";
export {
  CHECKSUM_FLAG,
  CRC64,
  crc64,
  crc64Combine,
  crc64ShiftZeros,
  pageChecksum,
  patchChecksum,
} from "./crc64.ts";
export { LTXChecksumError, LTXError, LTXFormatError } from "./errors.ts";
export {
  type EncodedFrames,
  encodePageFrames,
  type EncodePageFramesOptions,
  Encoder,
  type EncoderOptions,
  type PageFill,
  pageFramesBound,
  type SharedBatchLayout,
  SharedFrameEncoder,
} from "./encoder.ts";
/** Bytes at the start of a {@linkcode SharedFrameEncoder}'s memory that the codec keeps. */
export { SHARED_CODER_RESERVED_BYTES } from "./_codec.ts";
export { Decoder, type DecoderOptions } from "./decoder.ts";
export {
  decodePageIndex,
  type DecodePageIndexOptions,
  decodeTrailer,
  type PageIndex,
  type PageIndexEntry,
} from "./page_index.ts";
export { checkSequence, compact, mergeDecoders, type MergeResult } from "./merge.ts";
/**
 * The TypeScript reference of the LZ4 block codec and xxHash32 (pages are coded by the
 * WebAssembly build of the same codec), exported for tests and benchmarks.
 */
export { compressBlock, compressBound, decompressBlock, LZ4CorruptError } from "./_lz4_block.ts";
export { xxh32 } from "./_xxh32.ts";
