/**
 * The LZ4 block format (FORMAT.md §1.5.1) in TypeScript: a "fast" single-pass compressor in the
 * style of the reference `LZ4_compress_fast` (acceleration 1), and a bounds-checked decompressor
 * that is safe on hostile input.
 *
 * This is the reference codec. The encoder and decoder run the WebAssembly build of the same
 * algorithm (wasm/codec/, via _codec.ts), which makes identical blocks and fails on damaged ones
 * with the same messages (tests/ltx_wasm_test.ts), about 1.5× faster compressing and 3× faster
 * decompressing 4 KiB pages (scripts/bench/lz4.ts). Our own build rather than lz4_flex's
 * (npm:lz4-wasm-nodejs): the decompressor must be ours to harden against hostile input, its
 * output must match this reference byte for byte, and it works in place in a memory the page
 * checksums share; it is also faster on every page set measured.
 *
 * @module
 */

/** Minimum match length of the format. */
const MIN_MATCH = 4;
/** The last 5 bytes of a block are always literals. */
const LAST_LITERALS = 5;
/** The last match must start at least 12 bytes before the end of the block. */
const MF_LIMIT = 12;
/** Matches may reach at most this far back. */
const MAX_DISTANCE = 65535;
/** Bits of the hash table index: 16384 slots (64 KiB), enough for 64 KiB pages. */
const HASH_LOG = 14;
/** Search acceleration: after 2^SKIP_TRIGGER misses the step grows by one. */
const SKIP_TRIGGER = 6;

/** Largest size a block compressed from `n` bytes can have (`LZ4_compressBound`). */
export function compressBound(n: number): number {
  return n + Math.floor(n / 255) + 16;
}

/**
 * Hash table shared by all calls. Slots store `generation + position`; a slot is valid only
 * when it is at least the current generation, which saves clearing the table per call.
 */
const table = new Int32Array(1 << HASH_LOG);
let generation = 1;

function hash(sequence: number): number {
  return Math.imul(sequence, -1640531535) >>> (32 - HASH_LOG); // 2654435761, Knuth
}

function read32(b: Uint8Array, i: number): number {
  return b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24);
}

/**
 * Compresses `src` (at most 2^30 bytes) as one LZ4 block into `dst` starting at `dstPos`.
 * `dst` must have `compressBound(src.length)` bytes free at `dstPos`.
 * Honours the end-of-block rules, so any conforming decoder (Go's included) reads the result.
 * @returns the number of bytes written.
 */
export function compressBlock(src: Uint8Array, dst: Uint8Array, dstPos: number): number {
  const len = src.length;
  const start = dstPos;
  let op = dstPos;
  let anchor = 0;
  if (len >= MF_LIMIT + 1) {
    if (generation > 0x3fffffff - len) {
      table.fill(0);
      generation = 1;
    }
    const gen = generation;
    generation += len + 1;
    const mfLimitPlusOne = len - MF_LIMIT + 1;
    const matchLimit = len - LAST_LITERALS;
    table[hash(read32(src, 0))] = gen;
    let ip = 1;
    let forwardH = hash(read32(src, ip));
    search: for (;;) {
      // Find the next match, stepping faster over data that does not compress.
      let ref: number;
      let forwardIp = ip;
      let step = 1;
      let searchMatchNb = 1 << SKIP_TRIGGER;
      do {
        const h = forwardH;
        ip = forwardIp;
        forwardIp += step;
        step = searchMatchNb++ >> SKIP_TRIGGER;
        if (forwardIp > mfLimitPlusOne) break search;
        ref = table[h] - gen;
        forwardH = hash(read32(src, forwardIp));
        table[h] = gen + ip;
      } while (ref < 0 || ip - ref > MAX_DISTANCE || read32(src, ref) !== read32(src, ip));

      // Extend the match backwards over literals that match too.
      while (ip > anchor && ref > 0 && src[ip - 1] === src[ref - 1]) {
        ip--;
        ref--;
      }

      let tokenPos = op++;
      const litLen = ip - anchor;
      if (litLen >= 15) {
        dst[tokenPos] = 0xf0;
        let rest = litLen - 15;
        for (; rest >= 255; rest -= 255) dst[op++] = 255;
        dst[op++] = rest;
      } else {
        dst[tokenPos] = litLen << 4;
      }
      if (litLen > 32) {
        dst.set(src.subarray(anchor, ip), op);
        op += litLen;
      } else {
        for (let k = anchor; k < ip; k++) dst[op++] = src[k];
      }

      for (;;) {
        // Emit the match that starts at ip (offset ip - ref).
        const offset = ip - ref;
        dst[op++] = offset & 0xff;
        dst[op++] = offset >>> 8;
        let end = ip + MIN_MATCH;
        let r = ref + MIN_MATCH;
        while (end < matchLimit && src[end] === src[r]) {
          end++;
          r++;
        }
        let matchCode = end - ip - MIN_MATCH;
        ip = end;
        if (matchCode >= 15) {
          dst[tokenPos] |= 15;
          for (matchCode -= 15; matchCode >= 255; matchCode -= 255) dst[op++] = 255;
          dst[op++] = matchCode;
        } else {
          dst[tokenPos] |= matchCode;
        }
        anchor = ip;
        if (ip >= mfLimitPlusOne) break search;

        table[hash(read32(src, ip - 2))] = gen + ip - 2;
        // A match right here needs no literals: emit it directly.
        const h = hash(read32(src, ip));
        ref = table[h] - gen;
        table[h] = gen + ip;
        if (ref >= 0 && ip - ref <= MAX_DISTANCE && read32(src, ref) === read32(src, ip)) {
          tokenPos = op++;
          dst[tokenPos] = 0;
          continue;
        }
        break;
      }
      forwardH = hash(read32(src, ++ip));
    }
  }

  // The last sequence: literals only.
  const litLen = len - anchor;
  if (litLen >= 15) {
    dst[op++] = 0xf0;
    let rest = litLen - 15;
    for (; rest >= 255; rest -= 255) dst[op++] = 255;
    dst[op++] = rest;
  } else {
    dst[op++] = litLen << 4;
  }
  dst.set(src.subarray(anchor, len), op);
  op += litLen;
  return op - start;
}

