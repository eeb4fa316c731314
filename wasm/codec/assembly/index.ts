// The LTX page codec in AssemblyScript (see ../README.md): LZ4 block compression and
// decompression, xxHash32, CRC-64/GO-ISO, and the fused page encoders and digests that
// src/ltx/_codec.ts calls. Every function works on fixed regions of linear memory: the caller
// copies its input to IN_BUF, reads results from OUT_BUF and the STATE words. Nothing allocates.
//
// The LZ4 compressor mirrors src/ltx/_lz4_block.ts step for step, so both produce the same
// bytes (tests/ltx_wasm_test.ts checks it); the decompressor checks every length and offset in
// the same order as the TypeScript one and reports the same failures as negative codes.

// ---- Memory layout ----------------------------------------------------------------------------

/** Size of IN_BUF and OUT_BUF: a 64 KiB page, its largest encoding, and slack for wide copies. */
const IO_SIZE: i32 = 1 << 17;
const HASH_LOG: i32 = 14;
/**
 * CRC-64/GO-ISO tables: 0…15 for slicing-by-16 (table k advances a byte by k+1 positions),
 * 16…23 shift a register over STREAM zero bytes (see `shiftStream`).
 */
const CRC_TABLE: usize = memory.data(24 * 256 * 8, 64);
/** Bytes of each of the four interleaved CRC streams. */
const STREAM: usize = 256;
/** LZ4 hash table: generation + position per slot (see `generation`). */
const HASH_TABLE: usize = memory.data(4 << HASH_LOG, 64);
/** Input region (pages to encode, blocks to decode, bytes to checksum). */
const IN_BUF: usize = memory.data(IO_SIZE, 64);
/** Output region (encoded frames, decoded pages). */
const OUT_BUF: usize = memory.data(IO_SIZE, 64);
/**
 * Words shared with JavaScript: [0] the complemented CRC-64 state being updated, [8] the last
 * page checksum (with bit 63 set), [16] the offset of the last bad LZ4 match, [24] the XOR of
 * the page checksums of the last `encodePages` call; [32] is scratch for the page number of a
 * page checksum.
 */
const STATE: usize = memory.data(64, 64);
/** Pages one `encodePages` call takes at most (512-byte pages filling IN_BUF). */
const MAX_BATCH: i32 = IO_SIZE >> 9;
/** The page numbers of an `encodePages` call, u32 each. */
const BATCH_PGNOS: usize = memory.data(MAX_BATCH << 2, 64);
/** The frame sizes an `encodePages` call wrote, u32 each. */
const BATCH_SIZES: usize = memory.data(MAX_BATCH << 2, 64);

/** Where the input region starts. */
export function inPtr(): usize {
  return IN_BUF;
}
/** Where the output region starts. */
export function outPtr(): usize {
  return OUT_BUF;
}
/** Where the shared state words start. */
export function statePtr(): usize {
  return STATE;
}
/** Size of each of the two regions. */
export function ioSize(): i32 {
  return IO_SIZE;
}
/** Where the page numbers of an `encodePages` call go (its frame sizes follow them). */
export function batchPtr(): usize {
  return BATCH_PGNOS;
}
/** Pages an `encodePages` call takes at most. */
export function maxBatch(): i32 {
  return MAX_BATCH;
}

// ---- CRC-64/GO-ISO ----------------------------------------------------------------------------

const POLY: u64 = 0xd800000000000000;

function initCRCTables(): void {
  for (let i: u64 = 0; i < 256; i++) {
    let crc = i;
    for (let bit = 0; bit < 8; bit++) crc = crc & 1 ? (crc >> 1) ^ POLY : crc >> 1;
    store<u64>(CRC_TABLE + (<usize>i << 3), crc);
  }
  for (let t: usize = 1; t < 16; t++) {
    for (let i: usize = 0; i < 256; i++) {
      const prev = load<u64>(CRC_TABLE + (((t - 1) * 256 + i) << 3));
      store<u64>(
        CRC_TABLE + ((t * 256 + i) << 3),
        (prev >> 8) ^ load<u64>(CRC_TABLE + (<usize>(prev & 255) << 3)),
      );
    }
  }
  // Shift tables: the shift of each single bit, then of each byte value by linearity.
  const bits = memory.data(64 * 8, 64);
  for (let bit: usize = 0; bit < 64; bit++) {
    let crc = (<u64>1) << bit;
    for (let n: usize = 0; n < STREAM; n++) crc = load<u64>(CRC_TABLE + (<usize>(crc & 255) << 3)) ^ (crc >> 8);
    store<u64>(bits + (bit << 3), crc);
  }
  for (let k: usize = 0; k < 8; k++) {
    for (let v: usize = 0; v < 256; v++) {
      let shifted: u64 = 0;
      for (let j: usize = 0; j < 8; j++) {
        if (v & (1 << j)) shifted ^= load<u64>(bits + ((k * 8 + j) << 3));
      }
      store<u64>(CRC_TABLE + (((16 + k) * 256 + v) << 3), shifted);
    }
  }
}
initCRCTables();

