import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import {
  openRandomAccess,
  parseWALHeader,
  PrevFrameMismatchError,
  type RandomAccessFile,
  readFrameHeader,
  readWAL,
  WAL_FRAME_HEADER_SIZE,
  WAL_HEADER_SIZE,
  walChecksum,
  WALError,
  type WALReadResult,
} from "../src/sqlite/mod.ts";

const fixture = (path: string) => fileURLToPath(new URL(`./fixtures/${path}`, import.meta.url));

const OK_WAL = fixture("testdata/wal-reader/ok/wal");
const BIG_WAL = fixture("sqlite/big.wal");

/** A RandomAccessFile over bytes in memory, for WALs built or cut by the tests. */
function memoryFile(bytes: Uint8Array): RandomAccessFile {
  return {
    readAt(buffer, position) {
      const part = bytes.subarray(Math.min(position, bytes.length), position + buffer.length);
      buffer.set(part);
      return Promise.resolve(part.length);
    },
    size: () => Promise.resolve(bytes.length),
  };
}

async function readWALFile(path: string, options?: Parameters<typeof readWAL>[1]) {
  const file = await openRandomAccess(path);
  try {
    return await readWAL(file, options);
  } finally {
    file.close();
  }
}

function entries(result: WALReadResult | null): [number, number][] {
  assert.ok(result);
  return [...result.pageMap].sort((a, b) => a[0] - b[0]);
}

Deno.test("readWAL: ok fixture, whole WAL", async () => {
  const result = await readWALFile(OK_WAL);
  assert.ok(result);
  assert.deepEqual(result.header, {
    bigEndianChecksums: false,
    version: 3007000,
    pageSize: 4096,
    checkpointSeq: 0,
    salt1: 0x4875a40b,
    salt2: 0xa38de4f5,
    checksum1: result.header.checksum1,
    checksum2: result.header.checksum2,
  });
  assert.deepEqual(entries(result), [[1, 32], [2, 8272]]);
  assert.equal(result.commit, 2);
  assert.equal(result.endOffset, 12392);
  assert.equal(result.salt1, 0x4875a40b);
  assert.equal(result.salt2, 0xa38de4f5);
});

Deno.test("readWAL: maxBytes is checked only after commit frames (FORMAT.md §4.1 vector)", async () => {
  const result = await readWALFile(OK_WAL, { maxBytes: 1 });
  assert.deepEqual(entries(result), [[1, 32], [2, 4152]]);
  assert.equal(result!.commit, 2);
  assert.equal(result!.endOffset, 8272);
});

Deno.test("readWAL: stops at a salt mismatch or a checksum mismatch", async () => {
  for (const name of ["salt-mismatch", "frame-checksum-mismatch"]) {
    const path = fixture(`testdata/wal-reader/${name}/wal`);
    const result = await readWALFile(path);
    // Only frame 1 is valid and it is not a commit frame: nothing committed.
    assert.ok(result, name);
    assert.equal(result.pageMap.size, 0, name);
    assert.equal(result.commit, 0, name);
    assert.equal(result.endOffset, 0, name);
    const file = await openRandomAccess(path);
    try {
      const frame2 = await readFrameHeader(file, 4152);
      assert.ok(frame2);
      assert.equal(frame2.pgno, 2);
      assert.equal(frame2.commit, 2);
    } finally {
      file.close();
    }
  }
});

Deno.test("readWAL: frames of older WAL generations are excluded", async () => {
  const path = fixture("testdata/wal-reader/frame-salts/wal");
  const result = await readWALFile(path);
  assert.ok(result);
  assert.equal(result.header.checkpointSeq, 2);
  assert.equal(result.header.salt1, 0x1b9a294b);
  assert.equal(result.header.salt2, 0x37f91916);
  // Two valid frames (both commits of page 2) before the stale generations.
  assert.deepEqual(entries(result), [[2, 4152]]);
  assert.equal(result.commit, 2);
  assert.equal(result.endOffset, 8272);

  const file = await openRandomAccess(path);
  try {
    const salts = new Set<string>();
    for (let offset = WAL_HEADER_SIZE;; offset += WAL_FRAME_HEADER_SIZE + 4096) {
      const frame = await readFrameHeader(file, offset);
      if (!frame) break;
      salts.add(`${frame.salt1.toString(16)}/${frame.salt2.toString(16)}`);
    }
    assert.deepEqual(
      [...salts].sort(),
      ["1b9a2949/13b3dd67", "1b9a294a/31f195e", "1b9a294b/37f91916"],
    );
  } finally {
    file.close();
  }
});

