/**
 * CRC-64/GO-ISO (Go's `hash/crc64` with the ISO table), the checksum of LTX files (FORMAT.md §1.8)
 * and of the rolling database checksum (§1.9).
 *
 * Computed by the WebAssembly codec (_codec.ts: no tables; the polynomial is sparse enough that
 * eight bytes fold in with a few shifts and XORs, four SIMD lanes at a time); inputs
 * shorter than 64 bytes stay in the TypeScript reference (_crc64_ref.ts), which gives the same
 * results and is what tests compare against.
 *
 * @module
 */

import { crc64Update, pageChecksum as wasmPageChecksum } from "./_codec.ts";

export { crc64Combine, crc64ShiftZeros, patchChecksum } from "./_crc64_combine.ts";

/** Bit 63, set in every stored page, database and file checksum. */
export const CHECKSUM_FLAG = 0x8000000000000000n;

/** The CRC of a complemented state ([low, high] 32 bits), as an unsigned 64-bit bigint. */
export function crc64Digest(state: Int32Array): bigint {
  return (BigInt(~state[1] >>> 0) << 32n) | BigInt(~state[0] >>> 0);
}

/** Incremental CRC-64/GO-ISO: `new CRC64().update(a).update(b).digest()`. */
export class CRC64 {
  /** Complemented state, low and high 32 bits. */
  #state = new Int32Array([-1, -1]);

  /** Feeds more bytes; returns `this` for chaining. */
  update(bytes: Uint8Array): this {
    crc64Update(this.#state, bytes);
    return this;
  }

  /** The CRC of everything fed so far, as an unsigned 64-bit bigint. The state is kept. */
  digest(): bigint {
    return crc64Digest(this.#state);
  }

  /** Starts over, as if newly constructed. */
  reset(): this {
    this.#state[0] = -1;
    this.#state[1] = -1;
    return this;
  }
}

const oneShot = new Int32Array(2);

/** CRC-64/GO-ISO of `bytes`; `crc64("123456789")` is `0xB90956C775A41001n`. */
export function crc64(bytes: Uint8Array): bigint {
  oneShot.fill(-1);
  crc64Update(oneShot, bytes);
  return crc64Digest(oneShot);
}

/**
 * Checksum of one database page (FORMAT.md §1.9): `CHECKSUM_FLAG | crc64(u32be(pgno) ‖ data)`.
 * XOR these over every page except the lock page, then set bit 63, for the database checksum.
 */
export function pageChecksum(pgno: number, data: Uint8Array): bigint {
  return wasmPageChecksum(pgno, data);
}
