/**
 * Encoder and decoder: round trips in both page encodings and page sizes, the exact LZ4 frame
 * layout Go wrote, encoder rules, header and name helpers, every stricter decoder check (on
 * hand-built files with valid checksums, so only the rule under test fails), and LZ4 safety on
 * hostile input.
 */

import assert from "node:assert/strict";
import {
  CHECKSUM_FLAG,
  CRC64,
  decodeHeader,
  decodePageIndex,
  Decoder,
  encodeHeader,
  Encoder,
  formatFilename,
  formatTXID,
  type Header,
  HEADER_FLAG_NO_CHECKSUM,
  lockPageNumber,
  LTXChecksumError,
  LTXError,
  LTXFormatError,
  type Page,
  type PageEncoding,
  parseFilename,
  parseTXID,
  validateHeader,
} from "../src/ltx/mod.ts";
import { compressBlock, compressBound, decompressBlock, LZ4CorruptError } from "../src/ltx/mod.ts";
import { xxh32 } from "../src/ltx/mod.ts";

const fixtures = new URL("./fixtures/", import.meta.url);

function header(fields: Partial<Header> = {}): Header {
  return {
    flags: HEADER_FLAG_NO_CHECKSUM,
    pageSize: 4096,
    commit: 1,
    minTXID: 1,
    maxTXID: 1,
    timestamp: 1_700_000_000_123,
    preApplyChecksum: 0n,
    walOffset: 0,
    walSize: 0,
    walSalt1: 0,
    walSalt2: 0,
    nodeID: 0n,
    ...fields,
  };
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** Encodes pages into bytes; also checks the sink saw large chunks, not one write per page. */
async function encode(h: Header, pages: Page[], encoding?: PageEncoding): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const encoder = new Encoder(
    new WritableStream({ write: (chunk) => void chunks.push(chunk.slice()) }),
    h,
    { encoding },
  );
  for (const page of pages) await encoder.encodePage(page.pgno, page.data);
  const trailer = await encoder.close();
  const bytes = concat(chunks);
  assert.equal(encoder.bytesWritten, bytes.length);
  assert.equal(encoder.pageCount, pages.length);
  assert.ok(chunks.length <= Math.ceil(bytes.length / (256 * 1024)) + 1);
  assert.equal(new DataView(bytes.buffer).getBigUint64(bytes.length - 8), trailer.fileChecksum);
  return bytes;
}

/** Streams `bytes` in chunks of varied sizes (1 byte upwards) through a decoder. */
function chunked(bytes: Uint8Array, seed = 1): ReadableStream<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let at = 0;
  let s = seed;
  while (at < bytes.length) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    const n = 1 + (s % 9000);
    chunks.push(bytes.slice(at, at + n));
    at += n;
  }
  return ReadableStream.from(chunks);
}

async function decode(bytes: Uint8Array | ReadableStream<Uint8Array>, name = "test.ltx") {
  const stream = bytes instanceof Uint8Array ? ReadableStream.from([bytes]) : bytes;
  const decoder = new Decoder(stream, { name });
  const h = await decoder.readHeader();
  const pages: Page[] = [];
  for (let page = await decoder.readPage(); page; page = await decoder.readPage()) {
    pages.push(page);
  }
  assert.equal(await decoder.readPage(), null); // stays at the end
  return { header: h, pages, trailer: decoder.trailer! };
}

/** Pages of mixed content: SQLite-like, zeros, text, random (incompressible). */
function mixedPages(pageSize: number, count: number): Page[] {
  const pages: Page[] = [];
  const text = new TextEncoder().encode("INSERT INTO t VALUES ('hello world', 42); ".repeat(2000));
  for (let pgno = 1; pgno <= count; pgno++) {
    const data = new Uint8Array(pageSize);
    switch (pgno % 4) {
      case 0:
        break; // zeros
      case 1:
        data.set(text.subarray(pgno, pgno + pageSize));
        break;
      case 2:
        for (let at = 0; at < pageSize; at += 65536) {
          crypto.getRandomValues(data.subarray(at, Math.min(pageSize, at + 65536)));
        }
        break;
      case 3:
        crypto.getRandomValues(data.subarray(0, pageSize / 2));
        break;
    }
    pages.push({ pgno, data });
  }
  return pages;
}

for (const pageSize of [512, 4096, 65536]) {
  for (const encoding of ["frame", "block"] as const) {
    Deno.test(`round trip: ${pageSize}-byte pages, ${encoding} encoding`, async () => {
      const pages = mixedPages(pageSize, 9);
      const h = header({ pageSize, commit: 9 });
      const bytes = await encode(h, pages, encoding);
      for (const stream of [ReadableStream.from([bytes]), chunked(bytes, pageSize)]) {
        const out = await decode(stream);
        assert.deepEqual(out.header, h);
        assert.deepEqual(out.pages, pages);
      }
      const index = decodePageIndex(bytes, { fileSize: bytes.length });
      assert.deepEqual(index.entries.map((e) => e.pgno), pages.map((p) => p.pgno));
      // Every frame carries the page flags of its encoding.
      for (const entry of index.entries) {
        assert.equal(bytes[entry.offset + 5], encoding === "block" ? 1 : 0);
      }
    });
  }
}

