/**
 * Turning a full level-0 file into a level-9 snapshot without encoding the database again.
 *
 * When a sync has just written a full image of the database as L0 file `N-N` (the first sync
 * of a database, or the first after the WAL was restarted behind sluice's back, which is what
 * a cron job finds almost every time), the snapshot `1-N` holds exactly the same page frames,
 * index and trailer: only the 100 header bytes differ, and with them the file checksum. The
 * checksum is a CRC, which is linear: for two messages of equal length,
 * `crc(a) ^ crc(b) = crc₀(a ^ b)` (crc₀: zero initial value, no final xor), and `a ^ b` is the
 * header difference followed by zeros, whose crc₀ costs a few carry-less products instead of a
 * pass over the file. So the snapshot is a byte copy of the L0 file with a new header and a
 * patched checksum: `cp` speed instead of LZ4 speed.
 *
 * @module
 */

import {
  CHECKSUM_FLAG,
  crc64,
  decodeHeader,
  encodeHeader,
  type Header,
  HEADER_FLAG_NO_CHECKSUM,
  HEADER_SIZE,
  lockPageNumber,
  patchChecksum,
  TRAILER_SIZE,
} from "../ltx/mod.ts";
import {
  type LTXFileId,
  type LTXFileInfo,
  type ReplicaClient,
  SNAPSHOT_LEVEL,
} from "../replica/mod.ts";

export { patchChecksum };

/** Size of a WAL frame header (FORMAT.md §4.1); the snapshot header records the last frame. */
const WAL_FRAME_HEADER_SIZE = 24;
const WAL_HEADER_SIZE = 32;

/** What {@linkcode promoteToSnapshot} needs to know about the L0 file. */
export interface PromoteSource {
  /** Where the L0 file is (the local meta directory). */
  client: ReplicaClient;
  /** Its TXID (a level-0 file `txid-txid`). */
  txid: number;
  /** Pages the sync wrote into it; must be every page of the database. */
  pageCount: number;
}

/**
 * Writes `9/0000000000000001-<txid>.ltx` to `target` from the full L0 file `txid-txid` of
 * `source.client`: same bytes, snapshot header (FORMAT.md §3.3), patched file checksum.
 * Without `now`, a snapshot whose header would equal the L0 file's but for the time (the
 * first image of a database, TXID 1, taken with at most one WAL frame) takes the L0 file's
 * time, the moment its image was read: it is then the L0 file itself, which a directory
 * replica links instead of copying.
 * @param now the snapshot's timestamp; default the L0 file's as above, else the current time.
 * @returns the snapshot's listing entry, or undefined when the L0 file is not a complete
 * NoChecksum image of the database (the caller then encodes the snapshot the usual way).
 * @throws {ReplicaError} from either storage.
 */
export async function promoteToSnapshot(
  source: PromoteSource,
  target: ReplicaClient,
  now?: number,
): Promise<LTXFileInfo | undefined> {
  if (!crcPatchWorks()) return undefined;
  const id: LTXFileId = { level: 0, minTXID: source.txid, maxTXID: source.txid };
  let size: number | undefined;
  for await (const file of source.client.ltxFiles(0, { seekTXID: source.txid })) {
    if (file.minTXID === source.txid && file.maxTXID === source.txid) size = file.size;
    break;
  }
  if (size === undefined || size < HEADER_SIZE + TRAILER_SIZE) return undefined;
  const head = await readRange(source.client, id, 0, HEADER_SIZE);
  const tail = await readRange(source.client, id, size - TRAILER_SIZE, TRAILER_SIZE);
  if (head.length !== HEADER_SIZE || tail.length !== TRAILER_SIZE) return undefined;
  const header = decodeHeader(head);
  const view = new DataView(tail.buffer, tail.byteOffset, TRAILER_SIZE);
  const postApply = view.getBigUint64(0);
  const fileChecksum = view.getBigUint64(8);
  const lockPage = lockPageNumber(header.pageSize);
  const fullPageCount = header.commit - (lockPage <= header.commit ? 1 : 0);
  if (
    header.minTXID !== source.txid || header.maxTXID !== source.txid ||
    (header.flags & HEADER_FLAG_NO_CHECKSUM) === 0 || header.preApplyChecksum !== 0n ||
    postApply !== 0n || source.pageCount !== fullPageCount || header.commit === 0
  ) {
    return undefined;
  }

  const end = header.walOffset + header.walSize;
  const lastFrame = Math.max(end - (WAL_FRAME_HEADER_SIZE + header.pageSize), WAL_HEADER_SIZE);
  const snapshotHeader: Header = {
    ...header,
    minTXID: 1,
    timestamp: now ?? Date.now(),
    preApplyChecksum: 0n,
    walOffset: end > WAL_HEADER_SIZE ? lastFrame : WAL_HEADER_SIZE,
    walSize: end > WAL_HEADER_SIZE ? end - lastFrame : 0,
    nodeID: 0n,
  };
  const unchanged = now === undefined &&
    equalBytes(encodeHeader({ ...snapshotHeader, timestamp: header.timestamp }), head);
  if (unchanged) snapshotHeader.timestamp = header.timestamp;
  const newHead = encodeHeader(snapshotHeader);
  const hashedAfterHeader = await hashedLengthAfterHeader(
    source.client,
    id,
    size,
    header,
    source.pageCount,
  );
  if (hashedAfterHeader === undefined) return undefined;
  const patched = patchChecksum(fileChecksum, head, newHead, hashedAfterHeader);
  const newTail = new Uint8Array(8);
  new DataView(newTail.buffer).setBigUint64(0, patched);

  const snapshotId = { level: SNAPSHOT_LEVEL, minTXID: 1, maxTXID: source.txid };
  const sourcePath = source.client.localPath?.(id);
  if (sourcePath !== undefined && target.copyLTXFile) {
    // Directory to directory: a kernel copy with the header and checksum written over it,
    // or a hard link when both stay as they are.
    return await target.copyLTXFile(
      snapshotId,
      sourcePath,
      snapshotHeader.timestamp,
      unchanged ? [] : [{ offset: 0, bytes: newHead }, { offset: size - 8, bytes: newTail }],
    );
  }
  const body = await source.client.openLTXFile(id, {
    offset: HEADER_SIZE,
    length: size - HEADER_SIZE - 8,
  });
  return await target.writeLTXFile(
    snapshotId,
    concatStreams(newHead, body, newTail),
    snapshotHeader.timestamp,
  );
}

