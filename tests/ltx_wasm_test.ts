/**
 * The WebAssembly codec (src/ltx/_codec.ts, built from wasm/codec/) against the TypeScript
 * reference (_lz4_block.ts, _xxh32.ts, _crc64_ref.ts, the writers and readers of
 * _page_codec.ts): over thousands of pages of every page size (generated random, zero,
 * repetitive and text-like pages, pages of generated SQLite databases, and every page of the
 * fixture databases and LTX files) both must produce identical bytes for the LZ4 block, the
 * block payload and the LZ4 frame, identical decompression (and identical errors on damaged
 * blocks), identical XXH32 and CRC-64 at odd lengths and unaligned offsets, and identical
 * page checksums.
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import {
  CHECKSUM_FLAG,
  crc64,
  Decoder,
  encodePageFrames,
  Encoder,
  type Header,
  LTXError,
  pageChecksum,
  SHARED_CODER_RESERVED_BYTES,
  SharedFrameEncoder,
} from "../src/ltx/mod.ts";
import {
  compressBlock,
  compressBlockWasm,
  compressBound,
  crc64Reference,
  crc64Update,
  crc64UpdateReference,
  decodePage,
  decompressBlock,
  decompressBlockWasm,
  encodePageFrame,
  LZ4CorruptError,
  maxPayloadSize,
  type PageDigest,
  useReferenceCodec,
  writeBlockPayload,
  writeFramePayload,
  xxh32,
  xxh32Wasm,
} from "../src/ltx/testing.ts";

const fixtures = new URL("./fixtures/", import.meta.url);
const PAGE_SIZES = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536];

/** A small seeded generator, so a failure can be reproduced. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return s / 2 ** 32;
  };
}

const WORDS = ["select", "insert", "update", "the", "customer", "order", "id", "name", "sqlite"];

/** Generated pages of `size` bytes, of several kinds. */
function generatedPages(size: number, seed: number): Uint8Array[] {
  const rand = rng(seed);
  const pages: Uint8Array[] = [];
  const random = () => {
    const p = new Uint8Array(size);
    for (let i = 0; i < size; i++) p[i] = rand() * 256;
    return p;
  };
  pages.push(new Uint8Array(size)); // zero
  pages.push(new Uint8Array(size).fill(0xa5));
  pages.push(random());
  for (const period of [1, 2, 3, 5, 7, 8, 9, 13, 64, 300]) {
    const unit = Array.from({ length: period }, () => Math.floor(rand() * 256));
    pages.push(Uint8Array.from({ length: size }, (_, i) => unit[i % period]));
  }
  for (let k = 0; k < 6; k++) {
    // text-like
    const text = [];
    let length = 0;
    while (length < size) {
      const word = WORDS[Math.floor(rand() * WORDS.length)] + (rand() < 0.3 ? rand() : " ");
      text.push(word);
      length += word.length;
    }
    pages.push(new TextEncoder().encode(text.join("")).slice(0, size));
  }
  for (let k = 0; k < 6; k++) {
    // mixed: runs of zeros, random bytes and repeats of earlier bytes at random distances
    const p = new Uint8Array(size);
    let at = 0;
    while (at < size) {
      const run = Math.min(size - at, 1 + Math.floor(rand() * 200));
      const kind = rand();
      if (kind < 0.3) {
        at += run;
      } else if (kind < 0.6) {
        for (let i = 0; i < run; i++) p[at++] = rand() * 256;
      } else {
        const distance = 1 + Math.floor(rand() * Math.min(at || 1, 70000));
        for (let i = 0; i < run; i++, at++) p[at] = at >= distance ? p[at - distance] : 7;
      }
    }
    pages.push(p);
  }
  for (let k = 0; k < 3; k++) {
    // mostly random with a compressible tail, and the reverse: near the raw-block threshold
    const p = random();
    const cut = Math.floor(size * (0.9 + rand() * 0.1));
    p.fill(0, cut);
    pages.push(p);
    const q = random();
    q.fill(1, 0, size - cut);
    pages.push(q);
  }
  return pages;
}