Deno.test("round trip: a page index of several blocks (more than 16,384 pages)", async () => {
  // 512-byte pages: 40,000 of them span three blocks of the encoder's index, the first grown.
  const count = 40_000;
  const pages = Array.from({ length: count }, (_, i) => ({
    pgno: i + 1,
    data: new Uint8Array(512).fill(i % 251),
  }));
  const h = header({ pageSize: 512, commit: count });
  const bytes = await encode(h, pages, "frame");
  const index = decodePageIndex(bytes, { fileSize: bytes.length });
  assert.equal(index.entries.length, count);
  let offset = 100; // frames start right after the header
  for (const [i, entry] of index.entries.entries()) {
    assert.equal(entry.pgno, i + 1);
    assert.equal(entry.offset, offset);
    offset += entry.size;
  }
  const out = await decode(ReadableStream.from([bytes]));
  assert.equal(out.pages.length, count);
  assert.deepEqual(out.pages[count - 1], pages[count - 1]);
});

Deno.test("round trip: an incremental file with a sparse page set and WAL fields", async () => {
  const h = header({
    minTXID: 7,
    maxTXID: 9,
    commit: 400,
    walOffset: 32,
    walSize: 3 * 4120,
    walSalt1: 0xdeadbeef,
    walSalt2: 1,
  });
  const pages = [3, 17, 18, 399].map((pgno) => ({ pgno, data: new Uint8Array(4096).fill(pgno) }));
  for (const encoding of ["frame", "block"] as const) {
    const out = await decode(await encode(h, pages, encoding));
    assert.deepEqual(out.header, h);
    assert.deepEqual(out.pages, pages);
  }
});

Deno.test("round trip: re-encoding the fixture replicas in both encodings", async () => {
  for (const rep of ["rep-block", "rep-frame", "rep-big-frame"]) {
    const path = `node-written-go-verified/${rep}/ltx/0/0000000000000001-0000000000000001.ltx`;
    const original = await decode(await Deno.readFile(new URL(path, fixtures)), path);
    for (const encoding of ["frame", "block"] as const) {
      const bytes = await encode(original.header, original.pages, encoding);
      const again = await decode(chunked(bytes));
      assert.deepEqual(again.header, original.header);
      assert.deepEqual(again.pages, original.pages);
    }
  }
});

Deno.test("frame encoding: the exact LZ4 frame layout of Go ltx v0.5.0/v0.5.1 (FORMAT.md §1.5.2)", async () => {
  const text = new Uint8Array(4096).fill(0x61);
  const random = new Uint8Array(65536);
  for (let at = 0; at < random.length; at += 65536) crypto.getRandomValues(random);
  for (const data of [text, random]) {
    const bytes = await encode(header({ pageSize: data.length }), [{ pgno: 1, data }], "frame");
    const [entry] = decodePageIndex(bytes).entries;
    const frame = bytes.subarray(entry.offset + 6, entry.offset + entry.size);
    assert.deepEqual([...frame.subarray(0, 7)], [0x04, 0x22, 0x4d, 0x18, 0x64, 0x40, 0xa7]);
    const view = new DataView(frame.buffer, frame.byteOffset, frame.length);
    const blockWord = view.getUint32(7, true);
    const stored = (blockWord & 0x80000000) !== 0;
    const blockSize = blockWord & 0x7fffffff;
    assert.equal(frame.length, 19 + blockSize);
    assert.ok(blockSize <= 65536);
    assert.equal(stored, data === random, "incompressible pages are stored raw");
    assert.equal(view.getUint32(11 + blockSize, true), 0); // end mark
    assert.equal(view.getUint32(15 + blockSize, true), xxh32(data)); // content checksum
  }
});

Deno.test("block encoding: an incompressible page is a literal-only block above the page size", async () => {
  const random = new Uint8Array(4096);
  crypto.getRandomValues(random);
  const bytes = await encode(header(), [{ pgno: 1, data: random }], "block");
  const [entry] = decodePageIndex(bytes).entries;
  const n = new DataView(bytes.buffer).getUint32(entry.offset + 6);
  assert.ok(n > 4096 && n <= compressBound(4096));
  assert.equal(entry.size, 10 + n);
});

