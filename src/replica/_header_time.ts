/**
 * The creation time kept in an LTX file's own header (FORMAT.md §1.1: ms since the epoch at
 * offset 32), for backends whose storage keeps a coarser time or none: SFTP keeps whole
 * seconds, WebDAV servers the upload time.
 *
 * @module
 */

import type { LTXFileId } from "./client.ts";

/** Header bytes needed: magic … timestamp. */
export const HEADER_TIME_BYTES = 40;

/**
 * The header timestamp of `file` from its first {@linkcode HEADER_TIME_BYTES} bytes, or
 * undefined when they are not the header of that file (wrong magic or TXIDs, too short).
 */
export function headerTimestamp(bytes: Uint8Array, file: LTXFileId): number | undefined {
  if (bytes.length < HEADER_TIME_BYTES) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, HEADER_TIME_BYTES);
  if (view.getUint32(0) !== 0x4c545831) return undefined; // "LTX1"
  if (
    view.getBigUint64(16) !== BigInt(file.minTXID) || view.getBigUint64(24) !== BigInt(file.maxTXID)
  ) return undefined;
  const ms = Number(view.getBigInt64(32));
  return Number.isSafeInteger(ms) ? ms : undefined;
}