/** Malformed LZ4 data; the caller wraps it into an error that names the file. */
export class LZ4CorruptError extends Error {
  /** Builds an error; `message` says what is wrong with the block. */
  constructor(message: string) {
    super(message);
    this.name = "LZ4CorruptError";
  }
}

/**
 * Decompresses the LZ4 block `src[srcPos, srcEnd)` into `dst[dstPos, dstEnd)`. Matches may
 * reach back to `windowStart` (the start of this block's output, or earlier for linked frame
 * blocks). Every read and write is bounds-checked and every loop consumes input, so hostile data
 * ends in an {@linkcode LZ4CorruptError}, never in a hang or an out-of-range access.
 * @returns the position in `dst` after the last byte written.
 * @throws {LZ4CorruptError} on malformed input or when the output would not fit.
 */
export function decompressBlock(
  src: Uint8Array,
  srcPos: number,
  srcEnd: number,
  dst: Uint8Array,
  dstPos: number,
  dstEnd: number,
  windowStart: number = dstPos,
): number {
  let sp = srcPos;
  let dp = dstPos;
  if (srcEnd > src.length || dstEnd > dst.length || sp > srcEnd || dp > dstEnd) {
    throw new RangeError("decompressBlock: bounds outside the buffers");
  }
  if (sp === srcEnd) throw new LZ4CorruptError("empty LZ4 block");
  for (;;) {
    // A block must end with literals; one that ends right after a match reads as literals
    // running past its end (checked here, not by reading beyond srcEnd).
    if (sp === srcEnd) throw new LZ4CorruptError("LZ4 literals run past the end of the block");
    const token = src[sp++];
    let litLen = token >>> 4;
    if (litLen === 15) {
      let b: number;
      do {
        if (sp >= srcEnd) throw new LZ4CorruptError("LZ4 block truncated in a literal length");
        b = src[sp++];
        litLen += b;
      } while (b === 255);
    }
    if (litLen > srcEnd - sp) {
      throw new LZ4CorruptError("LZ4 literals run past the end of the block");
    }
    if (litLen > dstEnd - dp) {
      throw new LZ4CorruptError("LZ4 block decompresses to more bytes than expected");
    }
    // Byte loops beat the builtins below 64 bytes, and most runs are short.
    if (litLen < 64) {
      for (const end = sp + litLen; sp < end;) dst[dp++] = src[sp++];
    } else {
      dst.set(src.subarray(sp, sp + litLen), dp);
      sp += litLen;
      dp += litLen;
    }
    if (sp === srcEnd) return dp; // the last sequence has no match
    if (srcEnd - sp < 2) throw new LZ4CorruptError("LZ4 block truncated in a match offset");
    const offset = src[sp] | (src[sp + 1] << 8);
    sp += 2;
    if (offset === 0 || offset > dp - windowStart) {
      throw new LZ4CorruptError(`LZ4 match offset ${offset} points before the start of the data`);
    }
    let matchLen = (token & 15) + MIN_MATCH;
    if ((token & 15) === 15) {
      let b: number;
      do {
        if (sp >= srcEnd) throw new LZ4CorruptError("LZ4 block truncated in a match length");
        b = src[sp++];
        matchLen += b;
      } while (b === 255);
    }
    if (matchLen > dstEnd - dp) {
      throw new LZ4CorruptError("LZ4 block decompresses to more bytes than expected");
    }
    let from = dp - offset;
    if (matchLen >= 64 && offset >= matchLen) {
      dst.copyWithin(dp, from, from + matchLen);
      dp += matchLen;
    } else if (matchLen >= 64 && offset === 1) {
      dst.fill(dst[from], dp, dp + matchLen);
      dp += matchLen;
    } else {
      // Byte by byte, which is also right for an overlapping copy (a repeating pattern).
      for (const end = dp + matchLen; dp < end;) dst[dp++] = dst[from++];
    }
  }
}
