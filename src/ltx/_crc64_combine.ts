/**
 * CRC-64/GO-ISO algebra: the checksum of a concatenation from the checksums of its parts, and
 * the stored checksum of a stream whose first bytes were replaced, without reading the stream
 * again.
 *
 * A CRC is linear over GF(2): appending n zero bytes to a zero-initialised register multiplies
 * it by x^(8n) modulo the polynomial, and the initial value and final xor (both all ones) cancel
 * out of a concatenation, so `crc(a ‖ b) = crc(a)·x^(8·|b|) ⊕ crc(b)` (zlib's
 * `crc32_combine`). The multiplication uses a table of x^(2^k) and costs one to a few dozen
 * 64-step carry-less products: microseconds, whatever the length. Encoders that code parts of a
 * file on several threads (src/pipeline) combine the parts' checksums with it; promoting a full
 * L0 file to a snapshot (src/compaction) patches the checksum of a new header with it.
 *
 * Values are 64-bit reflected polynomials (bit 63 is x⁰), computed on two unsigned 32-bit
 * halves: `BigInt` arithmetic would be ten times slower.
 *
 * @module
 */

/** Bit 63, set in every stored checksum (crc64.ts exports it; not imported, to avoid a cycle). */
const CHECKSUM_FLAG = 0x8000000000000000n;

/** The reflected CRC-64/GO-ISO polynomial, high half (the low half is 0). */
const POLY_HIGH = 0xd8000000;

/** `a · b mod P` on [high, low] halves. */
function multiply(aHigh: number, aLow: number, bHigh: number, bLow: number): [number, number] {
  let pHigh = 0;
  let pLow = 0;
  for (let bit = 63; bit >= 0; bit--) {
    const set = bit >= 32 ? (aHigh >>> (bit - 32)) & 1 : (aLow >>> bit) & 1;
    if (set) {
      pHigh ^= bHigh;
      pLow ^= bLow;
    }
    // b·x: a right shift in the reflected form, folding the polynomial in.
    const carry = bLow & 1;
    bLow = (bLow >>> 1) | ((bHigh & 1) << 31);
    bHigh = (bHigh >>> 1) ^ (carry ? POLY_HIGH : 0);
  }
  return [pHigh >>> 0, pLow >>> 0];
}

/** x^(2^k) mod P for k = 0…63, as [high, low] pairs. */
const POWERS: [number, number][] = (() => {
  const table: [number, number][] = [[0x40000000, 0]]; // x¹
  for (let k = 1; k < 64; k++) {
    const [h, l] = table[k - 1];
    table.push(multiply(h, l, h, l));
  }
  return table;
})();

/** x^(8·bytes) mod P, cached for the last few lengths (encoders repeat the same batch size). */
const shiftCache = new Map<number, [number, number]>();

function zeroBytesOperator(bytes: number): [number, number] {
  const cached = shiftCache.get(bytes);
  if (cached) return cached;
  let p: [number, number] = [0x80000000, 0]; // x⁰
  let n = bytes;
  for (let k = 3; n > 0; k++) {
    if (n % 2 === 1) p = multiply(POWERS[k][0], POWERS[k][1], p[0], p[1]);
    n = Math.floor(n / 2);
  }
  if (shiftCache.size >= 16) shiftCache.clear();
  shiftCache.set(bytes, p);
  return p;
}

function toHalves(value: bigint): [number, number] {
  return [Number((value >> 32n) & 0xffffffffn), Number(value & 0xffffffffn)];
}

function fromHalves([high, low]: [number, number]): bigint {
  return (BigInt(high >>> 0) << 32n) | BigInt(low >>> 0);
}

/**
 * The zero-initialised (no final xor) CRC register `crc` after `bytes` more zero bytes.
 * @throws {RangeError} when `bytes` is negative or not a safe integer.
 */
export function crc64ShiftZeros(crc: bigint, bytes: number): bigint {
  if (!Number.isSafeInteger(bytes) || bytes < 0) {
    throw new RangeError(`crc64ShiftZeros: ${bytes} is not a byte count`);
  }
  if (bytes === 0 || crc === 0n) return crc;
  const [oh, ol] = zeroBytesOperator(bytes);
  const [ch, cl] = toHalves(crc);
  return fromHalves(multiply(oh, ol, ch, cl));
}

/**
 * CRC-64/GO-ISO of `a ‖ b` from `crcA = crc64(a)`, `crcB = crc64(b)` and the length of `b`
 * (zlib's `crc32_combine`, for this CRC).
 * @throws {RangeError} when `lengthB` is negative or not a safe integer.
 */
export function crc64Combine(crcA: bigint, crcB: bigint, lengthB: number): bigint {
  return crc64ShiftZeros(crcA, lengthB) ^ crcB;
}

let table: bigint[] | undefined;
function crcTable(): bigint[] {
  if (table) return table;
  table = [];
  const poly = BigInt(POLY_HIGH) << 32n;
  for (let i = 0n; i < 256n; i++) {
    let crc = i;
    for (let bit = 0; bit < 8; bit++) crc = crc & 1n ? (crc >> 1n) ^ poly : crc >> 1n;
    table.push(crc);
  }
  return table;
}

/** crc₀ of `bytes`: zero initial value, no final xor (a linear map). For short inputs. */
function linearCRC(bytes: Uint8Array): bigint {
  const t = crcTable();
  let crc = 0n;
  for (const byte of bytes) crc = t[Number((crc ^ BigInt(byte)) & 0xffn)] ^ (crc >> 8n);
  return crc;
}

const MASK63 = CHECKSUM_FLAG - 1n;

/**
 * The stored checksum (`CHECKSUM_FLAG | crc64(stream)`) after replacing the stream's first
 * bytes `oldHead` by `newHead` (same length), `tailLength` more bytes following them. For two
 * messages of equal length `crc(a) ⊕ crc(b) = crc₀(a ⊕ b)`, and `a ⊕ b` is the head difference
 * followed by zeros. Bit 63 of a stored checksum is always set, so the lost bit 63 of the old
 * raw CRC does not matter.
 * @throws {RangeError} when the heads differ in length or `tailLength` is not a byte count.
 */
export function patchChecksum(
  stored: bigint,
  oldHead: Uint8Array,
  newHead: Uint8Array,
  tailLength: number,
): bigint {
  if (oldHead.length !== newHead.length) {
    throw new RangeError(
      `patchChecksum: heads of ${oldHead.length} and ${newHead.length} bytes; they must match`,
    );
  }
  const diff = new Uint8Array(oldHead.length);
  for (let i = 0; i < diff.length; i++) diff[i] = oldHead[i] ^ newHead[i];
  const delta = crc64ShiftZeros(linearCRC(diff), tailLength);
  return CHECKSUM_FLAG | ((stored ^ delta) & MASK63);
}