// @ts-ignore: decorator
@inline function tbl(t: usize, x: u64): u64 {
  return load<u64>(CRC_TABLE + ((t << 11) | (<usize>(x & 255) << 3)));
}

/** Scratch words for `step8`, one per stream. */
const CRC_SCRATCH: usize = memory.data(32, 64);

// @ts-ignore: decorator
@inline function tblAt(t: usize, p: usize): u64 {
  return load<u64>(CRC_TABLE + (t << 11) + (<usize>load<u8>(p) << 3));
}

/**
 * One slicing-by-8 step of one of four independent streams. Four CRCs in flight hide the
 * latency of the table lookups (one stream runs at about 1.5 GB/s, four at about 2), and
 * taking the 8 indexes as byte loads from a scratch word instead of shifts and masks saves a
 * third of the instructions (about 2.8 GB/s).
 */
// @ts-ignore: decorator
@inline function step8(crc: u64, word: u64, scratch: usize): u64 {
  store<u64>(scratch, crc ^ word);
  return tblAt(7, scratch) ^ tblAt(6, scratch + 1) ^ tblAt(5, scratch + 2) ^
    tblAt(4, scratch + 3) ^ tblAt(3, scratch + 4) ^ tblAt(2, scratch + 5) ^
    tblAt(1, scratch + 6) ^ tblAt(0, scratch + 7);
}

/**
 * The register `crc` advanced over STREAM zero bytes: CRCs are linear, so the CRC of A ‖ B is
 * shift(CRC of A) ^ (CRC of B started from 0). Tables 16…23 hold the shift of each byte value
 * in each of the 8 byte positions.
 */
// @ts-ignore: decorator
@inline function shiftStream(crc: u64): u64 {
  return tbl(16, crc) ^ tbl(17, crc >> 8) ^ tbl(18, crc >> 16) ^ tbl(19, crc >> 24) ^
    tbl(20, crc >> 32) ^ tbl(21, crc >> 40) ^ tbl(22, crc >> 48) ^ tbl(23, crc >> 56);
}

/** Feeds `len` bytes at `p` into the complemented state `crc`. */
function crcUpdate(crc: u64, p: usize, len: i32): u64 {
  let end = p + <usize>len;
  // Blocks of four streams of STREAM bytes each, combined by shifting.
  while (p + 4 * STREAM <= end) {
    let a = crc;
    let b: u64 = 0;
    let c: u64 = 0;
    let d: u64 = 0;
    const stop = p + STREAM;
    while (p < stop) {
      a = step8(a, load<u64>(p), CRC_SCRATCH);
      b = step8(b, load<u64>(p, STREAM), CRC_SCRATCH + 8);
      c = step8(c, load<u64>(p, 2 * STREAM), CRC_SCRATCH + 16);
      d = step8(d, load<u64>(p, 3 * STREAM), CRC_SCRATCH + 24);
      p += 8;
    }
    crc = shiftStream(shiftStream(shiftStream(a) ^ b) ^ c) ^ d;
    p += 3 * STREAM;
  }
  while (p + 16 <= end) {
    const a = crc ^ load<u64>(p);
    const b = load<u64>(p, 8);
    crc = tbl(15, a) ^ tbl(14, a >> 8) ^ tbl(13, a >> 16) ^ tbl(12, a >> 24) ^
      tbl(11, a >> 32) ^ tbl(10, a >> 40) ^ tbl(9, a >> 48) ^ tbl(8, a >> 56) ^
      tbl(7, b) ^ tbl(6, b >> 8) ^ tbl(5, b >> 16) ^ tbl(4, b >> 24) ^
      tbl(3, b >> 32) ^ tbl(2, b >> 40) ^ tbl(1, b >> 48) ^ tbl(0, b >> 56);
    p += 16;
  }
  while (p < end) {
    crc = tbl(0, crc ^ <u64>load<u8>(p)) ^ (crc >> 8);
    p++;
  }
  return crc;
}