function splitPages(bytes: Uint8Array, pageSize: number): Uint8Array[] {
  const pages = [];
  for (let at = 0; at + pageSize <= bytes.length; at += pageSize) {
    pages.push(bytes.subarray(at, at + pageSize));
  }
  return pages;
}

/** Pages of a freshly generated SQLite database with `pageSize`. */
async function sqlitePages(pageSize: number): Promise<Uint8Array[]> {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/t.db`;
    const db = new DatabaseSync(path);
    db.exec(`PRAGMA page_size = ${pageSize}; PRAGMA journal_mode = DELETE;`);
    db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b INTEGER, c BLOB)");
    db.exec("CREATE INDEX t_a ON t(a)");
    const insert = db.prepare("INSERT INTO t (a, b, c) VALUES (?, ?, ?)");
    const rand = rng(pageSize);
    db.exec("BEGIN");
    for (let i = 0; i < 1500; i++) {
      const blob = new Uint8Array(Math.floor(rand() * 40));
      for (let k = 0; k < blob.length; k++) blob[k] = rand() * 256;
      insert.run(`${WORDS[i % WORDS.length]} ${Math.floor(rand() * 1e6)}`, i * 7919, blob);
    }
    db.exec("COMMIT");
    db.close();
    return splitPages(await Deno.readFile(path), pageSize);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Every page of the fixture databases and of every fixture LTX file. */
async function fixturePages(): Promise<Uint8Array[]> {
  const pages: Uint8Array[] = [];
  for await (const entry of Deno.readDir(new URL("sqlite/", fixtures))) {
    if (!entry.name.endsWith(".db")) continue;
    const bytes = await Deno.readFile(new URL(`sqlite/${entry.name}`, fixtures));
    const raw = (bytes[16] << 8) | bytes[17];
    pages.push(...splitPages(bytes, raw === 1 ? 65536 : raw));
  }
  const walk = async (dir: URL): Promise<void> => {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.isDirectory) await walk(new URL(`${entry.name}/`, dir));
      else if (entry.name.endsWith(".ltx") && !dir.pathname.includes("/negative/")) {
        // Files that are not valid v0.5 LTX (legacy and damaged fixtures) have no pages here.
        const file = await Deno.open(new URL(entry.name, dir));
        const decoder = new Decoder(file.readable, { name: entry.name });
        const filePages = [];
        try {
          for (let page = await decoder.readPage(); page; page = await decoder.readPage()) {
            filePages.push(page.data);
          }
          pages.push(...filePages);
        } catch (err) {
          if (!(err instanceof LTXError)) throw err;
        }
      }
    }
  };
  await walk(fixtures);
  return pages;
}

function bigOf(state: Int32Array): bigint {
  return (BigInt(~state[1] >>> 0) << 32n) | BigInt(~state[0] >>> 0);
}

function u32be(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
}

/** The reference page checksum: bit 63 | crc64(u32be(pgno) ‖ data). */
function referencePageChecksum(pgno: number, data: Uint8Array): bigint {
  const state = Int32Array.of(-1, -1);
  crc64UpdateReference(state, u32be(pgno));
  crc64UpdateReference(state, data);
  return CHECKSUM_FLAG | bigOf(state);
}

/** Decompression by both codecs: the same output and end, or the same error message. */
function sameDecompression(block: Uint8Array, pageSize: number, what: string): void {
  const outcome = (decode: typeof decompressBlock) => {
    const out = new Uint8Array(pageSize);
    try {
      const end = decode(block, 0, block.length, out, 0, pageSize);
      return { end, out };
    } catch (err) {
      assert.ok(err instanceof LZ4CorruptError, `${what}: ${err}`);
      return { error: err.message };
    }
  };
  assert.deepStrictEqual(outcome(decompressBlockWasm), outcome(decompressBlock), what);
}

/** All checks on one page; returns the number of damaged blocks tried. */
function checkPage(page: Uint8Array, pgno: number, what: string, rand: () => number): number {
  const size = page.length;
  // LZ4 block
  const tsBlock = new Uint8Array(compressBound(size));
  const tsBlockLength = compressBlock(page, tsBlock, 0);
  const wasmBlock = new Uint8Array(compressBound(size));
  const wasmBlockLength = compressBlockWasm(page, wasmBlock, 0);
  assert.deepStrictEqual(
    wasmBlock.subarray(0, wasmBlockLength),
    tsBlock.subarray(0, tsBlockLength),
    `${what}: LZ4 block`,
  );
  const block = tsBlock.subarray(0, tsBlockLength);

  // Whole page frames in both encodings, with the file and page checksums.
  for (const encoding of ["block", "frame"] as const) {
    const reference = new Uint8Array(6 + maxPayloadSize(size));
    new DataView(reference.buffer).setUint32(0, pgno);
    reference[5] = encoding === "block" ? 1 : 0;
    const payload = encoding === "block"
      ? writeBlockPayload(page, reference, 6)
      : writeFramePayload(page, reference, 6);
    const referenceFrame = reference.subarray(0, 6 + payload);
    const state = Int32Array.of(-1, -1);
    crc64UpdateReference(state, referenceFrame.subarray(0, encoding === "block" ? 10 : 6));
    crc64UpdateReference(state, page);

    const digest: PageDigest = {
      crc: Int32Array.of(-1, -1),
      withPageChecksum: true,
      pageChecksum: 0n,
    };
    const out = new Uint8Array(3 + 6 + maxPayloadSize(size));
    const frameSize = encodePageFrame(pgno, page, encoding === "block", digest, out, 3);
    assert.deepStrictEqual(out.subarray(3, 3 + frameSize), referenceFrame, `${what}: ${encoding}`);
    assert.deepStrictEqual(digest.crc, state, `${what}: ${encoding} file checksum state`);
    assert.equal(digest.pageChecksum, referencePageChecksum(pgno, page), `${what}: page checksum`);

    // Decoding the payload in WebAssembly gives the page, its digest and its XXH32.
    const decodeDigest: PageDigest = {
      crc: Int32Array.of(-1, -1),
      withPageChecksum: true,
      pageChecksum: 0n,
    };
    let decoded;
    if (encoding === "block") {
      decoded = decodePage(pgno, size, referenceFrame.subarray(10), false, decodeDigest, true);
    } else {
      const word = new DataView(referenceFrame.buffer).getUint32(13, true);
      const n = word & 0x7fffffff;
      decoded = decodePage(
        pgno,
        size,
        referenceFrame.subarray(17, 17 + n),
        word !== n,
        decodeDigest,
        true,
      );
    }
    assert.equal(decoded.pos, size, `${what}: ${encoding} decodes whole`);
    assert.deepStrictEqual(decoded.data, page, `${what}: ${encoding} decodes to the page`);
    assert.equal(decoded.xxh32, xxh32(page), `${what}: XXH32 of the decoded page`);
    assert.equal(decodeDigest.pageChecksum, digest.pageChecksum, `${what}: decoded checksum`);
  }

  // Decompression, intact and damaged.
  sameDecompression(block, size, `${what}: decompress`);
  let damaged = 0;
  for (let k = 0; k < 3; k++) {
    const bad = block.slice(0, Math.max(1, Math.floor(block.length * (0.5 + rand() / 2))));
    for (let flips = 1 + Math.floor(rand() * 3); flips > 0; flips--) {
      bad[Math.floor(rand() * bad.length)] ^= 1 << Math.floor(rand() * 8);
    }
    sameDecompression(bad, size, `${what}: damaged block ${k}`);
    damaged++;
  }

  // XXH32 and CRC-64 at unaligned offsets and odd lengths.
  const start = Math.floor(rand() * 16);
  const end = size - Math.floor(rand() * 17);
  const seed = rand() < 0.5 ? 0 : Math.floor(rand() * 2 ** 32);
  assert.equal(xxh32Wasm(page, start, end, seed), xxh32(page, start, end, seed), `${what}: xxh32`);
  assert.equal(crc64(page.subarray(start, end)), crc64Reference(page.subarray(start, end)));
  assert.equal(pageChecksum(pgno, page), referencePageChecksum(pgno, page));
  return damaged;
}

Deno.test("wasm codec: identical to the TypeScript reference on thousands of pages", async () => {
  const rand = rng(20261204);
  const sets: [string, Uint8Array[]][] = [];
  for (const size of PAGE_SIZES) {
    const count = size <= 4096 ? 12 : size <= 16384 ? 6 : 3;
    const pages = [];
    for (let k = 0; k < count; k++) pages.push(...generatedPages(size, size * 31 + k));
    sets.push([`generated ${size}`, pages]);
  }
  for (const size of [512, 4096, 65536]) sets.push([`sqlite ${size}`, await sqlitePages(size)]);
  sets.push(["fixtures", await fixturePages()]);

  let pages = 0;
  let damaged = 0;
  const sizes = new Set<number>();
  for (const [name, set] of sets) {
    for (const [i, page] of set.entries()) {
      damaged += checkPage(page, 1 + Math.floor(rand() * 0xfffffffe), `${name} #${i}`, rand);
      sizes.add(page.length);
      pages++;
    }
  }
  assert.ok(pages >= 2000, `only ${pages} pages`);
  for (const size of PAGE_SIZES) assert.ok(sizes.has(size), `no ${size}-byte page`);
  console.log(`${pages} pages, ${damaged} damaged blocks`);
});

