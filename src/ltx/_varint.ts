/**
 * Go `encoding/binary` unsigned varints (LEB128), as used by the LTX page index (FORMAT.md §1.6).
 *
 * @module
 */

/** Writes `value` (a non-negative safe integer) at `pos`; returns the position after it. */
export function putUvarint(buf: Uint8Array, pos: number, value: number): number {
  while (value >= 0x80) {
    buf[pos++] = (value % 0x80) | 0x80;
    value = Math.floor(value / 0x80);
  }
  buf[pos++] = value;
  return pos;
}

/** Bytes `putUvarint` writes for `value`. */
export function uvarintSize(value: number): number {
  let n = 1;
  while (value >= 0x80) {
    value = Math.floor(value / 0x80);
    n++;
  }
  return n;
}

/** A decoded varint and the position after it. */
export interface Uvarint {
  value: number;
  next: number;
}

/**
 * Reads a varint at `pos`, not past `end`. Returns `null` when it is truncated, longer than
 * 10 bytes (Go's limit), or above 2^53 − 1.
 */
export function getUvarint(buf: Uint8Array, pos: number, end: number): Uvarint | null {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10 && pos < end; i++) {
    const b = buf[pos++];
    value += (b & 0x7f) * scale;
    if (value > Number.MAX_SAFE_INTEGER) return null;
    if ((b & 0x80) === 0) return { value, next: pos };
    scale *= 0x80;
  }
  return null;
}