/** The register `crc` advanced over `n` zero bytes (a multiple of STREAM is fastest). */
function shiftZeros(crc: u64, n: i32): u64 {
  for (; n >= <i32>STREAM; n -= <i32>STREAM) crc = shiftStream(crc);
  for (; n > 0; n--) crc = tbl(0, crc) ^ (crc >> 8);
  return crc;
}

/** Feeds IN_BUF[0, len) into the state word STATE[0]. */
export function crc64Update(len: i32): void {
  store<u64>(STATE, crcUpdate(load<u64>(STATE), IN_BUF, len));
}

/** The register after u32be(pgno), the start of a page checksum. */
function pageCRCStart(pgno: u32): u64 {
  store<u32>(STATE + 32, bswap<u32>(pgno));
  return crcUpdate(~(<u64>0), STATE + 32, 4);
}

/** Page checksum: CHECKSUM_FLAG | crc64(u32be(pgno) ‖ page), the page at `p`. */
function pageCRC(pgno: u32, p: usize, len: i32): u64 {
  return ~crcUpdate(pageCRCStart(pgno), p, len) | 0x8000000000000000;
}

/**
 * Feeds the page at `p` into STATE[0] and, with `withChecksum`, puts its page checksum into
 * STATE[8], reading the page once: both registers are the page's CRC from zero combined with
 * their own start shifted over the page (see `shiftStream`).
 */
function digest(pgno: u32, p: usize, len: i32, withChecksum: bool): void {
  if (!withChecksum) {
    store<u64>(STATE, crcUpdate(load<u64>(STATE), p, len));
    return;
  }
  const fromZero = crcUpdate(0, p, len);
  store<u64>(STATE, shiftZeros(load<u64>(STATE), len) ^ fromZero);
  const page = shiftZeros(pageCRCStart(pgno), len) ^ fromZero;
  store<u64>(STATE, ~page | 0x8000000000000000, 8);
}

/** The page checksum of IN_BUF[0, len) into STATE[8]. */
export function pageChecksum(pgno: u32, len: i32): void {
  store<u64>(STATE, pageCRC(pgno, IN_BUF, len), 8);
}

// ---- xxHash32 ---------------------------------------------------------------------------------

const P1: u32 = 2654435761;
const P2: u32 = 2246822519;
const P3: u32 = 3266489917;
const P4: u32 = 668265263;
const P5: u32 = 374761393;

// @ts-ignore: decorator
@inline function xxRound(acc: u32, lane: u32): u32 {
  return rotl<u32>(acc + lane * P2, 13) * P1;
}

function xxh32At(p: usize, len: i32, seed: u32): u32 {
  const end = p + <usize>len;
  let h: u32;
  if (len >= 16) {
    // Four scalar lanes: a SIMD i32x4 version measured 40 % slower (one long chain of
    // multiplications instead of four independent ones).
    let v1 = seed + P1 + P2;
    let v2 = seed + P2;
    let v3 = seed;
    let v4 = seed - P1;
    const limit = end - 16;
    while (p <= limit) {
      v1 = xxRound(v1, load<u32>(p));
      v2 = xxRound(v2, load<u32>(p, 4));
      v3 = xxRound(v3, load<u32>(p, 8));
      v4 = xxRound(v4, load<u32>(p, 12));
      p += 16;
    }
    h = rotl<u32>(v1, 1) + rotl<u32>(v2, 7) + rotl<u32>(v3, 12) + rotl<u32>(v4, 18);
  } else {
    h = seed + P5;
  }
  h += <u32>len;
  while (p + 4 <= end) {
    h = rotl<u32>(h + load<u32>(p) * P3, 17) * P4;
    p += 4;
  }
  while (p < end) {
    h = rotl<u32>(h + <u32>load<u8>(p) * P5, 11) * P1;
    p++;
  }
  h ^= h >> 15;
  h *= P2;
  h ^= h >> 13;
  h *= P3;
  h ^= h >> 16;
  return h;
}

