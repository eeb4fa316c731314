/**
 * The codec's internals for tests and benchmarks, outside the package API of mod.ts: the
 * WebAssembly primitives (_codec.ts), the TypeScript reference they are checked against
 * (_lz4_block.ts, _xxh32.ts, _crc64_ref.ts, the writers of _page_codec.ts), and the switch that
 * runs encoders and decoders on the reference codec.
 *
 * @module
 */

export {
  compressBlockWasm,
  crc64Update,
  type DecodedPage,
  decodePage,
  decompressBlockWasm,
  encodePageFrame,
  type PageDigest,
  useReferenceCodec,
  xxh32Wasm,
} from "./_codec.ts";
export { crc64Reference, crc64UpdateReference } from "./_crc64_ref.ts";
export { compressBlock, compressBound, decompressBlock, LZ4CorruptError } from "./_lz4_block.ts";
export { xxh32 } from "./_xxh32.ts";
export { maxPayloadSize, writeBlockPayload, writeFramePayload } from "./_page_codec.ts";