Deno.test("wasm codec: batches of page frames (encodePageFrames) are the reference's frames", () => {
  // Several calls per batch for small pages, one page per call for the largest; counts that
  // end mid-call; each batch's bytes, sizes, file-checksum part and page checksums.
  for (const size of PAGE_SIZES) {
    const generated = generatedPages(size, size * 7 + 1);
    const count = Math.min(size <= 4096 ? 700 : 60, Math.floor((4 << 20) / size)) + 3;
    const data = new Uint8Array(count * size);
    for (let i = 0; i < count; i++) data.set(generated[(i * 5) % generated.length], i * size);
    const pgnos = Uint32Array.from({ length: count }, (_, i) => 3 + i * 2);
    for (const encoding of ["frame", "block"] as const) {
      for (const withPageChecksum of [false, true]) {
        for (const n of [1, 2, count - 1, count]) {
          const options = { encoding, withPageChecksum };
          const what = `${size}-byte pages, ${encoding}, ${n} pages` +
            (withPageChecksum ? ", page checksums" : "");
          const actual = encodePageFrames(size, pgnos, data, n, options);
          useReferenceCodec(true);
          let expected;
          try {
            expected = encodePageFrames(size, pgnos, data, n, options);
          } finally {
            useReferenceCodec(false);
          }
          assert.deepStrictEqual(actual.bytes, expected.bytes, `${what}: frames`);
          assert.deepStrictEqual(actual.sizes, expected.sizes, `${what}: sizes`);
          assert.equal(actual.crc, expected.crc, `${what}: file checksum part`);
          assert.equal(actual.hashedLength, expected.hashedLength, what);
          assert.equal(actual.pageChecksums, expected.pageChecksums, `${what}: page checksums`);
        }
      }
    }
  }
});