Deno.test("encoder: rejects pages that break the rules of FORMAT.md §1.4", async () => {
  const page = new Uint8Array(4096);
  const sink = () => new WritableStream<Uint8Array>();
  const cases: [Header, [number, Uint8Array][], RegExp][] = [
    [header({ commit: 5 }), [[2, page]], /page 1 comes next/],
    [header({ commit: 5 }), [[1, page], [3, page]], /page 2 comes next/],
    [header({ minTXID: 2, maxTXID: 2, commit: 5 }), [[3, page], [3, page]], /must ascend/],
    [header({ minTXID: 2, maxTXID: 2, commit: 5 }), [[3, page], [2, page]], /must ascend/],
    [header({ minTXID: 2, maxTXID: 2, commit: 5 }), [[0, page]], /not a page number/],
    [header({ minTXID: 2, maxTXID: 2, commit: 5 }), [[6, page]], /beyond Commit 5/],
    [header({ commit: 5 }), [[1, new Uint8Array(1024)]], /1024 bytes/],
    [
      header({ minTXID: 2, maxTXID: 2, commit: 300000 }),
      [[lockPageNumber(4096), page]],
      /lock page/,
    ],
  ];
  for (const [h, pages, pattern] of cases) {
    const encoder = new Encoder(sink(), h, { name: "out.ltx" });
    let error: unknown;
    try {
      for (const [pgno, data] of pages) await encoder.encodePage(pgno, data);
    } catch (err) {
      error = err;
    }
    assert.ok(error instanceof LTXFormatError, `expected an error for ${pattern}`);
    assert.match(error.message, pattern);
    assert.match(error.message, /^out\.ltx: /);
    // A failed encoder refuses further use.
    await assert.rejects(encoder.close(), LTXError);
  }
});

Deno.test("encoder: a snapshot must reach Commit; NoChecksum rules of the trailer", async () => {
  const page = new Uint8Array(4096);
  const encoder = new Encoder(new WritableStream(), header({ commit: 3 }));
  await encoder.encodePage(1, page);
  await assert.rejects(encoder.close(), /pages 2…3 are missing/);

  assert.throws(
    () => new Encoder(new WritableStream(), header({ commit: 0 })),
    /cannot have Commit 0/,
  );
  const noChecksum = new Encoder(new WritableStream(), header());
  await noChecksum.encodePage(1, page);
  await assert.rejects(noChecksum.close(0x8000000000000001n), /must be 0 with the NoChecksum/);

  // Without NoChecksum an incremental file needs its post-apply checksum.
  const incremental = new Encoder(
    new WritableStream(),
    header({ flags: 0, minTXID: 2, maxTXID: 2, preApplyChecksum: CHECKSUM_FLAG | 5n }),
  );
  await incremental.encodePage(1, page);
  await assert.rejects(incremental.close(), /needs its post-apply checksum/);
});

Deno.test("encoder: abort() aborts the sink and writes nothing more", async () => {
  let aborted: unknown;
  const chunks: Uint8Array[] = [];
  const encoder = new Encoder(
    new WritableStream({ write: (c) => void chunks.push(c), abort: (r) => void (aborted = r) }),
    header({ commit: 2 }),
  );
  await encoder.encodePage(1, new Uint8Array(4096));
  await encoder.abort("stop");
  assert.equal(aborted, "stop");
  assert.equal(chunks.length, 0);
  await assert.rejects(encoder.encodePage(2, new Uint8Array(4096)), LTXError);
});

Deno.test("header: every validation rule of FORMAT.md §1.1", () => {
  validateHeader(header());
  const bad: [Partial<Header>, RegExp][] = [
    [{ flags: 1 }, /pre-v0\.5/],
    [{ flags: 4 }, /invalid flags 0x00000004/],
    [{ pageSize: 1000 }, /page size/],
    [{ pageSize: 256 }, /page size/],
    [{ pageSize: 131072 }, /page size/],
    [{ minTXID: 0 }, /MinTXID is 0/],
    [{ maxTXID: 0 }, /MaxTXID is 0/],
    [{ minTXID: 3, maxTXID: 2 }, /above MaxTXID/],
    [{ walOffset: -1 }, /WAL offset/],
    [{ walOffset: 32, walSize: -1 }, /WAL size/],
    [{ walSalt1: 5 }, /salts are set but the WAL offset is 0/],
    [{ walSize: 4120 }, /WAL size is set but the WAL offset is 0/],
    [{ preApplyChecksum: CHECKSUM_FLAG }, /must be 0 in a snapshot/],
    [{ minTXID: 2, maxTXID: 2, preApplyChecksum: 5n }, /must be 0 with the NoChecksum/],
    [{ flags: 0, minTXID: 2, maxTXID: 2, preApplyChecksum: 5n }, /bit 63 set/],
    [{ flags: 0, minTXID: 2, maxTXID: 2, preApplyChecksum: 0n }, /bit 63 set/],
  ];
  for (const [fields, pattern] of bad) {
    assert.throws(() => validateHeader(header(fields), "x.ltx"), (err: Error) => {
      assert.ok(err instanceof LTXFormatError);
      assert.match(err.message, pattern);
      assert.match(err.message, /^x\.ltx: /);
      return true;
    });
    assert.throws(() => encodeHeader(header(fields)), LTXFormatError);
  }
  validateHeader(header({ flags: 0, minTXID: 2, maxTXID: 2, preApplyChecksum: CHECKSUM_FLAG }));
  validateHeader(header({ pageSize: 65536 }));
  validateHeader(header({ pageSize: 512 }));
});

