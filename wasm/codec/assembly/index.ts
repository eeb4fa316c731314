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
//
// The polynomial is x^64 + x^4 + x^3 + x + 1, so sparse that no table is needed: with the
// register reflected (bit 63 - k holds x^k), feeding a 64-bit word is multiplying by x^64, and
// x^64 = x^4 + x^3 + x + 1 (mod P) turns that into four shifts and their XOR plus a reduction of
// the few bits shifted out. Multiplying by x^512 = (x^4 + x^3 + x + 1)^8 = x^32 + x^24 + x^8 + 1 is
// as cheap, so four v128 registers (eight 64-bit lanes) take 64 bytes a step: lane k takes words
// k, k + 8, k + 16, … and the lanes are joined at the end. Tables remain for single bytes and for
// shifting a register over many zero bytes (`shiftZeros`).

const POLY: u64 = 0xd800000000000000;

/** CRC-64 tables: 0 the bytewise table, 1…8 shift a register over STREAM zero bytes. */
const CRC_TABLE: usize = memory.data(9 * 256 * 8, 64);
/** Zero bytes a `shiftStream` step covers. */
const STREAM: usize = 256;

function initCRCTables(): void {
  for (let i: u64 = 0; i < 256; i++) {
    let crc = i;
    for (let bit = 0; bit < 8; bit++) crc = crc & 1 ? (crc >> 1) ^ POLY : crc >> 1;
    store<u64>(CRC_TABLE + (<usize>i << 3), crc);
  }
  // Shift tables: the shift of each single bit, then of each byte value by linearity.
  const bits = memory.data(64 * 8, 64);
  for (let bit: usize = 0; bit < 64; bit++) {
    let crc = (<u64>1) << bit;
    for (let n: usize = 0; n < STREAM; n += 8) crc = mulX64(crc);
    store<u64>(bits + (bit << 3), crc);
  }
  for (let k: usize = 0; k < 8; k++) {
    for (let v: usize = 0; v < 256; v++) {
      let shifted: u64 = 0;
      for (let j: usize = 0; j < 8; j++) {
        if (v & (1 << j)) shifted ^= load<u64>(bits + ((k * 8 + j) << 3));
      }
      store<u64>(CRC_TABLE + (((1 + k) * 256 + v) << 3), shifted);
    }
  }
}

/**
 * The reflected register `v` times x^64 mod P: the CRC register after 8 zero bytes. The product
 * by x^4 + x^3 + x + 1 = (x + 1)(x^3 + 1) is `a ^ a >> 3` with `a = v ^ v >> 1`; the bits it
 * pushes past x^63 (those of `v`'s low nibble) come back times the same polynomial.
 */
// @ts-ignore: decorator
@inline function mulX64(v: u64): u64 {
  const w = v ^ ((v ^ (v << 1) ^ (v << 3)) << 60);
  const a = w ^ (w >> 1);
  return a ^ (a >> 3);
}

/**
 * Both lanes of `v` times x^512 mod P: by x^32 + x^24 + x^8 + 1 = (x^8 + 1)(x^24 + 1), the 32 bits
 * that pass x^63 (the high half of the product) reduced by x^64 = x^4 + x^3 + x + 1.
 */
// @ts-ignore: decorator
@inline function mulX512(v: v128): v128 {
  const a = v128.xor(v, i64x2.shr_u(v, 8));
  const low = v128.xor(a, i64x2.shr_u(a, 24));
  const high = v128.xor(v128.xor(i64x2.shl(v, 32), i64x2.shl(v, 40)), i64x2.shl(v, 56));
  const b = v128.xor(high, i64x2.shr_u(high, 1));
  return v128.xor(low, v128.xor(b, i64x2.shr_u(b, 3)));
}

// @ts-ignore: decorator
@inline function tbl(t: usize, x: u64): u64 {
  return load<u64>(CRC_TABLE + ((t << 11) | (<usize>(x & 255) << 3)));
}

/**
 * The register `crc` advanced over STREAM zero bytes: CRCs are linear, so the CRC of A ‖ B is
 * shift(CRC of A) ^ (CRC of B started from 0). Tables 1…8 hold the shift of each byte value
 * in each of the 8 byte positions.
 */