Deno.test("wasm codec: the shared build codes frames in a shared memory as the reference does", () => {
  const memory = new WebAssembly.Memory({ initial: 80, maximum: 80, shared: true });
  const encoder = new SharedFrameEncoder(memory);
  const buffer = memory.buffer as SharedArrayBuffer;
  for (const size of [512, 4096, 65536]) {
    const generated = generatedPages(size, size + 5);
    const count = Math.min(40, Math.floor((1 << 20) / size));
    const layout = {
      pgnos: SHARED_CODER_RESERVED_BYTES,
      sizes: SHARED_CODER_RESERVED_BYTES + 1024,
    };
    const src = SHARED_CODER_RESERVED_BYTES + 2048;
    const dst = src + count * size;
    const pgnos = Uint32Array.from({ length: count }, (_, i) => 100 + i * 3);
    const data = new Uint8Array(count * size);
    for (let i = 0; i < count; i++) data.set(generated[(i * 3) % generated.length], i * size);
    for (const encoding of ["frame", "block"] as const) {
      for (const withPageChecksum of [false, true]) {
        for (const reference of [false, true]) {
          const what = `${size}, ${encoding}${withPageChecksum ? ", checksums" : ""}` +
            (reference ? ", reference codec" : "");
          new Uint32Array(buffer, layout.pgnos, count).set(pgnos);
          new Uint8Array(buffer, src, data.length).set(data);
          useReferenceCodec(reference);
          let actual;
          try {
            actual = encoder.encode({ ...layout, src, dst }, count, size, {
              encoding,
              withPageChecksum,
            });
          } finally {
            useReferenceCodec(false);
          }
          useReferenceCodec(true);
          let expected;
          try {
            expected = encodePageFrames(size, pgnos, data, count, { encoding, withPageChecksum });
          } finally {
            useReferenceCodec(false);
          }
          const frames = new Uint8Array(buffer, dst, actual.bytes);
          assert.deepStrictEqual(Uint8Array.from(frames), expected.bytes, `${what}: frames`);
          assert.deepStrictEqual(
            Uint32Array.from(new Uint32Array(buffer, layout.sizes, count)),
            expected.sizes,
            `${what}: sizes`,
          );
          assert.equal(actual.crc, expected.crc, `${what}: file checksum part`);
          assert.equal(actual.hashedLength, expected.hashedLength, what);
          assert.equal(actual.pageChecksums, expected.pageChecksums, `${what}: page checksums`);
        }
      }
    }
  }
  assert.throws(
    () => new SharedFrameEncoder(new WebAssembly.Memory({ initial: 80, maximum: 80 })),
    RangeError,
  );
});

