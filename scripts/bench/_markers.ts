/**
 * Transaction markers: the bench writer starts every row's payload with 8 magic bytes, the
 * transaction number k (u32 LE) and its complement ~k (a check word: free space in a page can
 * hold stale, partly overwritten cells, which must not count), and these helpers find them in replica files of either format
 * (sluice's LTX files, Litestream v0.3's LZ4-compressed WAL segments and snapshots).
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { Decoder } from "../../src/ltx/mod.ts";
import { decompressBlock } from "../../src/ltx/mod.ts";

/** Magic that starts every marker. */
export const MARKER_MAGIC: Uint8Array = Uint8Array.of(
  0x53,
  0x4c,
  0x42,
  0x4d,
  0x52,
  0x4b,
  0xa5,
  0x5a,
);
/** Magic (8) + k (4) + ~k (4). */
export const MARKER_SIZE = 16;

const magic = Buffer.from(MARKER_MAGIC);

/** Adds every transaction number marked in `bytes` to `into`. */
export function scanMarkers(bytes: Uint8Array, into: Set<number>): void {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = buffer.indexOf(magic);
  while (at >= 0 && at + MARKER_SIZE <= buffer.length) {
    const k = buffer.readUInt32LE(at + 8);
    if ((~k >>> 0) === buffer.readUInt32LE(at + 12)) into.add(k);
    at = buffer.indexOf(magic, at + 8);
  }
}

/** The 16-byte marker of transaction `k`. */
export function markerOf(k: number): Uint8Array {
  const bytes = new Uint8Array(MARKER_SIZE);
  bytes.set(MARKER_MAGIC);
  new DataView(bytes.buffer).setUint32(8, k, true);
  new DataView(bytes.buffer).setUint32(12, ~k >>> 0, true);
  return bytes;
}

/** True when the bytes contain transaction k's marker. */
export function hasMarker(bytes: Uint8Array, k: number): boolean {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).indexOf(markerOf(k)) >= 0;
}

/** Bytes of page data {@linkcode replicaFileChunks} hands out at a time (plus the overlap). */
const CHUNK_BYTES = 4 << 20;

/**
 * The data of a replica file, decompressed, in chunks of a few MiB, each starting with the last
 * `MARKER_SIZE - 1` bytes of the one before (a marker across two chunks is found in the second).
 * Memory stays bounded whatever the file's size: after a WAL restart a replica's first file is a
 * full image of the database, gigabytes under a 64 KiB-row writer, and compactions write
 * gigabyte files as well.
 */
export async function* replicaFileChunks(path: string): AsyncGenerator<Uint8Array> {
  if (!path.endsWith(".ltx")) {
    yield await replicaFileData(path);
    return;
  }
  const file = await Deno.open(path);
  const decoder = new Decoder(file.readable, { name: path });
  const overlap = MARKER_SIZE - 1;
  let chunk = new Uint8Array(CHUNK_BYTES + overlap);
  let size = 0;
  for (let page = await decoder.readPage(); page; page = await decoder.readPage()) {
    if (size + page.data.length > chunk.length) {
      yield chunk.subarray(0, size);
      const tail = chunk.slice(Math.max(0, size - overlap), size);
      chunk = new Uint8Array(Math.max(CHUNK_BYTES + overlap, tail.length + page.data.length));
      chunk.set(tail);
      size = tail.length;
    }
    chunk.set(page.data, size);
    size += page.data.length;
  }
  if (size > 0) yield chunk.subarray(0, size);
}

/** Whether the replica file at `path` holds transaction k's marker (streamed). */
export async function fileHasMarker(path: string, k: number): Promise<boolean> {
  for await (const chunk of replicaFileChunks(path)) if (hasMarker(chunk, k)) return true;
  return false;
}

/** Adds every transaction number marked in the replica file at `path` to `into` (streamed). */
export async function scanFileMarkers(path: string, into: Set<number>): Promise<void> {
  for await (const chunk of replicaFileChunks(path)) scanMarkers(chunk, into);
}

/**
 * The data of a replica file, decompressed: all pages of an LTX file concatenated, or the
 * content of an LZ4 frame file (Litestream v0.3 `.wal.lz4` / `.snapshot.lz4`). Throws when the
 * file disappeared (e.g. removed by retention) or is malformed.
 */
export async function replicaFileData(path: string): Promise<Uint8Array> {
  if (path.endsWith(".ltx")) {
    const file = await Deno.open(path);
    const decoder = new Decoder(file.readable, { name: path });
    const pages: Uint8Array[] = [];
    let size = 0;
    for (let page = await decoder.readPage(); page; page = await decoder.readPage()) {
      pages.push(page.data);
      size += page.data.length;
    }
    const all = new Uint8Array(size);
    let at = 0;
    for (const page of pages) {
      all.set(page, at);
      at += page.length;
    }
    return all;
  }
  return decodeLZ4Frames(await Deno.readFile(path));
}

const BLOCK_MAX = [65536, 262144, 1048576, 4194304];

/**
 * Decompresses concatenated LZ4 frames (as written by Go's pierrec/lz4, which Litestream v0.3
 * uses). Checksums are skipped: this only looks for markers.
 */
export function decodeLZ4Frames(src: Uint8Array): Uint8Array {
  const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
  let out = new Uint8Array(Math.max(65536, src.length * 4));
  let outPos = 0;
  let pos = 0;
  while (pos + 7 <= src.length) {
    if (view.getUint32(pos, true) !== 0x184d2204) throw new Error("no LZ4 frame magic");
    const flg = src[pos + 4];
    const bd = src[pos + 5];
    const blockMax = BLOCK_MAX[((bd >>> 4) & 7) - 4] ?? 4194304;
    const independent = (flg & 0x20) !== 0;
    const blockChecksums = (flg & 0x10) !== 0;
    const contentSize = (flg & 0x08) !== 0;
    const contentChecksum = (flg & 0x04) !== 0;
    const dictionary = (flg & 0x01) !== 0;
    pos += 7 + (contentSize ? 8 : 0) + (dictionary ? 4 : 0);
    const frameStart = outPos;
    for (;;) {
      const word = view.getUint32(pos, true);
      pos += 4;
      if (word === 0) break;
      const n = word & 0x7fffffff;
      if (outPos + blockMax > out.length) {
        const bigger = new Uint8Array(Math.max(out.length * 2, outPos + blockMax));
        bigger.set(out.subarray(0, outPos));
        out = bigger;
      }
      if (word & 0x80000000) {
        out.set(src.subarray(pos, pos + n), outPos);
        outPos += n;
      } else {
        outPos = decompressBlock(
          src,
          pos,
          pos + n,
          out,
          outPos,
          outPos + blockMax,
          independent ? outPos : frameStart,
        );
      }
      pos += n + (blockChecksums ? 4 : 0);
    }
    if (contentChecksum) pos += 4;
  }
  return out.subarray(0, outPos);
}