/** XXH32 of IN_BUF[start, end) with `seed`. */
export function xxh32(start: i32, end: i32, seed: u32): u32 {
  return xxh32At(IN_BUF + <usize>start, end - start, seed);
}

// ---- LZ4 block compression ---------------------------------------------------------------------

const MIN_MATCH: i32 = 4;
const LAST_LITERALS: i32 = 5;
const MF_LIMIT: i32 = 12;
const MAX_DISTANCE: i32 = 65535;
const SKIP_TRIGGER: i32 = 6;

/** Slots hold `generation + position`; older generations read as empty, saving a clear per call. */
let generation: i32 = 1;

// @ts-ignore: decorator
@inline function hash(sequence: u32): usize {
  return <usize>((sequence * 2654435761) >> (32 - HASH_LOG)) << 2;
}

/** Copies `n` bytes 8 at a time; may write up to 7 bytes past `d + n` and read past `s + n`. */
// @ts-ignore: decorator
@inline function wildCopy(d: usize, s: usize, n: i32): void {
  const e = d + <usize>n;
  do {
    store<u64>(d, load<u64>(s));
    d += 8;
    s += 8;
  } while (d < e);
}

/** Writes a length continuation (the part above 15) at `op`; returns the new `op`. */
// @ts-ignore: decorator
@inline function putLength(op: usize, rest: i32): usize {
  for (; rest >= 255; rest -= 255) store<u8>(op++, 255);
  store<u8>(op++, <u8>rest);
  return op;
}

/**
 * Compresses `src[0, len)` as one LZ4 block at `dst` (compressBound(len) bytes of room plus 8
 * of slack). The same algorithm, decisions and output as src/ltx/_lz4_block.ts.
 * Returns the block size. A block that comes to `limit` bytes or more is not finished: its
 * size is returned without its last literals written (a frame stores such a page raw, so the
 * copy would be wasted; pass i32.MAX_VALUE for the whole block).
 */