Deno.test("wasm codec: XXH32 and CRC-64 of every short length and alignment", () => {
  const bytes = Uint8Array.from({ length: 300 }, (_, i) => (i * 167 + 13) & 255);
  for (let start = 0; start < 9; start++) {
    for (let end = start; end <= bytes.length; end++) {
      const part = bytes.subarray(start, end);
      assert.equal(xxh32Wasm(bytes, start, end), xxh32(bytes, start, end));
      const state = Int32Array.of(-1, -1);
      crc64Update(state, part);
      assert.equal(bigOf(state), crc64Reference(part), `crc64 [${start}, ${end})`);
    }
  }
  // Longer than one WebAssembly region: chunked.
  const big = Uint8Array.from({ length: 400_003 }, (_, i) => (i * 2654435761) >>> 24);
  assert.equal(crc64(big.subarray(1)), crc64Reference(big.subarray(1)));
  assert.equal(xxh32Wasm(big, 1), xxh32(big, 1));
});

Deno.test("wasm codec: fused page checksums and XXH32 at lengths around the vector loop's", () => {
  // The page's CRC-64 runs 64 bytes a step (with XXH32 in the same pass): lengths below, at
  // and past multiples of 64 and the 256-byte threshold, at an odd offset.
  const bytes = Uint8Array.from({ length: 5001 }, (_, i) => (i * 2654435761) >>> 24);
  const lengths = Array.from({ length: 330 }, (_, i) => i);
  for (const base of [511, 1023, 4095, 4159]) lengths.push(base, base + 1, base + 2, base + 17);
  lengths.push(5000);
  for (const n of lengths) {
    const page = bytes.subarray(1, 1 + n);
    for (const withPageChecksum of [true, false]) {
      for (const withXXH32 of [true, false]) {
        const what = `length ${n}, checksum ${withPageChecksum}, xxh32 ${withXXH32}`;
        const digest: PageDigest = {
          crc: Int32Array.of(3, -7),
          withPageChecksum,
          pageChecksum: 0n,
        };
        const decoded = decodePage(0x01020304, n, page, true, digest, withXXH32);
        assert.deepStrictEqual(decoded.data, page, what);
        assert.equal(decoded.xxh32, withXXH32 ? xxh32(page) : 0, `${what}: XXH32`);
        const state = Int32Array.of(3, -7);
        crc64UpdateReference(state, page);
        assert.deepStrictEqual(digest.crc, state, `${what}: file checksum state`);
        if (withPageChecksum) {
          assert.equal(digest.pageChecksum, referencePageChecksum(0x01020304, page), what);
        }
      }
    }
  }
});

