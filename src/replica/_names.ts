/**
 * LTX file names and level validation shared by the replica backends (FORMAT.md §2.1).
 *
 * TXIDs are formatted by the ltx package's `formatTXID` (the one formatter of the project).
 *
 * @module
 */

import type { LTXFileId } from "./client.ts";
import { SNAPSHOT_LEVEL } from "./client.ts";
import { formatTXID } from "../ltx/mod.ts";

/** Go's parser, lowercase only: anything else in a level directory is ignored. */
const LTX_NAME = /^([0-9a-f]{16})-([0-9a-f]{16})\.ltx$/;

/** Listing order within a level: ascending (minTXID, maxTXID). */
export function compareFileIds(a: LTXFileId, b: LTXFileId): number {
  return a.minTXID - b.minTXID || a.maxTXID - b.maxTXID;
}

/** `<min>-<max>.ltx` for one file. */
export function ltxFilename(minTXID: number, maxTXID: number): string {
  return `${formatTXID(minTXID)}-${formatTXID(maxTXID)}.ltx`;
}

/**
 * Parses a strict LTX file name. Returns null for anything else, including names whose TXIDs
 * exceed 2^53 − 1 (not representable as a number; such a replica is not ours to read).
 */
export function parseLTXFilename(name: string): { minTXID: number; maxTXID: number } | null {
  const match = LTX_NAME.exec(name);
  if (!match) return null;
  const minTXID = parseInt(match[1], 16);
  const maxTXID = parseInt(match[2], 16);
  if (!Number.isSafeInteger(minTXID) || !Number.isSafeInteger(maxTXID)) return null;
  return { minTXID, maxTXID };
}

/**
 * The key prefix of one level in an object store (S3, Azure Blob, GCS), ending in `/`:
 * `<path>/<level as 4 hex digits>/`, Litestream's object layout.
 */
export function objectLevelPrefix(path: string, level: number): string {
  const dir = level.toString(16).padStart(4, "0");
  return path ? `${path}/${dir}/` : `${dir}/`;
}

/** @throws {RangeError} when `level` is not an integer 0…9. */
export function assertLevel(level: number): void {
  if (!Number.isInteger(level) || level < 0 || level > SNAPSHOT_LEVEL) {
    throw new RangeError(`invalid LTX level ${level}: must be an integer 0…${SNAPSHOT_LEVEL}`);
  }
}

/** @throws {RangeError} when the level or TXIDs of `file` are out of range. */
export function assertFileId(file: LTXFileId): void {
  assertLevel(file.level);
  const { minTXID, maxTXID } = file;
  if (
    !Number.isSafeInteger(minTXID) || !Number.isSafeInteger(maxTXID) || minTXID < 1 ||
    maxTXID < minTXID
  ) {
    throw new RangeError(
      `invalid LTX file TXID range ${minTXID}…${maxTXID}: need safe integers 1 ≤ min ≤ max`,
    );
  }
}

/** @throws {RangeError} when offset/length are not non-negative safe integers. */
export function assertRange(offset: number, length: number | undefined): void {
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new RangeError(`invalid read offset ${offset}: must be a non-negative integer`);
  }
  if (length !== undefined && (!Number.isSafeInteger(length) || length < 0)) {
    throw new RangeError(`invalid read length ${length}: must be a non-negative integer`);
  }
}