function compressAt(src: usize, len: i32, dst: usize, limit: i32): i32 {
  let op = dst;
  let anchor: i32 = 0;
  if (len >= MF_LIMIT + 1) {
    if (generation > 0x3fffffff - len) {
      memory.fill(HASH_TABLE, 0, 4 << HASH_LOG);
      generation = 1;
    }
    const gen = generation;
    generation += len + 1;
    const mfLimitPlusOne = len - MF_LIMIT + 1;
    const matchLimit = len - LAST_LITERALS;
    // No match in a block of at most 64 KiB can be too far back.
    const small = len <= MAX_DISTANCE + 1;
    store<i32>(HASH_TABLE + hash(load<u32>(src)), gen);
    let ip: i32 = 1;
    let forwardH = hash(load<u32>(src + 1));
    let searching = true;
    while (searching) {
      // Find the next match, stepping faster over data that does not compress.
      let ref: i32 = 0;
      let forwardIp = ip;
      let step: i32 = 1;
      let searchMatchNb: i32 = 1 << SKIP_TRIGGER;
      let found = false;
      while (true) {
        const h = forwardH;
        ip = forwardIp;
        forwardIp += step;
        step = searchMatchNb++ >> SKIP_TRIGGER;
        if (forwardIp > mfLimitPlusOne) break;
        ref = load<i32>(HASH_TABLE + h) - gen;
        forwardH = hash(load<u32>(src + <usize>forwardIp));
        store<i32>(HASH_TABLE + h, gen + ip);
        if (
          ref >= 0 && (small || ip - ref <= MAX_DISTANCE) &&
          load<u32>(src + <usize>ref) == load<u32>(src + <usize>ip)
        ) {
          found = true;
          break;
        }
      }
      if (!found) break;

      // Extend the match backwards over literals that match too.
      while (
        ip > anchor && ref > 0 && load<u8>(src + <usize>(ip - 1)) == load<u8>(src + <usize>(ref - 1))
      ) {
        ip--;
        ref--;
      }

      let tokenPos = op++;
      const litLen = ip - anchor;
      if (litLen >= 15) {
        store<u8>(tokenPos, 0xf0);
        op = putLength(op, litLen - 15);
      } else {
        store<u8>(tokenPos, <u8>(litLen << 4));
      }
      if (litLen > 0) wildCopy(op, src + <usize>anchor, litLen);
      op += <usize>litLen;

      while (true) {
        // Emit the match that starts at ip (offset ip - ref).
        store<u16>(op, <u16>(ip - ref));
        op += 2;
        let end = ip + MIN_MATCH;
        let r = ref + MIN_MATCH;
        let extending = true;
        while (end + 8 <= matchLimit) {
          const diff = load<u64>(src + <usize>end) ^ load<u64>(src + <usize>r);
          if (diff != 0) {
            end += <i32>(ctz<u64>(diff) >> 3);
            extending = false;
            break;
          }
          end += 8;
          r += 8;
        }
        if (extending) {
          while (end < matchLimit && load<u8>(src + <usize>end) == load<u8>(src + <usize>r)) {
            end++;
            r++;
          }
        }
        let matchCode = end - ip - MIN_MATCH;
        ip = end;
        if (matchCode >= 15) {
          store<u8>(tokenPos, load<u8>(tokenPos) | 15);
          op = putLength(op, matchCode - 15);
        } else {
          store<u8>(tokenPos, load<u8>(tokenPos) | <u8>matchCode);
        }
        anchor = ip;
        if (ip >= mfLimitPlusOne) {
          searching = false;
          break;
        }

        store<i32>(HASH_TABLE + hash(load<u32>(src + <usize>(ip - 2))), gen + ip - 2);
        // A match right here needs no literals: emit it directly.
        const h = hash(load<u32>(src + <usize>ip));
        ref = load<i32>(HASH_TABLE + h) - gen;
        store<i32>(HASH_TABLE + h, gen + ip);
        if (
          ref >= 0 && (small || ip - ref <= MAX_DISTANCE) &&
          load<u32>(src + <usize>ref) == load<u32>(src + <usize>ip)
        ) {
          tokenPos = op++;
          store<u8>(tokenPos, 0);
          continue;
        }
        break;
      }
      if (searching) forwardH = hash(load<u32>(src + <usize>(++ip)));
    }
  }

  // The last sequence: literals only.
  const litLen = len - anchor;
  const size = <i32>(op - dst) + 1 + (litLen >= 15 ? (litLen - 15) / 255 + 1 : 0) + litLen;
  if (size >= limit) return size;
  if (litLen >= 15) {
    store<u8>(op++, 0xf0);
    op = putLength(op, litLen - 15);
  } else {
    store<u8>(op++, <u8>(litLen << 4));
  }
  memory.copy(op, src + <usize>anchor, <usize>litLen);
  op += <usize>litLen;
  return <i32>(op - dst);
}

/** Compresses IN_BUF[0, len) as one LZ4 block to OUT_BUF; returns its size. */
export function compressBlock(len: i32): i32 {
  return compressAt(IN_BUF, len, OUT_BUF, i32.MAX_VALUE);
}

// ---- LZ4 block decompression --------------------------------------------------------------------

/** Failure codes of `decompress`, mapped to messages by src/ltx/_codec.ts. */
const EMPTY: i32 = -1;
const TRUNCATED_LITERAL_LENGTH: i32 = -2;
const LITERALS_PAST_END: i32 = -3;
const OUTPUT_TOO_LONG: i32 = -4;
const TRUNCATED_OFFSET: i32 = -5;
const BAD_OFFSET: i32 = -6;
const TRUNCATED_MATCH_LENGTH: i32 = -7;

/**
 * Decompresses the block IN_BUF[srcPos, srcEnd) into OUT_BUF[dstPos, dstEnd); matches may reach
 * back to OUT_BUF[windowStart]. Checks every length and offset in the order of
 * src/ltx/_lz4_block.ts. Wide copies may write up to 15 bytes beyond dstEnd and read up to 16
 * beyond srcEnd, always inside the regions' slack (callers keep 256 bytes free).
 * Returns the output position after the last byte, or a negative failure code (BAD_OFFSET
 * leaves the offset in STATE[16]).
 */