Deno.test("wasm codec: short matches at every small offset decode as the reference does", () => {
  // Sequences of short literals and short matches reaching 1…40 bytes back (overlapping
  // copies included): the decoder's fast path, intact and damaged.
  const rand = rng(15);
  for (let round = 0; round < 40; round++) {
    const page = new Uint8Array(4096);
    let at = 0;
    while (at < page.length) {
      const literals = Math.floor(rand() * 15);
      for (let k = 0; k < literals && at < page.length; k++) page[at++] = rand() * 256;
      const distance = 1 + Math.floor(rand() * 40);
      const length = 4 + Math.floor(rand() * 15);
      for (let k = 0; k < length && at < page.length; k++, at++) {
        page[at] = at >= distance ? page[at - distance] : 0;
      }
    }
    const block = new Uint8Array(compressBound(page.length));
    const n = compressBlock(page, block, 0);
    const wasmBlock = new Uint8Array(compressBound(page.length));
    assert.equal(compressBlockWasm(page, wasmBlock, 0), n, `round ${round}: block size`);
    assert.deepStrictEqual(wasmBlock.subarray(0, n), block.subarray(0, n), `round ${round}`);
    sameDecompression(block.subarray(0, n), page.length, `round ${round}`);
    for (let k = 0; k < 20; k++) {
      const bad = block.slice(0, n);
      bad[Math.floor(rand() * n)] ^= 1 << Math.floor(rand() * 8);
      sameDecompression(bad, page.length, `round ${round}, damaged ${k}`);
    }
  }
});

Deno.test("wasm codec: linked frame blocks reach back into earlier output", () => {
  const page = Uint8Array.from({ length: 8192 }, (_, i) => (i % 300) & 255);
  const block = new Uint8Array(compressBound(4096));
  const n = compressBlock(page.subarray(0, 4096), block, 0);
  const expected = new Uint8Array(8192);
  const actual = new Uint8Array(8192);
  for (const out of [expected, actual]) out.set(page.subarray(0, 4096));
  const end1 = decompressBlock(block, 0, n, expected, 4096, 8192, 0);
  const end2 = decompressBlockWasm(block, 0, n, actual, 4096, 8192, 0);
  assert.equal(end2, end1);
  assert.deepStrictEqual(actual, expected);
});

function header(commit: number, pageSize: number): Header {
  return {
    flags: 0,
    pageSize,
    commit,
    minTXID: 1,
    maxTXID: 1,
    timestamp: 1_700_000_000_000,
    preApplyChecksum: 0n,
    walOffset: 0,
    walSize: 0,
    walSalt1: 0,
    walSalt2: 0,
    nodeID: 0n,
  };
}

