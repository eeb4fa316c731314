/**
 * Compatibility with real files: Go-written LTX (FORMAT.md §1.10), replicas written by an independent
 * encoder and restored byte-identical by Go, the checksummed replica Go refuses, and the legacy
 * pre-v0.5 file that must be rejected.
 */

import assert from "node:assert/strict";
import {
  decodeHeader,
  decodePageIndex,
  Decoder,
  type Header,
  HEADER_SIZE,
  lockPageNumber,
  LTXError,
  LTXFormatError,
  mergeDecoders,
  type Page,
  parseFilename,
} from "../src/ltx/mod.ts";

const fixtures = new URL("./fixtures/", import.meta.url);
const fixture = (path: string) => new URL(path, fixtures);

/** Decodes a whole file from disk (streamed), returning header, pages and trailer. */
async function decodeFile(path: string) {
  const file = await Deno.open(fixture(path));
  const decoder = new Decoder(file.readable, { name: path });
  const header = await decoder.readHeader();
  const pages: Page[] = [];
  for (let page = await decoder.readPage(); page; page = await decoder.readPage()) {
    pages.push(page);
  }
  return { header, pages, trailer: decoder.trailer! };
}

/** All .ltx files of a replica directory, in level then name order. */
async function replicaFiles(replica: string): Promise<string[]> {
  const files: string[] = [];
  for await (const level of Deno.readDir(fixture(`${replica}/ltx/`))) {
    for await (const entry of Deno.readDir(fixture(`${replica}/ltx/${level.name}/`))) {
      if (parseFilename(entry.name)) files.push(`${replica}/ltx/${level.name}/${entry.name}`);
    }
  }
  return files.sort();
}

/** Merges the given files like a restore and returns the database bytes (zeros at the lock page). */
async function restore(paths: string[]): Promise<{ bytes: Uint8Array; header: Header }> {
  const decoders = await Promise.all(paths.map(async (path) => {
    const file = await Deno.open(fixture(path));
    return new Decoder(file.readable, { name: path });
  }));
  const merged = await mergeDecoders(decoders);
  const { pageSize, commit } = merged.header;
  const bytes = new Uint8Array(pageSize * commit);
  const lockPage = lockPageNumber(pageSize);
  let expected = 1;
  for await (const page of merged.pages) {
    if (expected === lockPage) expected++;
    assert.equal(page.pgno, expected);
    bytes.set(page.data, (page.pgno - 1) * pageSize);
    expected++;
  }
  assert.equal(merged.trailers().length, paths.length);
  return { bytes, header: merged.header };
}

Deno.test("go-written: the 366-byte snapshot matches the walk-through of FORMAT.md §1.10", async () => {
  const path = "go-written/vfs-a/0000000000000001-0000000000000001.ltx";
  const bytes = await Deno.readFile(fixture(path));
  assert.equal(bytes.length, 366);
  const { header, pages, trailer } = await decodeFile(path);
  assert.deepEqual(header, {
    flags: 2,
    pageSize: 4096,
    commit: 2,
    minTXID: 1,
    maxTXID: 1,
    timestamp: 1795355996205,
    preApplyChecksum: 0n,
    walOffset: 0,
    walSize: 0,
    walSalt1: 0,
    walSalt2: 0,
    nodeID: 0n,
  });
  assert.deepEqual(decodeHeader(bytes.subarray(0, HEADER_SIZE)), header);
  assert.deepEqual(pages.map((p) => p.pgno), [1, 2]);
  assert.equal(new TextDecoder().decode(pages[0].data.subarray(0, 15)), "SQLite format 3");
  assert.ok(pages.every((p) => p.data.length === 4096));
  assert.equal(trailer.postApplyChecksum, 0n);
  assert.equal(trailer.fileChecksum, 0xff7a6deb7c59c643n);
  // The page index: (1,100,163) (2,263,64), length 9.
  const index = decodePageIndex(bytes, { name: path, fileSize: bytes.length });
  assert.deepEqual(index.entries, [
    { pgno: 1, offset: 100, size: 163 },
    { pgno: 2, offset: 263, size: 64 },
  ]);
  assert.equal(index.indexLength, 9);
  assert.deepEqual(index.trailer, trailer);
});