export function decompress(
  srcPos: i32,
  srcEnd: i32,
  dstPos: i32,
  dstEnd: i32,
  windowStart: i32,
): i32 {
  let sp = IN_BUF + <usize>srcPos;
  const se = IN_BUF + <usize>srcEnd;
  let dp = OUT_BUF + <usize>dstPos;
  const de = OUT_BUF + <usize>dstEnd;
  const ws = OUT_BUF + <usize>windowStart;
  if (sp == se) return EMPTY;
  while (true) {
    if (sp == se) return LITERALS_PAST_END; // the block ended right after a match
    const token = <i32>load<u8>(sp++);
    let litLen = token >> 4;
    if (litLen == 15) {
      let b: i32;
      do {
        if (sp >= se) return TRUNCATED_LITERAL_LENGTH;
        b = <i32>load<u8>(sp++);
        litLen += b;
      } while (b == 255);
    }
    if (<usize>litLen > se - sp) return LITERALS_PAST_END;
    if (<usize>litLen > de - dp) return OUTPUT_TOO_LONG;
    if (litLen > 0) {
      if (litLen <= 16) {
        store<u64>(dp, load<u64>(sp));
        store<u64>(dp, load<u64>(sp, 8), 8);
      } else if (litLen <= 64) {
        wildCopy(dp, sp, litLen);
      } else {
        memory.copy(dp, sp, <usize>litLen); // the engine's memmove wins on long runs
      }
      sp += <usize>litLen;
      dp += <usize>litLen;
    }
    if (sp == se) return <i32>(dp - OUT_BUF); // the last sequence has no match
    if (se - sp < 2) return TRUNCATED_OFFSET;
    const offset = <i32>load<u16>(sp);
    sp += 2;
    if (offset == 0 || <usize>offset > dp - ws) {
      store<i32>(STATE, offset, 16);
      return BAD_OFFSET;
    }
    let matchLen = (token & 15) + MIN_MATCH;
    if ((token & 15) == 15) {
      let b: i32;
      do {
        if (sp >= se) return TRUNCATED_MATCH_LENGTH;
        b = <i32>load<u8>(sp++);
        matchLen += b;
      } while (b == 255);
    }
    if (<usize>matchLen > de - dp) return OUTPUT_TOO_LONG;
    let from = dp - <usize>offset;
    if (offset >= 8) {
      if (matchLen <= 16) {
        store<u64>(dp, load<u64>(from));
        store<u64>(dp, load<u64>(from, 8), 8);
      } else if (matchLen <= 64 || offset < matchLen) {
        wildCopy(dp, from, matchLen);
      } else {
        memory.copy(dp, from, <usize>matchLen);
      }
      dp += <usize>matchLen;
    } else if (offset == 1) {
      memory.fill(dp, load<u8>(from), <usize>matchLen);
      dp += <usize>matchLen;
    } else if (matchLen < 16) {
      // Overlapping: byte by byte repeats the pattern.
      const end = dp + <usize>matchLen;
      while (dp < end) store<u8>(dp++, load<u8>(from++));
    } else {
      // A short repeating pattern: lay down its first 8 bytes one by one, then copy 8 at a time
      // from a whole number of periods back (at least 8 bytes, so the words never overlap).
      for (let k: usize = 0; k < 8; k++) store<u8>(dp + k, load<u8>(from + k));
      let dist = <usize>offset;
      while (dist < 8) dist += <usize>offset;
      wildCopy(dp + 8, dp + 8 - dist, matchLen - 8);
      dp += <usize>matchLen;
    }
  }
}

// ---- Fused page operations ----------------------------------------------------------------------

/** FORMAT.md §1.5: the LZ4 frame header Go ltx v0.5 writes (magic, FLG, BD, HC), little end. */
const FRAME_MAGIC: u32 = 0x184d2204;
const FRAME_DESCRIPTOR: u32 = 0xa74064; // FLG 0x64, BD 0x40, HC 0xa7
const RAW_BLOCK: u32 = 0x80000000;

/**
 * Encodes the page `src[0, len)` with number `pgno` as a whole LTX page frame at `dst`: the
 * 6-byte page header, then the block payload (u32 BE size + LZ4 block) or one LZ4 frame exactly
 * as src/ltx/_page_codec.ts writes it. Feeds the bytes the file checksum covers (page header,
 * block size field, page) into STATE[0], and with `withChecksum` puts the page checksum into
 * STATE[8]. Returns the page frame size.
 */