Deno.test("header: encode/decode round trip, and TXIDs above 2^53 − 1 are format errors", () => {
  const h = header({
    minTXID: 2 ** 53 - 2,
    maxTXID: 2 ** 53 - 1,
    commit: 0xffffffff,
    timestamp: -5,
    walOffset: 32,
    walSize: 2 ** 40,
    walSalt1: 0xffffffff,
    walSalt2: 0x12345678,
    nodeID: 0xffffffffffffffffn,
  });
  const bytes = encodeHeader(h);
  assert.equal(bytes.length, 100);
  assert.deepEqual(decodeHeader(bytes), h);
  assert.equal(new DataView(bytes.buffer).getUint32(8), 4096);
  const big = encodeHeader(header({ pageSize: 65536 }));
  assert.deepEqual([...big.subarray(8, 12)], [0, 1, 0, 0]); // stored literally (FORMAT.md §1.1)

  const huge = bytes.slice();
  new DataView(huge.buffer).setBigUint64(24, 2n ** 53n);
  assert.throws(() => decodeHeader(huge, "huge.ltx"), /^LTXFormatError: huge\.ltx: .*MaxTXID/);
  assert.throws(() => decodeHeader(bytes.subarray(0, 99), "s.ltx"), /s\.ltx: not an LTX file/);
  const magic = bytes.slice();
  magic[3] = 0x32;
  assert.throws(() => decodeHeader(magic, "m.ltx"), /m\.ltx: not an LTX file: the magic/);
});

Deno.test("TXIDs and file names", () => {
  assert.equal(formatTXID(1000), "00000000000003e8");
  assert.equal(parseTXID("00000000000003e8"), 1000);
  assert.equal(parseTXID("00000000000003E8"), 1000);
  assert.throws(() => parseTXID("3e8"), LTXFormatError);
  assert.throws(() => parseTXID("00000000000003eg"), LTXFormatError);
  assert.throws(() => parseTXID("0020000000000000"), /2\^53/);
  assert.equal(formatFilename(1, 1000), "0000000000000001-00000000000003e8.ltx");
  assert.deepEqual(parseFilename("0000000000000001-00000000000003e8.ltx"), {
    minTXID: 1,
    maxTXID: 1000,
  });
  for (
    const name of [
      "0000000000000001-00000000000003E8.ltx",
      "0000000000000001-00000000000003e8.ltx.tmp",
      "1-2.ltx",
      "0000000000000001-0020000000000000.ltx",
    ]
  ) {
    assert.equal(parseFilename(name), null, name);
  }
});

// ---------------------------------------------------------------------------------------------
// Hand-built files: each breaks one rule and carries a correct file checksum, so the decoder
// can only catch it by checking that rule.

interface RawFrame {
  pgno: number;
  flags?: number;
  /** Payload after the page header, as stored. */
  payload: Uint8Array;
  /** Decompressed bytes hashed by the file checksum. */
  data: Uint8Array;
  /** Override the index entry. */
  index?: [number, number, number];
}

function uvarint(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return out;
}

function blockPayload(data: Uint8Array): Uint8Array {
  const block = new Uint8Array(compressBound(data.length));
  const n = compressBlock(data, block, 0);
  const out = new Uint8Array(4 + n);
  new DataView(out.buffer).setUint32(0, n);
  out.set(block.subarray(0, n), 4);
  return out;
}

function framePayload(
  data: Uint8Array,
  options: { blockChecksum?: boolean; contentSize?: boolean } = {},
): Uint8Array {
  const flg = 0x64 | (options.blockChecksum ? 0x10 : 0) | (options.contentSize ? 0x08 : 0);
  const descriptor = [flg, 0x40];
  if (options.contentSize) {
    const size = new Uint8Array(8);
    new DataView(size.buffer).setBigUint64(0, BigInt(data.length), true);
    descriptor.push(...size);
  }
  const hc = (xxh32(Uint8Array.from(descriptor)) >>> 8) & 0xff;
  const block = new Uint8Array(compressBound(data.length));
  const n = compressBlock(data, block, 0);
  const parts: number[] = [0x04, 0x22, 0x4d, 0x18, ...descriptor, hc];
  const le = (v: number) => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24];
  parts.push(...le(n), ...block.subarray(0, n));
  if (options.blockChecksum) parts.push(...le(xxh32(block.subarray(0, n))));
  parts.push(...le(0), ...le(xxh32(data)));
  return Uint8Array.from(parts);
}