Deno.test("wasm codec: interleaved decoders on trickling streams share the codec safely", async () => {
  // Two snapshots read at once, their bytes arriving a few at a time, so every page read
  // awaits mid-frame while the other decoder runs the codec.
  const files: { pages: Uint8Array[]; bytes: Uint8Array }[] = [];
  for (const [seed, encoding] of [[1, "frame"], [2, "block"]] as const) {
    const pages = generatedPages(4096, seed).slice(0, 24);
    const chunks: Uint8Array[] = [];
    const encoder = new Encoder(
      new WritableStream({ write: (c) => void chunks.push(c.slice()) }),
      header(pages.length, 4096),
      { encoding },
    );
    for (const [i, page] of pages.entries()) await encoder.encodePage(i + 1, page);
    await encoder.close();
    const bytes = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const c of chunks) bytes.set(c, (at += c.length) - c.length);
    files.push({ pages, bytes });
  }
  const trickle = (bytes: Uint8Array, step: number) =>
    ReadableStream.from((function* () {
      for (let at = 0; at < bytes.length; at += step) yield bytes.slice(at, at + step);
    })());
  const read = async (file: typeof files[number], step: number) => {
    const decoder = new Decoder(trickle(file.bytes, step));
    const got = [];
    for (let page = await decoder.readPage(); page; page = await decoder.readPage()) {
      got.push(page.data);
    }
    assert.deepStrictEqual(got, file.pages);
    assert.ok(decoder.trailer);
  };
  await Promise.all([read(files[0], 7), read(files[1], 5), read(files[0], 1000)]);
});

Deno.test("wasm codec: whole LTX files are the same bytes with the reference codec", async () => {
  const pages = await sqlitePages(4096);
  const encode = async (encoding: "frame" | "block", flags: number) => {
    const chunks: Uint8Array[] = [];
    const encoder = new Encoder(
      new WritableStream({ write: (c) => void chunks.push(c.slice()) }),
      { ...header(pages.length, 4096), flags },
      { encoding },
    );
    for (const [i, page] of pages.entries()) await encoder.encodePage(i + 1, page);
    const trailer = await encoder.close();
    return { chunks, trailer };
  };
  const decode = async (chunks: Uint8Array[]) => {
    const decoder = new Decoder(ReadableStream.from(chunks));
    const got = [];
    for (let page = await decoder.readPage(); page; page = await decoder.readPage()) {
      got.push(page.data);
    }
    return { got, trailer: decoder.trailer };
  };
  try {
    for (const encoding of ["frame", "block"] as const) {
      for (const flags of [0, 2]) {
        useReferenceCodec(false);
        const wasm = await encode(encoding, flags);
        useReferenceCodec(true);
        const reference = await encode(encoding, flags);
        assert.deepStrictEqual(wasm, reference, `${encoding}, flags ${flags}`);
        const byReference = await decode(wasm.chunks);
        useReferenceCodec(false);
        const byWasm = await decode(wasm.chunks);
        assert.deepStrictEqual(byWasm, byReference);
        assert.deepStrictEqual(byWasm.got, pages.map((p) => p.slice()));
      }
    }
  } finally {
    useReferenceCodec(false);
  }
});

/** Every way of reading a file's pages: each yields copies of (pgno, data) and the trailer. */
const READS = {
  readPage: async (decoder: Decoder) => {
    const got: [number, Uint8Array][] = [];
    for (let page = await decoder.readPage(); page; page = await decoder.readPage()) {
      got.push([page.pgno, page.data]);
    }
    return got;
  },
  readPageInto: async (decoder: Decoder) => {
    // A slot in the middle of a larger buffer, reused for every page.
    const { pageSize } = await decoder.readHeader();
    const buffer = new Uint8Array(pageSize * 3).fill(0xee);
    const got: [number, Uint8Array][] = [];
    for (let pgno = await decoder.readPageInto(buffer, pageSize + 1); pgno !== null;) {
      got.push([pgno, buffer.slice(pageSize + 1, 2 * pageSize + 1)]);
      pgno = await decoder.readPageInto(buffer, pageSize + 1);
    }
    assert.ok(buffer.subarray(0, pageSize + 1).every((b) => b === 0xee), "before the slot");
    assert.ok(buffer.subarray(2 * pageSize + 1).every((b) => b === 0xee), "after the slot");
    return got;
  },
  readPagesInto: async (decoder: Decoder) => {
    const { pageSize } = await decoder.readHeader();
    const got: [number, Uint8Array][] = [];
    // Batches of odd sizes, so batch ends fall anywhere, and a last partial batch.
    for (let k = 0;; k++) {
      const pgnos = new Uint32Array([1, 3, 64][k % 3]);
      const buffer = new Uint8Array(pgnos.length * pageSize);
      const count = await decoder.readPagesInto(buffer, pgnos);
      for (let i = 0; i < count; i++) {
        got.push([pgnos[i], buffer.slice(i * pageSize, (i + 1) * pageSize)]);
      }
      if (count < pgnos.length) {
        assert.equal(await decoder.readPagesInto(buffer, pgnos), 0, "0 after the end");
        return got;
      }
    }
  },
  readPageView: async (decoder: Decoder) => {
    const got: [number, Uint8Array][] = [];
    for (let page = await decoder.readPageView(); page; page = await decoder.readPageView()) {
      got.push([page.pgno, page.data.slice()]);
    }
    return got;
  },
};