Deno.test("parseWALHeader: header error vectors of FORMAT.md §6.1", () => {
  assert.equal(parseWALHeader(new Uint8Array(0)), null);
  assert.equal(parseWALHeader(new Uint8Array(10)), null);
  assert.throws(
    () => parseWALHeader(new Uint8Array(32)),
    (err) => err instanceof WALError && /invalid WAL header magic: 0\b/.test(err.message),
  );
  const badChecksum = new Uint8Array(32);
  badChecksum.set([0x37, 0x7f, 0x06, 0x83]);
  assert.equal(parseWALHeader(badChecksum), null);
  const badVersion = new Uint8Array(32);
  badVersion.set([0x37, 0x7f, 0x06, 0x83, 0x00, 0x00, 0x00, 0x01]);
  badVersion.set([0x15, 0x7b, 0x20, 0x92, 0xbb, 0xf8, 0x34, 0x1d], 24);
  assert.throws(
    () => parseWALHeader(badVersion),
    (err) => err instanceof WALError && /unsupported WAL version: 1\b/.test(err.message),
  );
});

Deno.test("readWAL: no header, or a header with partial frames", async () => {
  const ok = await Deno.readFile(OK_WAL);
  assert.equal(await readWAL(memoryFile(new Uint8Array(0))), null);
  assert.equal(await readWAL(memoryFile(ok.subarray(0, 31))), null);
  for (const length of [32, 40, 56, 1000, 4151]) {
    const result = await readWAL(memoryFile(ok.subarray(0, length)));
    assert.ok(result, `length ${length}`);
    assert.equal(result.pageMap.size, 0);
    assert.equal(result.endOffset, 0);
  }
  // The third frame cut short: the first transaction still counts.
  const cut = await readWAL(memoryFile(ok.subarray(0, 8272 + 100)));
  assert.deepEqual(entries(cut), [[1, 32], [2, 4152]]);
  assert.equal(cut!.endOffset, 8272);
});

Deno.test("readWAL: 64 KiB pages (big.wal), commit frames and shrink-free page map", async () => {
  const result = await readWALFile(BIG_WAL);
  assert.ok(result);
  assert.equal(result.header.pageSize, 65536);
  assert.equal(result.header.salt1, 0xa0c9eaeb);
  assert.equal(result.header.salt2, 0xe23b09dc);
  assert.deepEqual(entries(result), [
    [1, 458952],
    [2, 524512],
    [3, 262272],
    [4, 327832],
    [5, 393392],
    [6, 590072],
  ]);
  assert.equal(result.commit, 6);
  assert.equal(result.endOffset, 655632);

  const first = await readWALFile(BIG_WAL, { maxBytes: 1 });
  assert.deepEqual(entries(first), [[1, 32], [2, 65592]]);
  assert.equal(first!.endOffset, 131152);
  assert.equal(first!.commit, 2);

  // Applying the WAL to big-base.db gives big.db (the fixture README's recipe).
  const image = await applyWAL(await Deno.readFile(fixture("sqlite/big-base.db")), BIG_WAL, result);
  assert.deepEqual(image, await Deno.readFile(fixture("sqlite/big.db")));
});

Deno.test("readWAL: resume from an offset", async () => {
  const ok = await readWALFile(OK_WAL, { offset: 4152, salt1: 0x4875a40b, salt2: 0xa38de4f5 });
  assert.deepEqual(entries(ok), [[2, 8272]]);
  assert.equal(ok!.commit, 2);
  assert.equal(ok!.endOffset, 12392);

  // Nothing after the last frame: a valid resume with nothing new.
  const atEnd = await readWALFile(OK_WAL, { offset: 12392, salt1: 0x4875a40b, salt2: 0xa38de4f5 });
  assert.ok(atEnd);
  assert.equal(atEnd.pageMap.size, 0);
  assert.equal(atEnd.endOffset, 0);

  await assert.rejects(
    readWALFile(OK_WAL, { offset: 4152, salt1: 0x4875a40c, salt2: 0xa38de4f5 }),
    PrevFrameMismatchError,
  );
  // The previous frame does not exist (past the end of the file).
  await assert.rejects(
    readWALFile(OK_WAL, { offset: 16512, salt1: 0x4875a40b, salt2: 0xa38de4f5 }),
    PrevFrameMismatchError,
  );
  await assert.rejects(
    readWALFile(OK_WAL, { offset: 4153, salt1: 0x4875a40b, salt2: 0xa38de4f5 }),
    (err) => err instanceof WALError && !(err instanceof PrevFrameMismatchError),
  );
  await assert.rejects(readWALFile(OK_WAL, { offset: 4152 }), WALError);

  // The frame before the offset is read unverified: its stored checksum seeds the rest even
  // when its page data no longer matches it.
  const bytes = await Deno.readFile(OK_WAL);
  bytes[32 + WAL_FRAME_HEADER_SIZE + 7] ^= 0xff;
  const seeded = await readWAL(memoryFile(bytes), {
    offset: 4152,
    salt1: 0x4875a40b,
    salt2: 0xa38de4f5,
  });
  assert.deepEqual(entries(seeded), [[2, 8272]]);
  // ...while a read from the start stops at that frame.
  assert.equal((await readWAL(memoryFile(bytes)))!.endOffset, 0);
});