function buildFile(
  h: Header,
  frames: RawFrame[],
  options: { postApply?: bigint; indexLength?: number; extra?: Uint8Array } = {},
): Uint8Array {
  const crc = new CRC64();
  const parts: Uint8Array[] = [];
  const headerBytes = new Uint8Array(100);
  headerBytes.set(encodeHeaderUnchecked(h));
  parts.push(headerBytes);
  crc.update(headerBytes);
  let offset = 100;
  const index: number[] = [];
  for (const frame of frames) {
    const flags = frame.flags ?? 1;
    const pageHeader = new Uint8Array(6);
    new DataView(pageHeader.buffer).setUint32(0, frame.pgno);
    new DataView(pageHeader.buffer).setUint16(4, flags);
    parts.push(pageHeader, frame.payload);
    crc.update(pageHeader);
    if (flags === 1) crc.update(frame.payload.subarray(0, 4));
    crc.update(frame.data);
    const size = 6 + frame.payload.length;
    index.push(...(frame.index ?? [frame.pgno, offset, size]).flatMap(uvarint));
    offset += size;
  }
  index.push(0);
  const end = new Uint8Array(6 + index.length + 8 + 8);
  end.set(index, 6);
  const view = new DataView(end.buffer);
  view.setBigUint64(6 + index.length, BigInt(options.indexLength ?? index.length));
  view.setBigUint64(6 + index.length + 8, options.postApply ?? 0n);
  crc.update(end);
  const checksum = new Uint8Array(8);
  new DataView(checksum.buffer).setBigUint64(0, CHECKSUM_FLAG | crc.digest());
  return concat([...parts, end, checksum, options.extra ?? new Uint8Array(0)]);
}

/** Header bytes without validation, to build files with invalid headers too. */
function encodeHeaderUnchecked(h: Header): Uint8Array {
  const bytes = new Uint8Array(100);
  const view = new DataView(bytes.buffer);
  bytes.set([0x4c, 0x54, 0x58, 0x31]);
  view.setUint32(4, h.flags);
  view.setUint32(8, h.pageSize);
  view.setUint32(12, h.commit);
  view.setBigUint64(16, BigInt(h.minTXID));
  view.setBigUint64(24, BigInt(h.maxTXID));
  view.setBigInt64(32, BigInt(h.timestamp));
  view.setBigUint64(40, h.preApplyChecksum);
  return bytes;
}

const pageOf = (byte: number, size = 4096) => new Uint8Array(size).fill(byte);
const good = (pgno: number, data = pageOf(pgno)): RawFrame => ({
  pgno,
  payload: blockPayload(data),
  data,
});

Deno.test("hand-built files: a correct one decodes (the builder is right)", async () => {
  const h = header({ commit: 2 });
  const out = await decode(buildFile(h, [good(1), good(2)]));
  assert.deepEqual(out.pages.map((p) => p.pgno), [1, 2]);
  const frames = [
    { pgno: 1, flags: 0, payload: framePayload(pageOf(1)), data: pageOf(1) },
    {
      pgno: 2,
      flags: 0,
      payload: framePayload(pageOf(2), { blockChecksum: true, contentSize: true }),
      data: pageOf(2),
    },
  ];
  const mixed = await decode(buildFile(h, frames));
  assert.deepEqual(mixed.pages.map((p) => p.data[0]), [1, 2]);
});

