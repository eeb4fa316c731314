/**
 * TXIDs and LTX file names (FORMAT.md §1.11, §2.1): 16 lowercase hex digits, `<min>-<max>.ltx`.
 *
 * @module
 */

import { LTXFormatError } from "./errors.ts";

const TXID_TEXT = /^[0-9a-f]{16}$/;
const FILENAME = /^([0-9a-f]{16})-([0-9a-f]{16})\.ltx$/;

/**
 * Formats a TXID as 16 zero-padded lowercase hex digits, the form of file names and of
 * `restore --txid`.
 * @throws {RangeError} when `txid` is not a non-negative safe integer.
 */
export function formatTXID(txid: number): string {
  if (!Number.isSafeInteger(txid) || txid < 0) {
    throw new RangeError(`invalid TXID ${txid}: expected a non-negative safe integer`);
  }
  return txid.toString(16).padStart(16, "0");
}

/**
 * Parses exactly 16 hex digits (either case, as Go's `ParseTXID`) into a TXID.
 * @throws {LTXFormatError} on any other text, or a value above 2^53 − 1.
 */
export function parseTXID(text: string): number {
  if (text.length !== 16 || !TXID_TEXT.test(text.toLowerCase())) {
    throw new LTXFormatError(
      `invalid TXID "${text}": expected exactly 16 hex digits, e.g. 00000000000003e8`,
    );
  }
  const value = BigInt(`0x${text}`);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new LTXFormatError(`TXID ${text} is larger than sluice supports (2^53 − 1)`);
  }
  return Number(value);
}

/** The LTX file name of a TXID range: `<min %016x>-<max %016x>.ltx`. */
export function formatFilename(minTXID: number, maxTXID: number): string {
  return `${formatTXID(minTXID)}-${formatTXID(maxTXID)}.ltx`;
}

/**
 * Parses an LTX file name with Go's strict rule (lowercase only). Anything else, including
 * `.tmp` files, upper-case names and TXIDs above 2^53 − 1, gives `null`: listings skip it.
 */
export function parseFilename(name: string): { minTXID: number; maxTXID: number } | null {
  const match = FILENAME.exec(name);
  if (!match) return null;
  const min = BigInt(`0x${match[1]}`);
  const max = BigInt(`0x${match[2]}`);
  const limit = BigInt(Number.MAX_SAFE_INTEGER);
  if (min > limit || max > limit) return null;
  return { minTXID: Number(min), maxTXID: Number(max) };
}