Deno.test("readWAL: chained syncs with maxBytes reproduce the whole-WAL page map", async () => {
  const whole = await readWALFile(BIG_WAL);
  assert.ok(whole);
  const merged = new Map<number, number>();
  let offset = WAL_HEADER_SIZE;
  let salts = { salt1: 0, salt2: 0 };
  let reads = 0;
  for (;;) {
    const part = await readWALFile(BIG_WAL, { offset, ...salts, maxBytes: 1 });
    assert.ok(part);
    if (part.endOffset === 0) break;
    reads++;
    for (const [pgno, at] of part.pageMap) merged.set(pgno, at);
    offset = part.endOffset;
    salts = { salt1: part.salt1, salt2: part.salt2 };
  }
  assert.equal(reads, 3);
  assert.equal(offset, whole.endOffset);
  assert.deepEqual(merged, whole.pageMap);
});

Deno.test("readWAL: big-endian checksums (magic 0x377f0683)", async () => {
  const bigEndian = toBigEndianWAL(await Deno.readFile(BIG_WAL));
  const header = parseWALHeader(bigEndian);
  assert.ok(header);
  assert.equal(header.bigEndianChecksums, true);
  const result = await readWAL(memoryFile(bigEndian));
  const expected = await readWALFile(BIG_WAL);
  assert.deepEqual(entries(result), entries(expected));
  assert.equal(result!.endOffset, 655632);
  assert.equal(result!.commit, 6);

  // The same bytes with the little-endian magic fail the header checksum: "no WAL".
  const wrongMagic = bigEndian.slice();
  wrongMagic[3] = 0x82;
  assert.equal(parseWALHeader(wrongMagic), null);

  const ok = toBigEndianWAL(await Deno.readFile(OK_WAL));
  const okResult = await readWAL(memoryFile(ok), { maxBytes: 1 });
  assert.deepEqual(entries(okResult), [[1, 32], [2, 4152]]);
});

Deno.test("walChecksum: aligned and unaligned input agree; length must be a multiple of 8", () => {
  const data = new Uint8Array(4096 + 8);
  for (let i = 0; i < data.length; i++) data[i] = (i * 131 + 7) & 0xff;
  const aligned = data.slice(0, 4096);
  const unaligned = new Uint8Array(data.buffer, 1, 4096);
  unaligned.set(aligned);
  for (const bigEndian of [false, true]) {
    const a = walChecksum(bigEndian, aligned, 0x12345678, 0x9abcdef0);
    const b = walChecksum(bigEndian, unaligned, 0x12345678, 0x9abcdef0);
    assert.deepEqual(a, b);
    assert.ok(a[0] >= 0 && a[0] <= 0xffffffff && a[1] >= 0 && a[1] <= 0xffffffff);
  }
  // Hand-computed: one unit (1, 2) little-endian from (0, 0) gives s0 = 1, s1 = 3.
  assert.deepEqual(walChecksum(false, new Uint8Array([1, 0, 0, 0, 2, 0, 0, 0]), 0, 0), [1, 3]);
  assert.deepEqual(walChecksum(true, new Uint8Array([0, 0, 0, 1, 0, 0, 0, 2]), 0, 0), [1, 3]);
  // Wrapping at 32 bits.
  assert.deepEqual(
    walChecksum(false, new Uint8Array([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]), 1, 0),
    [0, 0],
  );
  assert.throws(() => walChecksum(false, new Uint8Array(12), 0, 0), RangeError);
});

