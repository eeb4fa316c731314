/**
 * CRC-64/GO-ISO in plain TypeScript: the reference for the WebAssembly codec (tests compare
 * both), and the path for inputs too short to be worth a call into WebAssembly.
 *
 * The 64-bit state lives in two int32 halves (bigint arithmetic per byte is ~100× slower), and
 * the update is slicing-by-16: 16 table lookups per half for every 16 input bytes, read as
 * aligned 32-bit words where the input allows it.
 *
 * @module
 */

/** Number of slicing tables; table k advances a byte by k+1 positions. */
const SLICES = 16;
/** Low and high halves of the 16 tables, 256 entries each. */
const LO = new Int32Array(SLICES * 256);
const HI = new Int32Array(SLICES * 256);

{
  // Reflected polynomial 0xD800000000000000: only the high half is non-zero.
  const POLY_HI = 0xd8000000 | 0;
  for (let i = 0; i < 256; i++) {
    let lo = i;
    let hi = 0;
    for (let bit = 0; bit < 8; bit++) {
      const carry = lo & 1;
      lo = (lo >>> 1) | (hi << 31);
      hi >>>= 1;
      if (carry) hi ^= POLY_HI;
    }
    LO[i] = lo;
    HI[i] = hi;
  }
  for (let t = 1; t < SLICES; t++) {
    for (let i = 0; i < 256; i++) {
      const lo = LO[(t - 1) * 256 + i];
      const hi = HI[(t - 1) * 256 + i];
      LO[t * 256 + i] = ((lo >>> 8) | (hi << 24)) ^ LO[lo & 255];
      HI[t * 256 + i] = (hi >>> 8) ^ HI[lo & 255];
    }
  }
}

/** Word reads through an Int32Array view assume a little-endian machine (x86, ARM). */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * Feeds `b` into the complemented CRC-64 state `s` ([low, high] 32 bits; [-1, -1] to start).
 */
export function crc64UpdateReference(s: Int32Array, b: Uint8Array): void {
  let lo = s[0];
  let hi = s[1];
  const n = b.length;
  let i = 0;
  // Bytes up to the first 4-byte aligned address.
  while (i < n && ((b.byteOffset + i) & 3) !== 0) {
    const idx = (lo ^ b[i++]) & 255;
    lo = LO[idx] ^ ((lo >>> 8) | (hi << 24));
    hi = HI[idx] ^ (hi >>> 8);
  }
  const blocks = LITTLE_ENDIAN ? (n - i) >>> 4 : 0;
  if (blocks > 0) {
    const w = new Int32Array(b.buffer, b.byteOffset + i, blocks * 4);
    const L = LO;
    const H = HI;
    for (let j = 0; j < w.length; j += 4) {
      const a = lo ^ w[j];
      const c = hi ^ w[j + 1];
      const d = w[j + 2];
      const e = w[j + 3];
      const x15 = 3840 + (a & 255);
      const x14 = 3584 + ((a >>> 8) & 255);
      const x13 = 3328 + ((a >>> 16) & 255);
      const x12 = 3072 + (a >>> 24);
      const x11 = 2816 + (c & 255);
      const x10 = 2560 + ((c >>> 8) & 255);
      const x9 = 2304 + ((c >>> 16) & 255);
      const x8 = 2048 + (c >>> 24);
      const x7 = 1792 + (d & 255);
      const x6 = 1536 + ((d >>> 8) & 255);
      const x5 = 1280 + ((d >>> 16) & 255);
      const x4 = 1024 + (d >>> 24);
      const x3 = 768 + (e & 255);
      const x2 = 512 + ((e >>> 8) & 255);
      const x1 = 256 + ((e >>> 16) & 255);
      const x0 = e >>> 24;
      lo = L[x15] ^ L[x14] ^ L[x13] ^ L[x12] ^ L[x11] ^ L[x10] ^ L[x9] ^ L[x8] ^
        L[x7] ^ L[x6] ^ L[x5] ^ L[x4] ^ L[x3] ^ L[x2] ^ L[x1] ^ L[x0];
      hi = H[x15] ^ H[x14] ^ H[x13] ^ H[x12] ^ H[x11] ^ H[x10] ^ H[x9] ^ H[x8] ^
        H[x7] ^ H[x6] ^ H[x5] ^ H[x4] ^ H[x3] ^ H[x2] ^ H[x1] ^ H[x0];
    }
    i += blocks * 16;
  }
  while (i < n) {
    const idx = (lo ^ b[i++]) & 255;
    lo = LO[idx] ^ ((lo >>> 8) | (hi << 24));
    hi = HI[idx] ^ (hi >>> 8);
  }
  s[0] = lo;
  s[1] = hi;
}

/** CRC-64/GO-ISO of `bytes` by the reference code, as an unsigned 64-bit bigint. */
export function crc64Reference(bytes: Uint8Array): bigint {
  const s = Int32Array.of(-1, -1);
  crc64UpdateReference(s, bytes);
  return (BigInt(~s[1] >>> 0) << 32n) | BigInt(~s[0] >>> 0);
}