// @ts-ignore: decorator
@inline function encodeFrame(
  pgno: u32,
  src: usize,
  len: i32,
  dst: usize,
  block: bool,
  withChecksum: bool,
): i32 {
  store<u32>(dst, bswap<u32>(pgno));
  store<u16>(dst, block ? 0x0100 : 0, 4);
  let size: i32;
  let covered: i32;
  if (block) {
    const n = compressAt(src, len, dst + 10, i32.MAX_VALUE);
    store<u32>(dst, bswap<u32>(<u32>n), 6);
    size = 10 + n;
    covered = 10;
  } else {
    store<u32>(dst, FRAME_MAGIC, 6);
    store<u32>(dst, FRAME_DESCRIPTOR, 10); // 3 bytes; the 4th is overwritten next
    let at = dst + 13;
    const n = compressAt(src, len, at + 4, len);
    if (n < len) {
      store<u32>(at, <u32>n);
      at += 4 + <usize>n;
    } else {
      // Incompressible: a stored block, which also keeps the block within 64 KiB.
      store<u32>(at, <u32>len | RAW_BLOCK);
      memory.copy(at + 4, src, <usize>len);
      at += 4 + <usize>len;
    }
    store<u32>(at, 0); // end mark
    store<u32>(at, xxh32At(src, len, 0), 4);
    size = <i32>(at + 8 - dst);
    covered = 6;
  }
  store<u64>(STATE, crcUpdate(load<u64>(STATE), dst, covered));
  digest(pgno, src, len, withChecksum);
  return size;
}

/**
 * Encodes the page IN_BUF[0, len) with number `pgno` as a whole LTX page frame at OUT_BUF (see
 * `encodeFrame`). Returns the page frame size.
 */
export function encodePage(pgno: u32, len: i32, block: bool, withChecksum: bool): i32 {
  return encodeFrame(pgno, IN_BUF, len, OUT_BUF, block, withChecksum);
}

/**
 * `encodePage` for `count` pages of `len` bytes held back to back at `src`, their numbers in
 * the `count` u32 at `pgnos`: the frames back to back at `dst`, their sizes in the `count` u32
 * at `sizes`, the file checksum in STATE[0], and with `withChecksum` the XOR of the page
 * checksums in STATE[24]. The caller keeps `count * (6 + maxPayloadSize(len))` bytes (and 256
 * of slack) free at `dst`. Returns the bytes of all the frames.
 */
export function encodeFramesAt(
  src: usize,
  pgnos: usize,
  count: i32,
  len: i32,
  dst: usize,
  sizes: usize,
  block: bool,
  withChecksum: bool,
): i32 {
  let out = dst;
  let checksums: u64 = 0;
  for (let i = 0; i < count; i++) {
    const pgno = load<u32>(pgnos + (<usize>i << 2));
    const size = encodeFrame(pgno, src + <usize>(i * len), len, out, block, withChecksum);
    if (withChecksum) checksums ^= load<u64>(STATE, 8);
    store<u32>(sizes + (<usize>i << 2), <u32>size);
    out += <usize>size;
  }
  store<u64>(STATE, checksums, 24);
  return <i32>(out - dst);
}

/**
 * `encodeFramesAt` on the fixed regions: the pages in IN_BUF, their numbers at `batchPtr()`,
 * the frames to OUT_BUF and their sizes after the numbers (at `batchPtr() + 4 * maxBatch()`).
 * One call per run of pages instead of per page: the caller copies the run in and the frames
 * out once.
 */
export function encodePages(count: i32, len: i32, block: bool, withChecksum: bool): i32 {
  return encodeFramesAt(IN_BUF, BATCH_PGNOS, count, len, OUT_BUF, BATCH_SIZES, block, withChecksum);
}

/**
 * Where the memory this module does not use starts: in a memory shared with another thread
 * (the `shared` build), the pages and frames of `encodeFramesAt` live above it.
 */
export function heapBase(): usize {
  return __heap_base;
}

/**
 * For a page decoded into OUT_BUF[0, len): feeds it into STATE[0], with `withChecksum` puts its
 * page checksum into STATE[8], and with `withXXH32` returns its XXH32 (else 0).
 */
export function digestPage(pgno: u32, len: i32, withChecksum: bool, withXXH32: bool): u32 {
  digest(pgno, OUT_BUF, len, withChecksum);
  return withXXH32 ? xxh32At(OUT_BUF, len, 0) : 0;
}
