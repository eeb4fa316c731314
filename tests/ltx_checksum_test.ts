/**
 * CRC-64/GO-ISO, page and rolling database checksums (FORMAT.md §1.8, §1.9), and a lock-page
 * snapshot streamed through the encoder and decoder.
 */

import assert from "node:assert/strict";
import {
  CHECKSUM_FLAG,
  CRC64,
  crc64,
  crc64Combine,
  crc64ShiftZeros,
  Decoder,
  Encoder,
  type Header,
  lockPageNumber,
  pageChecksum,
} from "../src/ltx/mod.ts";

const text = (s: string) => new TextEncoder().encode(s);
const filled = (size: number, byte: number) => new Uint8Array(size).fill(byte);

/** Database checksum of pages 1…n (FORMAT.md §1.9). */
function databaseChecksum(pages: Uint8Array[]): bigint {
  return pages.reduce((c, page, i) => c ^ pageChecksum(i + 1, page), 0n) | CHECKSUM_FLAG;
}

/** Bitwise reference CRC-64/GO-ISO with bigint, to cross-check the sliced tables. */
function referenceCRC(bytes: Uint8Array): bigint {
  let crc = 0xffffffffffffffffn;
  for (const b of bytes) {
    crc ^= BigInt(b);
    for (let k = 0; k < 8; k++) crc = crc & 1n ? (crc >> 1n) ^ 0xd800000000000000n : crc >> 1n;
  }
  return crc ^ 0xffffffffffffffffn;
}

Deno.test("crc64: check value of CRC-64/GO-ISO", () => {
  assert.equal(crc64(text("123456789")), 0xb90956c775a41001n);
  assert.equal(crc64(new Uint8Array(0)), 0n);
});

Deno.test("crc64: matches a bitwise reference for every length and alignment", () => {
  const data = new Uint8Array(300);
  for (let i = 0; i < data.length; i++) data[i] = (i * 131 + 7) & 0xff;
  for (let start = 0; start < 8; start++) {
    for (let end = start; end <= data.length; end += 1 + (end % 13)) {
      const slice = data.subarray(start, end);
      assert.equal(crc64(slice), referenceCRC(slice), `bytes ${start}…${end}`);
    }
  }
});

Deno.test("crc64: incremental updates equal one update", () => {
  const data = new Uint8Array(10_000);
  crypto.getRandomValues(data);
  const whole = crc64(data);
  for (const cut of [0, 1, 3, 15, 16, 17, 4096, 9999, 10_000]) {
    const crc = new CRC64().update(data.subarray(0, cut)).update(data.subarray(cut));
    assert.equal(crc.digest(), whole, `cut at ${cut}`);
  }
  const reused = new CRC64().update(text("garbage")).reset().update(text("123456789"));
  assert.equal(reused.digest(), 0xb90956c775a41001n);
});

Deno.test("crc64Combine: the CRC of a concatenation from the CRCs of its parts", () => {
  const bytes = new Uint8Array(70_000).map((_, i) => (i * 2654435761) >>> 24);
  for (const [a, b] of [[0, 0], [0, 9], [9, 0], [1, 1], [100, 4096], [4096, 65_000], [3, 69_997]]) {
    const left = bytes.subarray(0, a);
    const right = bytes.subarray(a, a + b);
    assert.equal(crc64Combine(crc64(left), crc64(right), b), crc64(bytes.subarray(0, a + b)));
  }
  // Beyond 2^32 bytes the length's high bits count too: x^(8·2^32) is not 1.
  assert.notEqual(crc64ShiftZeros(1n, 2 ** 32), 1n);
  assert.equal(crc64ShiftZeros(crc64ShiftZeros(5n, 2 ** 32), 7), crc64ShiftZeros(5n, 2 ** 32 + 7));
  assert.throws(() => crc64Combine(1n, 2n, -1), RangeError);
});

Deno.test("pageChecksum: rolling database checksum vectors of ltx (FORMAT.md §1.9)", () => {
  assert.equal(
    databaseChecksum([filled(512, 1), filled(512, 2), filled(512, 3)]),
    0xefffffffecd99000n,
  );
  assert.equal(databaseChecksum([filled(1024, 0x32), filled(1024, 0x33)]), 0xe1899b6d587aaaaan);
  assert.equal(databaseChecksum([filled(512, 0x32), filled(512, 0x33)]), 0x8b87423eeeeeeeeen);
});

Deno.test("lock page: a snapshot of lockPage+10 pages streams through without the lock page", async () => {
  const pageSize = 4096;
  const lockPage = lockPageNumber(pageSize);
  assert.equal(lockPage, 262145);
  const commit = lockPage + 10;
  const header: Header = {
    flags: 0, // with database checksums, so both sides compute the §1.9 vector
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
  const page = filled(pageSize, 0x78); // "x"
  // The pipe holds one chunk: the encoder waits for the decoder, so the 1 GiB file is never
  // held in memory.
  const pipe = new TransformStream<Uint8Array, Uint8Array>();
  const encoder = new Encoder(pipe.writable, header, { encoding: "block" });
  const produce = (async () => {
    for (let pgno = 1; pgno <= commit; pgno++) {
      if (pgno !== lockPage) await encoder.encodePage(pgno, page);
    }
    return await encoder.close();
  })();
  const decoder = new Decoder(pipe.readable, { name: "lock-page.ltx" });
  let count = 0;
  let previous = 0;
  for (let p = await decoder.readPage(); p; p = await decoder.readPage()) {
    assert.notEqual(p.pgno, lockPage);
    assert.equal(p.pgno, previous + 1 === lockPage ? previous + 2 : previous + 1);
    assert.equal(p.data[0], 0x78);
    assert.equal(p.data[pageSize - 1], 0x78);
    previous = p.pgno;
    count++;
  }
  const trailer = await produce;
  assert.equal(count, commit - 1);
  assert.equal(trailer.postApplyChecksum, 0xc19b668c376662c7n);
  assert.equal(decoder.trailer?.postApplyChecksum, 0xc19b668c376662c7n);
  assert.equal(decoder.trailer?.fileChecksum, trailer.fileChecksum);
});