/**
 * How many bytes the file checksum hashes after the header (FORMAT.md §1.8): per page frame its
 * 6-byte header, the 4-byte size field in block encoding and the *decompressed* page; then
 * the zero page header, the index with its length field, and the PostApplyChecksum. Frames
 * are counted from the page index; the encoding is read from the first frame (an encoder
 * writes one encoding per file). Undefined when the index does not match `pageCount`.
 */
async function hashedLengthAfterHeader(
  client: ReplicaClient,
  id: LTXFileId,
  size: number,
  header: Header,
  pageCount?: number,
): Promise<number | undefined> {
  const lengthField = await readRange(client, id, size - TRAILER_SIZE - 8, 8);
  if (lengthField.length !== 8) return undefined;
  const indexLength = Number(new DataView(lengthField.buffer).getBigUint64(0));
  const indexStart = size - TRAILER_SIZE - 8 - indexLength;
  if (!(indexLength >= 1) || indexStart < HEADER_SIZE) return undefined;
  // Triples of uvarints (pgno, offset, size), then a single 0; parsed as the bytes stream in,
  // so a large database's index is never held whole.
  const counted = await countIndexFrames(
    await client.openLTXFile(id, { offset: indexStart, length: indexLength }),
  );
  if (counted === undefined) return undefined;
  const { frames, firstOffset, length } = counted;
  if (length !== indexLength || frames === 0 || (pageCount !== undefined && frames !== pageCount)) {
    return undefined;
  }
  const pageHeader = await readRange(client, id, firstOffset, 6);
  if (pageHeader.length !== 6) return undefined;
  const flags = (pageHeader[4] << 8) | pageHeader[5];
  if (flags !== 0 && flags !== 1) return undefined;
  const frameHashed = 6 + (flags === 1 ? 4 : 0) + header.pageSize;
  return frames * frameHashed + 6 + indexLength + 8 + 8;
}

/**
 * Counts the entries of a page index read from `stream`: how many frames, the offset of the
 * first, and how many bytes up to and including the terminating 0 (undefined when the bytes
 * are not a well-formed index or go on after its end).
 */
async function countIndexFrames(
  stream: ReadableStream<Uint8Array>,
): Promise<{ frames: number; firstOffset: number; length: number } | undefined> {
  let frames = 0;
  let firstOffset = 0;
  let field = 0; // 0: pgno, 1: offset, 2: size
  let value = 0;
  let scale = 1;
  let length = 0;
  let ended = false;
  for await (const chunk of stream) {
    for (let i = 0; i < chunk.length; i++) {
      if (ended) return undefined;
      const byte = chunk[i];
      length++;
      value += (byte & 0x7f) * scale;
      if (byte >= 0x80) {
        scale *= 128;
        continue;
      }
      if (field === 0 && value === 0) {
        ended = true;
      } else if (field === 1 && frames === 0) {
        firstOffset = value;
      }
      if (field === 2) frames++;
      field = (field + 1) % 3;
      value = 0;
      scale = 1;
    }
  }
  return ended ? { frames, firstOffset, length } : undefined;
}

let selfTest: boolean | undefined;
/** Checks the patch against a direct CRC once per process; a mismatch disables promotion. */
function crcPatchWorks(): boolean {
  if (selfTest !== undefined) return selfTest;
  const a = new Uint8Array(1000).map((_, i) => (i * 131 + 7) & 255);
  const b = a.slice();
  for (let i = 0; i < HEADER_SIZE; i++) b[i] = (i * 17 + 3) & 255;
  const stored = (bytes: Uint8Array) => CHECKSUM_FLAG | crc64(bytes);
  selfTest = patchChecksum(
    stored(a),
    a.subarray(0, HEADER_SIZE),
    b.subarray(0, HEADER_SIZE),
    a.length - HEADER_SIZE,
  ) === stored(b);
  return selfTest;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

async function readRange(
  client: ReplicaClient,
  id: LTXFileId,
  offset: number,
  length: number,
): Promise<Uint8Array> {
  const stream = await client.openLTXFile(id, { offset, length });
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function concatStreams(
  head: Uint8Array,
  body: ReadableStream<Uint8Array>,
  tail: Uint8Array,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let state: "head" | "body" | "done" = "head";
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (state === "head") {
        state = "body";
        controller.enqueue(head);
        return;
      }
      if (state === "body") {
        const { value, done } = await reader.read();
        if (!done) {
          controller.enqueue(value);
          return;
        }
        state = "done";
        controller.enqueue(tail);
        controller.close();
      }
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}
