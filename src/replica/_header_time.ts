/**
 * The creation time kept in an LTX file's own header (FORMAT.md §1.1: ms since the epoch at
 * offset 32), for backends whose storage keeps a coarser time or none: SFTP keeps whole
 * seconds, WebDAV servers the upload time.
 *
 * @module
 */

import type { LTXFileId } from "./client.ts";
import { decodeHeader, HEADER_SIZE } from "../ltx/mod.ts";

/** Header bytes needed: the whole LTX header, decoded by the ltx package. */
export const HEADER_TIME_BYTES = HEADER_SIZE;

/**
 * The header timestamp of `file` from its first {@linkcode HEADER_TIME_BYTES} bytes, or
 * undefined when they are not a valid header of that file (another format, other TXIDs, too
 * short).
 */
export function headerTimestamp(bytes: Uint8Array, file: LTXFileId): number | undefined {
  try {
    const header = decodeHeader(bytes);
    if (header.minTXID !== file.minTXID || header.maxTXID !== file.maxTXID) return undefined;
    return header.timestamp;
  } catch {
    return undefined; // not an LTX header: the storage's own time stays
  }
}