Deno.test("decoder: stricter than Go, every rule on its own", async () => {
  const h = header({ commit: 3 });
  const inc = header({ minTXID: 2, maxTXID: 2, commit: 3 });
  const short = pageOf(7, 4095);
  const lockPage = lockPageNumber(4096);
  const cases: [string, Uint8Array, RegExp, typeof LTXError][] = [
    [
      "block decompresses short",
      buildFile(inc, [{ pgno: 1, payload: blockPayload(short), data: short }]),
      /decompresses to 4095 bytes/,
      LTXFormatError,
    ],
    [
      "frame decompresses short",
      buildFile(inc, [{ pgno: 1, flags: 0, payload: framePayload(short), data: short }]),
      /decompresses to 4095 bytes/,
      LTXFormatError,
    ],
    [
      "pages descend",
      buildFile(inc, [good(2), good(1)]),
      /page 1 after page 2/,
      LTXFormatError,
    ],
    ["pages repeat", buildFile(inc, [good(2), good(2)]), /must ascend/, LTXFormatError],
    [
      "pgno 0 with flags",
      buildFile(inc, [{ ...good(1), pgno: 0 }]),
      /page number 0/,
      LTXFormatError,
    ],
    [
      "lock page",
      buildFile(header({ minTXID: 2, maxTXID: 2, commit: lockPage + 1 }), [good(lockPage)]),
      /lock page/,
      LTXFormatError,
    ],
    [
      "invalid page flags",
      buildFile(inc, [{ ...good(1), flags: 2 }]),
      /page flags 0x0002/,
      LTXFormatError,
    ],
    ["snapshot gap", buildFile(h, [good(1), good(3)]), /skips from page 1 to 3/, LTXFormatError],
    ["snapshot starts late", buildFile(h, [good(2)]), /skips from page 0 to 2/, LTXFormatError],
    ["snapshot short", buildFile(h, [good(1), good(2)]), /pages 3…3 are missing/, LTXFormatError],
    [
      "snapshot page after commit",
      buildFile(header({ commit: 1 }), [good(1), good(2)]),
      /after Commit 1/,
      LTXFormatError,
    ],
    [
      "index pgno differs",
      buildFile(inc, [{ ...good(1), index: [3, 100, good(1).payload.length + 6] }]),
      /index entry 0/,
      LTXFormatError,
    ],
    [
      "index offset differs",
      buildFile(inc, [good(1), { ...good(2), index: [2, 101, good(2).payload.length + 6] }]),
      /invalid page index|index entry 1/,
      LTXFormatError,
    ],
    [
      "index size differs",
      buildFile(inc, [good(1), { ...good(2), index: [2, 100 + 6 + good(1).payload.length, 7] }]),
      /invalid page index|index entry 1/,
      LTXFormatError,
    ],
    [
      "index length field",
      buildFile(inc, [good(1)], { indexLength: 3 }),
      /length field says 3/,
      LTXFormatError,
    ],
    [
      "post-apply with NoChecksum",
      buildFile(inc, [good(1)], { postApply: CHECKSUM_FLAG | 9n }),
      /must be 0 with the NoChecksum flag/,
      LTXFormatError,
    ],
    [
      "snapshot rolling checksum",
      buildFile(header({ flags: 0, commit: 1 }), [good(1)], { postApply: CHECKSUM_FLAG | 9n }),
      /database checksum mismatch/,
      LTXChecksumError,
    ],
    [
      "post-apply without bit 63",
      buildFile(header({ flags: 0, minTXID: 2, maxTXID: 2, preApplyChecksum: CHECKSUM_FLAG }), [
        good(1),
      ], { postApply: 5n }),
      /bit 63/,
      LTXFormatError,
    ],
    [
      "bytes after the trailer",
      buildFile(inc, [good(1)], { extra: Uint8Array.of(0) }),
      /checksum mismatch|after the trailer/,
      LTXError,
    ],
  ];
  for (const [what, bytes, pattern, type] of cases) {
    await assert.rejects(decode(chunked(bytes), `${what}.ltx`), (err: Error) => {
      assert.ok(err instanceof type, `${what}: ${err}`);
      assert.match(err.message, pattern, what);
      assert.ok(err.message.startsWith(`${what}.ltx: `), `${what}: ${err.message}`);
      return true;
    });
  }
});

Deno.test("decoder: truncated and empty inputs name the file", async () => {
  const bytes = buildFile(header({ commit: 2 }), [good(1), good(2)]);
  for (let n = 0; n < bytes.length; n++) {
    await assert.rejects(decode(bytes.subarray(0, n), "cut.ltx"), (err: Error) => {
      assert.ok(err instanceof LTXError, `${n}: ${err}`);
      assert.ok(err.message.startsWith("cut.ltx: "), err.message);
      return true;
    });
  }
});

Deno.test("decoder: errors cancel the source and stick", async () => {
  let cancelled = false;
  const bytes = buildFile(header({ minTXID: 2, maxTXID: 2, commit: 3 }), [good(2), good(1)]);
  const source = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(bytes);
    },
    cancel() {
      cancelled = true;
    },
  });
  const decoder = new Decoder(source, { name: "sticky.ltx" });
  await decoder.readPage();
  await assert.rejects(decoder.readPage(), /page 1 after page 2/);
  assert.ok(cancelled);
  await assert.rejects(decoder.readPage(), /page 1 after page 2/);
});

Deno.test("lz4: hostile blocks never hang, overrun or return garbage lengths", () => {
  const out = new Uint8Array(4096);
  let seed = 7;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const valid = new Uint8Array(compressBound(4096));
  const text = new TextEncoder().encode("abcabcabd hello hello hello ".repeat(200)).subarray(
    0,
    4096,
  );
  const n = compressBlock(text, valid, 0);
  for (let i = 0; i < 20000; i++) {
    let block: Uint8Array;
    if (i % 2 === 0) {
      block = new Uint8Array(1 + Math.floor(rand() * 64));
      for (let k = 0; k < block.length; k++) block[k] = Math.floor(rand() * 256);
    } else {
      block = valid.slice(0, n);
      for (let k = 0; k < 3; k++) block[Math.floor(rand() * n)] = Math.floor(rand() * 256);
      if (rand() < 0.3) block = block.subarray(0, Math.floor(rand() * n));
    }
    try {
      const end = decompressBlock(block, 0, block.length, out, 0, out.length);
      assert.ok(end >= 0 && end <= out.length);
    } catch (err) {
      assert.ok(err instanceof LZ4CorruptError, String(err));
    }
  }
  // Output larger than the room: an error, not a write past it.
  const small = new Uint8Array(100);
  assert.throws(() => decompressBlock(valid, 0, n, small, 0, small.length), LZ4CorruptError);
  assert.throws(
    () => decompressBlock(Uint8Array.of(0x00, 0x01, 0x00), 0, 3, small, 0, 100),
    /offset/,
  );
});