// @ts-ignore: decorator
@inline function shiftStream(crc: u64): u64 {
  return tbl(1, crc) ^ tbl(2, crc >> 8) ^ tbl(3, crc >> 16) ^ tbl(4, crc >> 24) ^
    tbl(5, crc >> 32) ^ tbl(6, crc >> 40) ^ tbl(7, crc >> 48) ^ tbl(8, crc >> 56);
}

initCRCTables();

/** Bytes below which `crcUpdate` stays scalar (the vector loop's set-up and join cost more). */
const VECTOR_MIN: i32 = 256;

/** Feeds `len` bytes at `p` into the complemented state `crc`. */
function crcUpdate(crc: u64, p: usize, len: i32): u64 {
  const end = p + <usize>len;
  if (len >= VECTOR_MIN) {
    const stop = p + <usize>(len & ~63);
    let a = v128.xor(v128.load(p), i64x2.replace_lane(i64x2.splat(0), 0, crc));
    let b = v128.load(p, 16);
    let c = v128.load(p, 32);
    let d = v128.load(p, 48);
    p += 64;
    while (p < stop) {
      a = v128.xor(mulX512(a), v128.load(p));
      b = v128.xor(mulX512(b), v128.load(p, 16));
      c = v128.xor(mulX512(c), v128.load(p, 32));
      d = v128.xor(mulX512(d), v128.load(p, 48));
      p += 64;
    }
    crc = joinLanes(a, b, c, d);
  }
  return crcTail(crc, p, end);
}

/**
 * The register of the eight lanes of the vector loop: lane k (of a, b, c, d in order) holds its
 * words' share of the CRC, still owed the shifts of the 8 - k words after it.
 */
// @ts-ignore: decorator
@inline function joinLanes(a: v128, b: v128, c: v128, d: v128): u64 {
  let crc = mulX64(i64x2.extract_lane(a, 0)) ^ i64x2.extract_lane(a, 1);
  crc = mulX64(crc) ^ i64x2.extract_lane(b, 0);
  crc = mulX64(crc) ^ i64x2.extract_lane(b, 1);
  crc = mulX64(crc) ^ i64x2.extract_lane(c, 0);
  crc = mulX64(crc) ^ i64x2.extract_lane(c, 1);
  crc = mulX64(crc) ^ i64x2.extract_lane(d, 0);
  crc = mulX64(crc) ^ i64x2.extract_lane(d, 1);
  return mulX64(crc);
}