Deno.test("go-written: vfs-b snapshot and incremental decode and verify", async () => {
  const snapshot = await decodeFile("go-written/vfs-b/0000000000000001-0000000000000001.ltx");
  assert.equal(snapshot.header.minTXID, 1);
  assert.deepEqual(snapshot.pages.map((p) => p.pgno), [1, 2]);
  const incremental = await decodeFile("go-written/vfs-b/0000000000000002-0000000000000002.ltx");
  assert.equal(incremental.header.minTXID, 2);
  assert.equal(incremental.header.maxTXID, 2);
  assert.equal(incremental.header.preApplyChecksum, 0n);
  assert.equal(incremental.pages.length, 1);
  const restored = await restore([
    "go-written/vfs-b/0000000000000001-0000000000000001.ltx",
    "go-written/vfs-b/0000000000000002-0000000000000002.ltx",
  ]);
  assert.equal(restored.header.commit, incremental.header.commit);
});

Deno.test("node-written-go-verified: every file of every replica decodes and verifies", async () => {
  let count = 0;
  for (const replica of ["rep-block", "rep-frame", "rep-l1", "rep-big-block", "rep-big-frame"]) {
    for (const path of await replicaFiles(`node-written-go-verified/${replica}`)) {
      const { header, pages, trailer } = await decodeFile(path);
      const name = parseFilename(path.split("/").pop()!)!;
      assert.equal(header.minTXID, name.minTXID, path);
      assert.equal(header.maxTXID, name.maxTXID, path);
      assert.equal(header.flags, 2, path);
      assert.ok(pages.length > 0, path);
      assert.ok(pages.every((p) => p.data.length === header.pageSize), path);
      assert.ok(trailer.fileChecksum >= 0x8000000000000000n, path);
      count++;
    }
  }
  assert.equal(count, 10);
});

for (
  const [replica, files, expected] of [
    ["rep-block", [
      "ltx/9/0000000000000001-0000000000000001.ltx",
      "ltx/0/0000000000000002-0000000000000002.ltx",
    ], "v2.db"],
    ["rep-frame", [
      "ltx/9/0000000000000001-0000000000000001.ltx",
      "ltx/0/0000000000000002-0000000000000002.ltx",
    ], "v2.db"],
    ["rep-l1", [
      "ltx/1/0000000000000001-0000000000000002.ltx",
      "ltx/0/0000000000000003-0000000000000003.ltx",
    ], "v3.db"],
    ["rep-big-block", ["ltx/0/0000000000000001-0000000000000001.ltx"], "big.db"],
    ["rep-big-frame", ["ltx/0/0000000000000001-0000000000000001.ltx"], "big.db"],
  ] as const
) {
  Deno.test(`node-written-go-verified: ${replica} merges to sqlite/${expected}`, async () => {
    const { bytes } = await restore(files.map((f) => `node-written-go-verified/${replica}/${f}`));
    assert.deepEqual(bytes, await Deno.readFile(fixture(`sqlite/${expected}`)));
  });
}

Deno.test("negative/rep-checksum: checksummed files restore to v2.db with checksums verified", async () => {
  const paths = [
    "negative/rep-checksum/ltx/9/0000000000000001-0000000000000001.ltx",
    "negative/rep-checksum/ltx/0/0000000000000002-0000000000000002.ltx",
  ];
  const last = await decodeFile(paths[1]);
  assert.equal(last.header.flags, 0);
  assert.equal(last.trailer.postApplyChecksum, 0xd461d07ca12f5985n);
  const first = await decodeFile(paths[0]);
  assert.equal(last.header.preApplyChecksum, first.trailer.postApplyChecksum);
  const { bytes, header } = await restore(paths);
  assert.equal(header.flags, 2); // the merged output is NoChecksum, as Go's compactor writes
  assert.deepEqual(bytes, await Deno.readFile(fixture("sqlite/v2.db")));
});

Deno.test("legacy pre-v0.5 (ltx v1) file is rejected with a clear error", async () => {
  const path =
    "testdata/store/open-and-write-snapshot/dbs/sqlite.db/ltx/000000000000000d-000000000000000d.ltx";
  await assert.rejects(decodeFile(path), (err: Error) => {
    assert.ok(err instanceof LTXFormatError);
    assert.match(err.message, /pre-v0\.5 \(ltx v1\)/);
    assert.match(err.message, /not supported|only the v0\.5 format/);
    assert.ok(err.message.includes(path));
    return true;
  });
});

Deno.test("legacy header flag CompressLZ4 is rejected as a pre-v0.5 file", async () => {
  const bytes = await Deno.readFile(
    fixture("go-written/vfs-a/0000000000000001-0000000000000001.ltx"),
  );
  const legacy = bytes.slice();
  legacy[7] = 0x01;
  const decoder = new Decoder(ReadableStream.from([legacy]), { name: "old.ltx" });
  await assert.rejects(decoder.readHeader(), (err: Error) => {
    assert.ok(err instanceof LTXError);
    assert.match(err.message, /^old\.ltx: .*pre-v0\.5 \(ltx v1\)/);
    return true;
  });
});