Deno.test("lz4: blocks honour the end-of-block rules (FORMAT.md §1.5.1)", () => {
  const dst = new Uint8Array(compressBound(65536));
  const inputs: Uint8Array[] = [new Uint8Array(4096), new Uint8Array(13), new Uint8Array(65536)];
  for (let size = 1; size < 300; size += 7) {
    const data = new Uint8Array(size);
    for (let k = 0; k < size; k++) data[k] = k % 3 === 0 ? k & 7 : 0;
    inputs.push(data);
  }
  for (const data of inputs) {
    const n = compressBlock(data, dst, 0);
    let sp = 0;
    let op = 0;
    let lastMatchStart = -1;
    for (;;) {
      const token = dst[sp++];
      let lit = token >> 4;
      if (lit === 15) { for (let b = 255; b === 255; lit += b) b = dst[sp++]; }
      sp += lit;
      op += lit;
      if (sp >= n) break;
      sp += 2;
      let match = (token & 15) + 4;
      if ((token & 15) === 15) { for (let b = 255; b === 255; match += b) b = dst[sp++]; }
      lastMatchStart = op;
      op += match;
      assert.ok(op <= data.length - 5, "the last 5 bytes are literals");
    }
    assert.equal(op, data.length);
    assert.ok(
      lastMatchStart === -1 || lastMatchStart <= data.length - 12,
      "the last match starts 12 bytes before the end",
    );
    const back = new Uint8Array(data.length);
    assert.equal(decompressBlock(dst, 0, n, back, 0, back.length), data.length);
    assert.deepEqual(back, data);
  }
});

Deno.test("encoder: a failing sink fails the encoder; the decoder passes source errors on", async () => {
  const broken = new Encoder(
    new WritableStream({
      write() {
        throw new Error("disk full");
      },
    }),
    header({ commit: 100 }),
  );
  const random = new Uint8Array(4096);
  crypto.getRandomValues(random);
  await assert.rejects(async () => {
    for (let pgno = 1; pgno <= 100; pgno++) await broken.encodePage(pgno, random);
  }, /disk full/);
  await assert.rejects(broken.close(), LTXError);

  const bytes = await encode(header({ commit: 2 }), [
    { pgno: 1, data: random },
    { pgno: 2, data: random },
  ]);
  let sent = false;
  const source = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent) return controller.error(new Error("connection reset"));
      sent = true;
      controller.enqueue(bytes.slice(0, 2000));
    },
  });
  const decoder = new Decoder(source, { name: "remote.ltx" });
  await assert.rejects(async () => {
    while (await decoder.readPage());
  }, /connection reset/);
  await assert.rejects(decoder.readPage(), /connection reset/);
});

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/** Encodes `pages` with `reuseChunks`, each chunk copied out by the sink: the chunks. */
async function encodeReusing(h: Header, pages: Page[], encoding: PageEncoding) {
  const chunks: Uint8Array[] = [];
  const encoder = new Encoder(
    new WritableStream({ write: (chunk) => void chunks.push(chunk.slice()) }),
    h,
    { encoding, reuseChunks: true },
  );
  for (const page of pages) await encoder.encodePage(page.pgno, page.data);
  await encoder.close();
  return chunks;
}

Deno.test("encoder: chunks a sink keeps are never written again; the bytes of reuseChunks", async () => {
  // Several full chunks of frames, and (512-byte pages: 40,000 index entries, ~300 KiB) an
  // index that fills a chunk of its own in close().
  const cases = [
    { h: header({ pageSize: 4096, commit: 400 }), pages: mixedPages(4096, 400) },
    {
      h: header({ pageSize: 512, commit: 40_000 }),
      pages: Array.from({ length: 40_000 }, (_, i) => ({
        pgno: i + 1,
        data: new Uint8Array(512).fill(i % 251),
      })),
    },
  ];
  for (const { h, pages } of cases) {
    for (const encoding of ["frame", "block"] as const) {
      // The sink keeps each chunk as it is, and a copy of it as it was handed over.
      const kept: Uint8Array[] = [];
      const asHanded: Uint8Array[] = [];
      const encoder = new Encoder(
        new WritableStream({
          write: (chunk) => {
            kept.push(chunk);
            asHanded.push(chunk.slice());
          },
        }),
        h,
        { encoding },
      );
      for (const page of pages) await encoder.encodePage(page.pgno, page.data);
      await encoder.close();
      assert.ok(kept.length >= 3, `${kept.length} chunks`);
      for (const [i, chunk] of kept.entries()) {
        assert.ok(equalBytes(chunk, asHanded[i]), `chunk ${i} changed after it was handed over`);
      }
      // No chunk shares bytes with another: each owns what it holds.
      const ranges = kept.map((c) => ({
        buffer: c.buffer,
        start: c.byteOffset,
        end: c.byteOffset + c.length,
      }));
      for (const [i, a] of ranges.entries()) {
        for (const b of ranges.slice(i + 1)) {
          assert.ok(a.buffer !== b.buffer || a.end <= b.start || b.end <= a.start);
        }
      }
      // The same chunks, byte for byte, as an encoder that reuses its buffer hands out.
      const reused = await encodeReusing(h, pages, encoding);
      assert.deepEqual(kept.map((c) => c.length), reused.map((c) => c.length));
      assert.ok(equalBytes(concat(kept), concat(reused)));
      const out = await decode(ReadableStream.from(kept));
      assert.equal(out.pages.length, pages.length);
      assert.deepEqual(out.pages[pages.length - 1], pages[pages.length - 1]);
    }
  }
});