Deno.test("wasm codec: every page read gives the same pages and errors with both codecs", async () => {
  const rand = rng(15);
  const trickle = (bytes: Uint8Array, sizes: number[]) =>
    ReadableStream.from((function* () {
      for (let at = 0, k = 0; at < bytes.length; k++) {
        const step = sizes[k % sizes.length];
        yield bytes.slice(at, at + step);
        at += step;
      }
    })());
  let files = 0;
  for (const pageSize of [512, 4096, 65536]) {
    const pages = generatedPages(pageSize, pageSize).slice(0, pageSize === 65536 ? 12 : 40);
    for (const encoding of ["frame", "block"] as const) {
      for (const flags of [0, 2]) {
        const chunks: Uint8Array[] = [];
        const encoder = new Encoder(
          new WritableStream({ write: (c) => void chunks.push(c.slice()) }),
          { ...header(pages.length, pageSize), flags },
          { encoding },
        );
        for (const [i, page] of pages.entries()) await encoder.encodePage(i + 1, page);
        await encoder.close();
        const bytes = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
        let at = 0;
        for (const c of chunks) bytes.set(c, (at += c.length) - c.length);
        const damaged = bytes.slice();
        damaged[100 + Math.floor(rand() * (bytes.length - 200))] ^= 0x10;
        // Whole, in chunks that split frames anywhere, and a byte at a time for small pages.
        const splits = [
          [bytes.length],
          [7, 1000, 333, 64 << 10],
          ...(pageSize === 512 && flags === 0 ? [[1]] : []),
        ];
        for (const sizes of splits) {
          const what = `${pageSize} ${encoding} flags ${flags} chunks ${sizes}`;
          const expected = pages.map((data, i) => [i + 1, data]);
          let damagedOutcome: string | undefined;
          for (const reference of [false, true]) {
            for (const [name, read] of Object.entries(READS)) {
              useReferenceCodec(reference);
              try {
                const decoder = new Decoder(trickle(bytes, sizes), { name: "f" });
                assert.deepStrictEqual(await read(decoder), expected, `${what}: ${name}`);
                assert.ok(decoder.trailer, `${what}: ${name} trailer`);
                assert.equal(decoder.pageCount, pages.length);
                const bad = new Decoder(trickle(damaged, sizes), { name: "f" });
                const outcome = await read(bad).then(
                  () => "no error",
                  (err: Error) => `${err.name}: ${err.message}`,
                );
                assert.match(outcome, /^LTX(Format|Checksum)Error/, `${what}: ${name} damaged`);
                damagedOutcome ??= outcome;
                assert.equal(outcome, damagedOutcome, `${what}: ${name}, reference ${reference}`);
              } finally {
                useReferenceCodec(false);
              }
            }
          }
          files++;
        }
      }
    }
  }
  assert.ok(files >= 24);
});