Deno.test("readWAL: a live WAL written by node:sqlite reproduces the checkpointed database", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-wal-" });
  const dbPath = join(dir, "live.db");
  const conn = new DatabaseSync(dbPath);
  let dbFile, walFile;
  try {
    conn.exec("PRAGMA journal_mode = wal; PRAGMA wal_autocheckpoint = 0;");
    conn.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, payload BLOB)");
    conn.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    // Long-lived descriptors, opened while the connection lives and closed after it.
    dbFile = await openRandomAccess(dbPath);
    walFile = await openRandomAccess(dbPath + "-wal");
    const base = await readAll(dbFile);

    const insert = conn.prepare("INSERT INTO t (payload) VALUES (?)");
    for (let tx = 0; tx < 20; tx++) {
      conn.exec("BEGIN");
      for (let row = 0; row < 1 + (tx % 5) * 20; row++) insert.run(randomBytes(300 + tx * 10));
      conn.exec("COMMIT");
    }
    // Shrink: frames of pages past the final size must be dropped from the page map.
    conn.exec("DELETE FROM t WHERE id > 20; VACUUM;");
    const committed = await readWAL(walFile);
    assert.ok(committed);
    assert.ok(committed.pageMap.size > 0);
    for (const pgno of committed.pageMap.keys()) assert.ok(pgno <= committed.commit);

    // A transaction larger than the page cache spills frames into the WAL before its commit
    // frame exists: they must not count yet.
    conn.exec("PRAGMA cache_size = 2; BEGIN;");
    for (let row = 0; row < 50; row++) insert.run(randomBytes(5000));
    assert.ok((await walFile.size()) > committed.endOffset, "the transaction spilled frames");
    const duringTx = await readWAL(walFile);
    assert.ok(duringTx);
    assert.equal(duringTx.endOffset, committed.endOffset);
    assert.deepEqual(duringTx.pageMap, committed.pageMap);
    conn.exec("COMMIT");
    const count = (conn.prepare("SELECT count(*) AS n FROM t").get() as { n: number }).n;
    assert.equal(count, 70);

    const whole = await readWAL(walFile);
    assert.ok(whole);
    assert.ok(whole.endOffset > committed.endOffset);
    const image = applyWALBytes(base, await readAll(walFile), whole);

    const ckpt = conn.prepare("PRAGMA wal_checkpoint(TRUNCATE)").get() as { busy: number };
    assert.equal(ckpt.busy, 0);
    const checkpointed = await readAll(dbFile);
    assert.equal(checkpointed.length, whole.commit * whole.header.pageSize);
    assert.deepEqual(image, checkpointed);
  } finally {
    conn.close();
    walFile?.close();
    dbFile?.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("openRandomAccess: positional, concurrent and end-of-file reads", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-raf-" });
  try {
    const path = join(dir, "data");
    const bytes = randomBytes(300_000);
    await Deno.writeFile(path, bytes);
    const file = await openRandomAccess(path);
    assert.equal(await file.size(), bytes.length);
    const reads = Array.from({ length: 64 }, (_, i) => {
      const position = (i * 4099) % (bytes.length - 5000);
      const buffer = new Uint8Array(5000);
      return file.readAt(buffer, position).then((n) => ({ n, buffer, position }));
    });
    for (const { n, buffer, position } of await Promise.all(reads)) {
      assert.equal(n, 5000);
      assert.deepEqual(buffer, bytes.subarray(position, position + 5000));
    }
    // Into a view with an offset into a larger buffer.
    const backing = new Uint8Array(100);
    assert.equal(await file.readAt(backing.subarray(10, 20), 1000), 10);
    assert.deepEqual(backing.subarray(10, 20), bytes.subarray(1000, 1010));
    assert.deepEqual(backing.subarray(0, 10), new Uint8Array(10));
    // Short at the end, zero past it.
    assert.equal(await file.readAt(new Uint8Array(100), bytes.length - 40), 40);
    assert.equal(await file.readAt(new Uint8Array(100), bytes.length + 1), 0);
    file.close();
    file.close();
    await assert.rejects(file.readAt(new Uint8Array(1), 0), /closed/);
    await assert.rejects(openRandomAccess(join(dir, "missing")), /ENOENT/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

async function readAll(file: RandomAccessFile): Promise<Uint8Array> {
  const buffer = new Uint8Array(await file.size());
  assert.equal(await file.readAt(buffer, 0), buffer.length);
  return buffer;
}

async function applyWAL(base: Uint8Array, walPath: string, result: WALReadResult) {
  return applyWALBytes(base, await Deno.readFile(walPath), result);
}

/** The database image after applying the page map to `base`: what a checkpoint writes. */
function applyWALBytes(base: Uint8Array, wal: Uint8Array, result: WALReadResult): Uint8Array {
  const pageSize = result.header.pageSize;
  const image = new Uint8Array(result.commit * pageSize);
  image.set(base.subarray(0, image.length));
  for (const [pgno, offset] of result.pageMap) {
    const start = offset + WAL_FRAME_HEADER_SIZE;
    image.set(wal.subarray(start, start + pageSize), (pgno - 1) * pageSize);
  }
  return image;
}

/** Rewrites a little-endian WAL with magic 0x377f0683 and big-endian checksums. */
function toBigEndianWAL(wal: Uint8Array): Uint8Array {
  const out = wal.slice();
  const view = new DataView(out.buffer);
  view.setUint32(0, 0x377f0683);
  let [s0, s1] = walChecksum(true, out.subarray(0, 24), 0, 0);
  view.setUint32(24, s0);
  view.setUint32(28, s1);
  const pageSize = view.getUint32(8);
  const frameSize = WAL_FRAME_HEADER_SIZE + pageSize;
  for (let at = WAL_HEADER_SIZE; at + frameSize <= out.length; at += frameSize) {
    [s0, s1] = walChecksum(true, out.subarray(at, at + 8), s0, s1);
    [s0, s1] = walChecksum(true, out.subarray(at + WAL_FRAME_HEADER_SIZE, at + frameSize), s0, s1);
    view.setUint32(at + 16, s0);
    view.setUint32(at + 20, s1);
  }
  return out;
}

function randomBytes(n: number): Uint8Array {
  const bytes = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(bytes.subarray(i, i + 65536));
  return bytes;
}

Deno.test("readWAL: singleReadBytes keeps a multi-megabyte WAL in one buffer, and no more", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-wal-" });
  const dbPath = join(dir, "big.db");
  const conn = new DatabaseSync(dbPath);
  try {
    conn.exec("PRAGMA journal_mode = wal; PRAGMA wal_autocheckpoint = 0;");
    conn.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, payload BLOB)");
    const insert = conn.prepare("INSERT INTO t (payload) VALUES (?)");
    // ~3 MiB of WAL in 48 transactions: more than the first 1 MiB read.
    for (let tx = 0; tx < 48; tx++) insert.run(randomBytes(64 * 1024));
    const wal = await Deno.readFile(dbPath + "-wal");
    assert.ok(wal.length > 3 << 20);
    const whole = await readWALFile(dbPath + "-wal");
    assert.ok(whole && whole.frames === undefined, "the default keeps at most 1 MiB");

    const allocated: number[] = [];
    const kept = await readWALFile(dbPath + "-wal", {
      singleReadBytes: 16 << 20,
      allocate: (bytes) => {
        allocated.push(bytes);
        return new Uint8Array(bytes);
      },
    });
    assert.ok(kept?.frames, "the whole WAL is handed back");
    assert.equal(kept.frames.offset, WAL_HEADER_SIZE);
    assert.deepEqual(kept.frames.bytes.subarray(0, wal.length - WAL_HEADER_SIZE), wal.subarray(32));
    assert.deepEqual(entries(kept), entries(whole));
    assert.equal(kept.endOffset, whole.endOffset);
    assert.ok(allocated[0] <= 1 << 20, `first read ${allocated[0]} bytes, at most 1 MiB`);
    assert.equal(allocated.length, 2, "grown once, to the file's size");

    // Past singleReadBytes: the same page map, read in chunks, no frames.
    const chunked = await readWALFile(dbPath + "-wal", { singleReadBytes: 2 << 20 });
    assert.ok(chunked && chunked.frames === undefined);
    assert.deepEqual(entries(chunked), entries(whole));

    // A restarted WAL keeps its old length: a small sync reads at most 1 MiB of the stale tail.
    conn.exec("PRAGMA wal_checkpoint(PASSIVE)");
    insert.run(randomBytes(100));
    assert.equal((await Deno.stat(dbPath + "-wal")).size, wal.length, "the WAL kept its length");
    allocated.length = 0;
    const restarted = await readWALFile(dbPath + "-wal", {
      singleReadBytes: 16 << 20,
      allocate: (bytes) => {
        allocated.push(bytes);
        return new Uint8Array(bytes);
      },
    });
    assert.ok(restarted?.frames);
    assert.deepEqual(allocated, [Math.floor((1 << 20) / (4096 + 24)) * (4096 + 24)]);
    assert.ok(restarted.pageMap.size > 0 && restarted.pageMap.size < 10);
  } finally {
    conn.close();
    await Deno.remove(dir, { recursive: true });
  }
});