Deno.test("decoder: readPage, readPageInto, readPageView and readPagesInto read the same pages", async () => {
  const pages = mixedPages(4096, 40);
  const bytes = await encode(header({ commit: 40, flags: 0 }), pages);
  const open = () => new Decoder(chunked(bytes, 7), { name: "same.ltx" });

  // readPage: each page its own array, intact after the later reads.
  const fresh: Page[] = [];
  const byPage = open();
  for (let page = await byPage.readPage(); page; page = await byPage.readPage()) fresh.push(page);
  assert.deepEqual(fresh, pages);
  assert.equal(new Set(fresh.map((p) => p.data.buffer)).size, pages.length);
  assert.ok(byPage.trailer);

  // readPageInto: only the slot of the call is written.
  const slots = new Uint8Array(3 * 4096).fill(0xee);
  const into = open();
  for (let i = 0;; i++) {
    const slot = (i % 2) * 4096;
    const other = slots.slice(4096 - slot, 2 * 4096 - slot);
    const pgno = await into.readPageInto(slots, slot);
    if (pgno === null) break;
    assert.equal(pgno, pages[i].pgno);
    assert.ok(equalBytes(slots.subarray(slot, slot + 4096), pages[i].data));
    assert.ok(equalBytes(slots.subarray(4096 - slot, 2 * 4096 - slot), other));
    assert.ok(slots.subarray(2 * 4096).every((b) => b === 0xee));
  }
  assert.equal(await into.readPageInto(slots), null);
  assert.deepEqual(into.trailer, byPage.trailer);
  await assert.rejects(open().readPageInto(slots, 2 * 4096 + 1), RangeError);

  // readPageView: one page object, reused.
  const view = open();
  const first = await view.readPageView();
  assert.deepEqual(first, pages[0]);
  for (let i = 1; i < pages.length; i++) {
    const page = await view.readPageView();
    assert.equal(page, first);
    assert.deepEqual(page, pages[i]);
  }
  assert.equal(await view.readPageView(), null);
  assert.deepEqual(view.trailer, byPage.trailer);

  // readPagesInto, in batches that do not divide the file.
  const batch = new Uint8Array(7 * 4096);
  const pgnos = new Uint32Array(7);
  const batched = open();
  let read = 0;
  for (let n; (n = await batched.readPagesInto(batch, pgnos)) > 0; read += n) {
    for (let i = 0; i < n; i++) {
      assert.equal(pgnos[i], pages[read + i].pgno);
      assert.ok(equalBytes(batch.subarray(i * 4096, (i + 1) * 4096), pages[read + i].data));
    }
  }
  assert.equal(read, pages.length);
  assert.deepEqual(batched.trailer, byPage.trailer);
});

Deno.test("decoder: a read while another waits for bytes is refused; errors stick", async () => {
  const pages = mixedPages(4096, 4);
  const bytes = await encode(header({ commit: 4 }), pages);
  // A source that hands out bytes only when told: the first read waits for them.
  let release!: () => void;
  const gate = new Promise<void>((resolve) => release = resolve);
  const source = new ReadableStream<Uint8Array>({
    async pull(controller) {
      await gate;
      controller.enqueue(bytes);
      controller.close();
    },
  });
  for (const read of ["readPage", "readPageView", "readPageInto"] as const) {
    const decoder = new Decoder(ReadableStream.from([bytes.subarray(0, 100)]), { name: "x" });
    await decoder.readHeader();
    const call = () =>
      read === "readPageInto" ? decoder.readPageInto(new Uint8Array(4096)) : decoder[read]();
    const pending = call();
    await assert.rejects(call(), /concurrent calls on one decoder/);
    // The pending read fails (the file ends), and its error sticks for every kind of read.
    await assert.rejects(pending, /file ends at offset 100/);
    await assert.rejects(call(), /file ends at offset 100/);
    await assert.rejects(decoder.readPageView(), /file ends at offset 100/);
    await assert.rejects(
      decoder.readPagesInto(new Uint8Array(4096), new Uint32Array(1)),
      /file ends/,
    );
  }
  const decoder = new Decoder(source, { name: "slow.ltx" });
  const header1 = decoder.readHeader();
  await assert.rejects(decoder.readPageView(), /concurrent calls on one decoder/);
  release();
  await header1;
  assert.deepEqual(await decoder.readPageView(), pages[0]);
});
