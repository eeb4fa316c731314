/**
 * LTX codec benchmark: CRC-64/GO-ISO, and LTX encode and decode of a whole snapshot, in MB/s of
 * page data per core (one thread).
 *
 *   deno run -A scripts/bench/codec.ts [--quick]
 *
 * Pages come from a generated SQLite database of typical rows (4 KiB pages, about half
 * compressible, like real tables and indexes; 32 MB, 8 MB with `--quick`). Encode writes to a
 * discarding sink in both page encodings; decode reads the encoded bytes back through a stream
 * with full verification.
 *
 * Baselines, on the same bytes in the same run: for encode, LZ4 compression of every page alone
 * with lz4_flex compiled to WebAssembly (`npm:lz4-wasm-nodejs`), i.e. the compression step with
 * no LTX framing, checksums or streams; for decode, lz4-wasm decompression of those blocks; for
 * CRC-64, zlib's native CRC-32 (`node:zlib` crc32, C code), the cost of a table-driven CRC in
 * native code.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import zlib from "node:zlib";
import * as wasm from "lz4-wasm-nodejs";
import { crc64, Decoder, Encoder, type Header, type PageEncoding } from "../../src/ltx/mod.ts";
import { type BenchOptions, type BenchResult, formatTable, progress, result } from "./_common.ts";

const PAGE_SIZE = 4096;

/** Database pages of a table with text, numbers and JSON plus an index. */
async function databasePages(TARGET_MB: number): Promise<Uint8Array> {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/bench.db`;
    const db = new DatabaseSync(path);
    db.exec(`PRAGMA page_size = ${PAGE_SIZE}; PRAGMA journal_mode = DELETE;`);
    db.exec(
      "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, email TEXT, n INTEGER, doc TEXT);" +
        "CREATE INDEX t_email ON t(email);",
    );
    const insert = db.prepare("INSERT INTO t (name, email, n, doc) VALUES (?, ?, ?, ?)");
    let seed = 42;
    const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
    db.exec("BEGIN");
    const rows = Math.ceil(TARGET_MB * 1024 * 1024 / 150);
    for (let i = 0; i < rows; i++) {
      insert.run(
        `customer ${i} ${["north", "south", "east", "west"][i & 3]}`,
        `user${Math.floor(rand() * 1e9)}@example.com`,
        Math.floor(rand() * 1e12),
        JSON.stringify({ plan: rand() < 0.2 ? "pro" : "free", seen: Math.floor(rand() * 1e6) }),
      );
    }
    db.exec("COMMIT");
    db.close();
    return await Deno.readFile(path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function header(commit: number): Header {
  return {
    flags: 2,
    pageSize: PAGE_SIZE,
    commit,
    minTXID: 1,
    maxTXID: 1,
    timestamp: Date.now(),
    preApplyChecksum: 0n,
    walOffset: 0,
    walSize: 0,
    walSalt1: 0,
    walSalt2: 0,
    nodeID: 0n,
  };
}

async function encode(db: Uint8Array, encoding: PageEncoding) {
  const commit = db.length / PAGE_SIZE;
  const chunks: Uint8Array[] = [];
  const encoder = new Encoder(
    new WritableStream({ write: (c) => void chunks.push(c) }),
    header(commit),
    { encoding },
  );
  const start = performance.now();
  for (let pgno = 1; pgno <= commit; pgno++) {
    await encoder.encodePage(pgno, db.subarray((pgno - 1) * PAGE_SIZE, pgno * PAGE_SIZE));
  }
  await encoder.close();
  return { seconds: (performance.now() - start) / 1000, chunks, size: encoder.bytesWritten };
}

async function decode(chunks: Uint8Array[]) {
  const start = performance.now();
  const decoder = new Decoder(ReadableStream.from(chunks), { name: "bench.ltx" });
  await decoder.readHeader();
  let pages = 0;
  while (await decoder.readPage()) pages++;
  return { seconds: (performance.now() - start) / 1000, pages };
}

/** MB/s of `run` over `bytes` bytes per call, for at least `ms` milliseconds after a warm-up. */
function mbPerSecond(run: () => void, bytes: number, ms: number): number {
  run();
  let rounds = 0;
  const start = performance.now();
  while (performance.now() - start < ms) {
    run();
    rounds++;
  }
  return (bytes * rounds) / ((performance.now() - start) / 1000) / 1e6;
}

/** The codec figures. */
export async function run(options: BenchOptions): Promise<BenchResult[]> {
  progress("codec: LTX encode/decode and CRC-64");
  const db = await databasePages(options.quick ? 8 : 32);
  const mb = db.length / 1e6;
  const ms = options.quick ? 500 : 1500;
  const pages: Uint8Array[] = [];
  for (let at = 0; at < db.length; at += PAGE_SIZE) pages.push(db.subarray(at, at + PAGE_SIZE));
  const results: BenchResult[] = [];

  const crcPages = mbPerSecond(
    () => {
      for (const page of pages) crc64(page);
    },
    db.length,
    ms,
  );
  const crc32Pages = mbPerSecond(
    () => {
      for (const page of pages) zlib.crc32(page);
    },
    db.length,
    ms,
  );
  results.push(
    result("CRC-64, 4 KiB pages, 1 core", "MB/s", crcPages, crc32Pages, "zlib crc32 (native C)"),
  );

  const wasmCompress = mbPerSecond(
    () => {
      for (const page of pages) wasm.compress(page);
    },
    db.length,
    ms,
  );
  const blocks = pages.map((page) => wasm.compress(page));
  const wasmDecompress = mbPerSecond(
    () => {
      for (const block of blocks) wasm.decompress(block);
    },
    db.length,
    ms,
  );

  for (const encoding of ["frame", "block"] as const) {
    await encode(db.subarray(0, 256 * PAGE_SIZE), encoding); // warm up
    let best = Infinity;
    let encoded!: Awaited<ReturnType<typeof encode>>;
    for (let i = 0; i < (options.quick ? 1 : 3); i++) {
      encoded = await encode(db, encoding);
      best = Math.min(best, encoded.seconds);
    }
    results.push(result(
      `LTX encode (${encoding}), 1 core`,
      "MB/s",
      mb / best,
      wasmCompress,
      "lz4-wasm compress",
      `${encoding}: output is ${(encoded.size / db.length).toFixed(3)} of the page bytes`,
    ));
    await decode(encoded.chunks); // warm up
    let bestDecode = Infinity;
    for (let i = 0; i < (options.quick ? 1 : 3); i++) {
      bestDecode = Math.min(bestDecode, (await decode(encoded.chunks)).seconds);
    }
    results.push(result(
      `LTX decode (${encoding}), 1 core`,
      "MB/s",
      mb / bestDecode,
      wasmDecompress,
      "lz4-wasm decompress",
    ));
  }
  return results;
}

if (import.meta.main) {
  console.log(formatTable(await run({ quick: Deno.args.includes("--quick") })));
}