/** Feeds the bytes from `p` to `end` into `crc` a word, then a byte, at a time. */
// @ts-ignore: decorator
@inline function crcTail(crc: u64, p: usize, end: usize): u64 {
  while (p + 8 <= end) {
    crc = mulX64(crc ^ load<u64>(p));
    p += 8;
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
 * STATE[8], reading the page once (with `withXXH32` computing its XXH32 into `fusedXXH32` in
 * the same pass). CRCs are linear: with the page checksum's register P' = crc(P, page) from its
 * start P, the file's register from F is crc(F, page) = shift(F ^ P) ^ P', shift being the
 * advance over the page's length in zero bytes (see `shiftStream`).
 */
// @ts-ignore: decorator
@inline function digest(pgno: u32, p: usize, len: i32, withChecksum: bool, withXXH32: bool): void {
  const file = load<u64>(STATE);
  const start = withChecksum ? pageCRCStart(pgno) : file;
  const crc = withXXH32 ? crcAndXXH32(start, p, len) : crcUpdate(start, p, len);
  if (!withChecksum) {
    store<u64>(STATE, crc);
    return;
  }
  store<u64>(STATE, shiftZeros(file ^ start, len) ^ crc);
  store<u64>(STATE, ~crc | 0x8000000000000000, 8);
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
  return xxh32Finish(h + <u32>len, p, end);
}

/** The end of XXH32: the bytes after the last 16-byte stripe (from `p` to `end`), the avalanche. */
// @ts-ignore: decorator
@inline function xxh32Finish(h: u32, p: usize, end: usize): u32 {
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

/** XXH32 (seed 0) of the bytes the last `crcAndXXH32` call read. */
let fusedXXH32: u32 = 0;

/**
 * `crcUpdate(crc, p, len)` and the XXH32 (seed 0) of the same bytes into `fusedXXH32`, in one
 * pass: the CRC's vector shifts and the hash's scalar multiplications run on different units,
 * so the pair costs little more than the hash alone.
 */
function crcAndXXH32(crc: u64, p: usize, len: i32): u64 {
  if (len < VECTOR_MIN) {
    fusedXXH32 = xxh32At(p, len, 0);
    return crcUpdate(crc, p, len);
  }
  const end = p + <usize>len;
  const stop = p + <usize>(len & ~63);
  let v1 = P1 + P2;
  let v2 = P2;
  let v3: u32 = 0;
  let v4: u32 = 0 - P1;
  let a = v128.xor(v128.load(p), i64x2.replace_lane(i64x2.splat(0), 0, crc));
  let b = v128.load(p, 16);
  let c = v128.load(p, 32);
  let d = v128.load(p, 48);
  while (true) {
    v1 = xxRound(v1, load<u32>(p));
    v2 = xxRound(v2, load<u32>(p, 4));
    v3 = xxRound(v3, load<u32>(p, 8));
    v4 = xxRound(v4, load<u32>(p, 12));
    v1 = xxRound(v1, load<u32>(p, 16));
    v2 = xxRound(v2, load<u32>(p, 20));
    v3 = xxRound(v3, load<u32>(p, 24));
    v4 = xxRound(v4, load<u32>(p, 28));
    v1 = xxRound(v1, load<u32>(p, 32));
    v2 = xxRound(v2, load<u32>(p, 36));
    v3 = xxRound(v3, load<u32>(p, 40));
    v4 = xxRound(v4, load<u32>(p, 44));
    v1 = xxRound(v1, load<u32>(p, 48));
    v2 = xxRound(v2, load<u32>(p, 52));
    v3 = xxRound(v3, load<u32>(p, 56));
    v4 = xxRound(v4, load<u32>(p, 60));
    p += 64;
    if (p >= stop) break;
    a = v128.xor(mulX512(a), v128.load(p));
    b = v128.xor(mulX512(b), v128.load(p, 16));
    c = v128.xor(mulX512(c), v128.load(p, 32));
    d = v128.xor(mulX512(d), v128.load(p, 48));
  }
  crc = crcTail(joinLanes(a, b, c, d), p, end);
  while (p + 16 <= end) {
    v1 = xxRound(v1, load<u32>(p));
    v2 = xxRound(v2, load<u32>(p, 4));
    v3 = xxRound(v3, load<u32>(p, 8));
    v4 = xxRound(v4, load<u32>(p, 12));
    p += 16;
  }
  const h = rotl<u32>(v1, 1) + rotl<u32>(v2, 7) + rotl<u32>(v3, 12) + rotl<u32>(v4, 18);
  fusedXXH32 = xxh32Finish(h + <u32>len, p, end);
  return crc;
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

/** Copies `n` bytes 16 at a time; may write up to 15 bytes past `d + n` and read past `s + n`. */
// @ts-ignore: decorator
@inline function copy16(d: usize, s: usize, n: i32): void {
  const e = d + <usize>n;
  do {
    v128.store(d, v128.load(s));
    d += 16;
    s += 16;
  } while (d < e);
}

/** Writes a length continuation (the part above 15) at `op`; returns the new `op`. */
// @ts-ignore: decorator
@inline function putLength(op: usize, rest: i32): usize {
  for (; rest >= 255; rest -= 255) store<u8>(op++, 255);
  store<u8>(op++, <u8>rest);
  return op;
}

/** The match `findMatch` found starts here, earlier in the block. */
let matchRef: usize = 0;

/**
 * Searches from `ip` for the next position whose 4 bytes the hash table has seen (within reach
 * unless `small`), stepping faster over data that does not compress, and inserting every
 * position tried. Returns the position (its match in `matchRef`), or 0 when the search passed
 * `mfLimitPlusOne`. `forwardSeq` carries the 4 bytes at the next position from the hash to the
 * comparison. A function of its own: with fewer variables live, the engine spills fewer of
 * them in this, the hottest loop (3-4 % faster).
 */
// @ts-ignore: decorator
@inline function findMatch(
  ip: usize,
  base: usize,
  gen: i32,
  mfLimitPlusOne: usize,
  small: bool,
): usize {
  let forwardSeq = load<u32>(ip);
  let forwardH = hash(forwardSeq);
  let forwardIp = ip;
  let step: usize = 1;
  let searchMatchNb: u32 = 1 << SKIP_TRIGGER;
  while (true) {
    const h = forwardH;
    const seq = forwardSeq;
    ip = forwardIp;
    forwardIp += step;
    step = <usize>(searchMatchNb++ >> SKIP_TRIGGER);
    if (forwardIp > mfLimitPlusOne) return 0;
    const slot = load<i32>(HASH_TABLE + h);
    forwardSeq = load<u32>(forwardIp);
    forwardH = hash(forwardSeq);
    store<i32>(HASH_TABLE + h, <i32>(ip - base));
    const ref = base + <usize>slot;
    if (slot - gen >= 0 && (small || ip - ref <= <usize>MAX_DISTANCE) && load<u32>(ref) == seq) {
      matchRef = ref;
      return ip;
    }
  }
}

/** `findMatch` in a block of at most 64 KiB, where no match is too far back. */
function findMatchNear(ip: usize, base: usize, gen: i32, mfLimitPlusOne: usize): usize {
  return findMatch(ip, base, gen, mfLimitPlusOne, true);
}

/** `findMatch` in a larger block. */
function findMatchFar(ip: usize, base: usize, gen: i32, mfLimitPlusOne: usize): usize {
  return findMatch(ip, base, gen, mfLimitPlusOne, false);
}

/** `compressAt`, with `small` (a constant once inlined) when `len` is at most 64 KiB. */
// @ts-ignore: decorator
@inline function compressWith(src: usize, len: i32, dst: usize, limit: i32, small: bool): i32 {
  let op = dst;
  let anchor = src;
  if (len >= MF_LIMIT + 1) {
    if (generation > 0x3fffffff - len) {
      memory.fill(HASH_TABLE, 0, 4 << HASH_LOG);
      generation = 1;
    }
    const gen = generation;
    generation += len + 1;
    // Positions are pointers here; a slot holds `gen` + the offset from `src`, which is the
    // pointer minus `base`.
    const base = src - <usize>gen;
    const mfLimitPlusOne = src + <usize>(len - MF_LIMIT + 1);
    const matchLimit = src + <usize>(len - LAST_LITERALS);
    store<i32>(HASH_TABLE + hash(load<u32>(src)), gen);
    let ip = src + 1;
    while (true) {
      ip = small
        ? findMatchNear(ip, base, gen, mfLimitPlusOne)
        : findMatchFar(ip, base, gen, mfLimitPlusOne);
      if (ip == 0) break;
      let ref = matchRef;
      let searching = true;

      // Extend the match backwards over literals that match too.
      while (ip > anchor && ref > src && load<u8>(ip - 1) == load<u8>(ref - 1)) {
        ip--;
        ref--;
      }

      let tokenPos = op++;
      const litLen = <i32>(ip - anchor);
      if (litLen >= 15) {
        store<u8>(tokenPos, 0xf0);
        op = putLength(op, litLen - 15);
      } else {
        store<u8>(tokenPos, <u8>(litLen << 4));
      }
      if (litLen > 0) copy16(op, anchor, litLen);
      op += <usize>litLen;

      while (true) {
        // Emit the match that starts at ip (offset ip - ref).
        store<u16>(op, <u16>(ip - ref));
        op += 2;
        let end = ip + MIN_MATCH;
        let r = ref + MIN_MATCH;
        let extending = true;
        while (end + 8 <= matchLimit) {
          const diff = load<u64>(end) ^ load<u64>(r);
          if (diff != 0) {
            end += <usize>(ctz<u64>(diff) >> 3);
            extending = false;
            break;
          }
          end += 8;
          r += 8;
        }
        if (extending) {
          while (end < matchLimit && load<u8>(end) == load<u8>(r)) {
            end++;
            r++;
          }
        }
        const matchCode = <i32>(end - ip) - MIN_MATCH;
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
        store<i32>(HASH_TABLE + hash(load<u32>(ip - 2)), <i32>(ip - 2 - base));
        // A match right here needs no literals: emit it directly.
        const s2 = load<u32>(ip);
        const h = hash(s2);
        const slot = load<i32>(HASH_TABLE + h);
        store<i32>(HASH_TABLE + h, <i32>(ip - base));
        ref = base + <usize>slot;
        if (slot - gen >= 0 && (small || ip - ref <= <usize>MAX_DISTANCE) && load<u32>(ref) == s2) {
          tokenPos = op++;
          store<u8>(tokenPos, 0);
          continue;
        }
        break;
      }
      if (!searching) break;
      ip++;
    }
  }

  // The last sequence: literals only.
  const litLen = <i32>(src + <usize>len - anchor);
  const size = <i32>(op - dst) + 1 + (litLen >= 15 ? (litLen - 15) / 255 + 1 : 0) + litLen;
  if (size >= limit) return size;
  if (litLen >= 15) {
    store<u8>(op++, 0xf0);
    op = putLength(op, litLen - 15);
  } else {
    store<u8>(op++, <u8>(litLen << 4));
  }
  memory.copy(op, anchor, <usize>litLen);
  op += <usize>litLen;
  return <i32>(op - dst);
}

/**
 * Compresses `src[0, len)` as one LZ4 block at `dst` (compressBound(len) bytes of room plus 16
 * of slack). The same algorithm, decisions and output as src/ltx/_lz4_block.ts.
 * Returns the block size. A block that comes to `limit` bytes or more is not finished: its
 * size is returned without its last literals written (a frame stores such a page raw, so the
 * copy would be wasted; pass i32.MAX_VALUE for the whole block).
 */
function compressAt(src: usize, len: i32, dst: usize, limit: i32): i32 {
  // No match in a block of at most 64 KiB can be too far back: a loop without that check.
  return len <= MAX_DISTANCE + 1
    ? compressWith(src, len, dst, limit, true)
    : compressWith(src, len, dst, limit, false);
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
    // Fast path: short literals and match, far from both ends: every check but the offset's
    // passes, so only that one is made.
    if (token < 0xf0 && (token & 15) != 15 && se - sp >= 32 && de - dp >= 32) {
      const ll = <usize>(token >> 4);
      v128.store(dp, v128.load(sp));
      sp += ll;
      dp += ll;
      const off = <usize>load<u16>(sp);
      sp += 2;
      if (off == 0 || off > dp - ws) {
        store<i32>(STATE, <i32>off, 16);
        return BAD_OFFSET;
      }
      const ml = <usize>(token & 15) + MIN_MATCH;
      const f = dp - off;
      if (off >= 16) {
        v128.store(dp, v128.load(f));
        v128.store(dp, v128.load(f, 16), 16);
        dp += ml;
        continue;
      }
      if (off >= 8) {
        store<u64>(dp, load<u64>(f));
        store<u64>(dp, load<u64>(f, 8), 8);
        store<u64>(dp, load<u64>(f, 16), 16);
        dp += ml;
        continue;
      }
      const e = dp + ml;
      let q = f;
      while (dp < e) store<u8>(dp++, load<u8>(q++));
      continue;
    }
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
        v128.store(dp, v128.load(sp));
      } else if (litLen <= 64) {
        copy16(dp, sp, litLen);
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
    if (offset >= 16) {
      if (matchLen <= 16) {
        v128.store(dp, v128.load(from));
      } else if (matchLen <= 64 || offset < matchLen) {
        copy16(dp, from, matchLen);
      } else {
        memory.copy(dp, from, <usize>matchLen);
      }
      dp += <usize>matchLen;
    } else if (offset >= 8) {
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
  if (block) {
    const n = compressAt(src, len, dst + 10, i32.MAX_VALUE);
    store<u32>(dst, bswap<u32>(<u32>n), 6);
    store<u64>(STATE, crcUpdate(load<u64>(STATE), dst, 10));
    digest(pgno, src, len, withChecksum, false);
    return 10 + n;
  }
  // The checksums first: the page's pass gives the frame's content checksum too.
  store<u64>(STATE, crcUpdate(load<u64>(STATE), dst, 6));
  digest(pgno, src, len, withChecksum, true);
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
  store<u32>(at, fusedXXH32, 4);
  return <i32>(at + 8 - dst);
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
  if (withXXH32) {
    digest(pgno, OUT_BUF, len, withChecksum, true);
    return fusedXXH32;
  }
  digest(pgno, OUT_BUF, len, withChecksum, false);
  return 0;
}
