/**
 * LTX codec benchmark: CRC-64/GO-ISO, LTX encode and decode of a whole snapshot, and the LZ4
 * block codec alone, in MB/s of page data on one core (one thread).
 *
 *   deno run -A scripts/bench/codec.ts [--quick]
 *
 * Pages come from a generated SQLite database of typical rows (4 KiB pages, about half
 * compressible, like real tables and indexes; 32 MB, 8 MB with `--quick`). Each row measures
 * the calls production makes. Encode, in both page encodings, hands its chunks to a sink that
 * copies each into one output buffer, as the codec worker and a directory replica do, and may
 * reuse them (`reuseChunks`). Decode reads the output back through a stream of 256 KiB chunks
 * with full verification, 1 MiB of pages per call into a reused batch (`readPagesInto`), as
 * restore and the codec worker do. The rows' notes give the calls that allocate, in the same
 * run: an encoder whose sink keeps each chunk (uploads to object storage), and `readPage`, a
 * fresh array per page.
 *
 * sluice's figures are its WebAssembly codec (wasm/codec/). Baselines, on the same bytes in the
 * same run: the TypeScript reference codec (src/ltx/_lz4_block.ts and friends, switched in with
 * `useReferenceCodec`) for CRC-64, encode and decode; lz4_flex compiled to WebAssembly
 * (`npm:lz4-wasm-nodejs`) for the LZ4 block codec alone. lz4-wasm has no call that writes into
 * a preallocated buffer, so its figures include allocating each output; sluice's write into
 * preallocated buffers. Each row's note gives the target of issue 15 where there is one.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import * as lz4wasm from "lz4-wasm-nodejs";
import { crc64, Decoder, Encoder, type Header, type PageEncoding } from "../../src/ltx/mod.ts";
import {
  compressBlockWasm,
  compressBound,
  crc64Reference,
  decompressBlockWasm,
  useReferenceCodec,
} from "../../src/ltx/testing.ts";
import {
  type BenchOptions,
  type BenchResult,
  formatTable,
  formatValue,
  progress,
  result,
} from "./_common.ts";

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

/**
 * Encodes `db` as a snapshot. By default as production's codec worker does: each chunk
 * copied into `output` by the sink, the encoder reusing its buffer. With `keepChunks` the sink
 * keeps each chunk instead (as uploads to object storage do), so every chunk is a new buffer.
 */
async function encode(
  db: Uint8Array,
  encoding: PageEncoding,
  output: Uint8Array,
  keepChunks = false,
) {
  const commit = db.length / PAGE_SIZE;
  let size = 0;
  const kept: Uint8Array[] = [];
  const sink = new WritableStream<Uint8Array>({
    write(chunk) {
      if (keepChunks) kept.push(chunk);
      else output.set(chunk, size);
      size += chunk.length;
    },
  });
  const encoder = new Encoder(sink, header(commit), { encoding, reuseChunks: !keepChunks });
  const start = performance.now();
  for (let pgno = 1; pgno <= commit; pgno++) {
    await encoder.encodePage(pgno, db.subarray((pgno - 1) * PAGE_SIZE, pgno * PAGE_SIZE));
  }
  await encoder.close();
  return { seconds: (performance.now() - start) / 1000, bytes: output.subarray(0, size) };
}

/** Output chunk size of the encoder, and so of the stream decode reads. */
const CHUNK_BYTES = 256 * 1024;
/** Pages per `readPagesInto` call: 1 MiB, as restore's and the codec worker's batches. */
const BATCH_PAGES = (1 << 20) / PAGE_SIZE;
const batch = new Uint8Array(BATCH_PAGES * PAGE_SIZE);
const batchPgnos = new Uint32Array(BATCH_PAGES);

/** Decodes `file`, as restore does, or with `readPage` (a fresh array per page). */
async function decode(file: Uint8Array, freshPages = false) {
  const chunks: Uint8Array[] = [];
  for (let at = 0; at < file.length; at += CHUNK_BYTES) {
    chunks.push(file.subarray(at, at + CHUNK_BYTES));
  }
  const start = performance.now();
  const decoder = new Decoder(ReadableStream.from(chunks), { name: "bench.ltx" });
  await decoder.readHeader();
  let pages = 0;
  if (freshPages) {
    while (await decoder.readPage()) pages++;
  } else {
    for (let n; (n = await decoder.readPagesInto(batch, batchPgnos)) > 0;) pages += n;
  }
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

/**
 * Encode and decode figures of one page encoding with the codec in use, best of `rounds`: as
 * production codes, and with `allocating` also with the calls that allocate (else NaN).
 */
async function encodeDecode(
  db: Uint8Array,
  encoding: PageEncoding,
  rounds: number,
  allocating: boolean,
) {
  const output = new Uint8Array(db.length * 2);
  await decode((await encode(db, encoding, output)).bytes); // warm up (and tier up the WebAssembly)
  const best = async (run: () => Promise<{ seconds: number }>) => {
    let seconds = Infinity;
    for (let i = 0; i < rounds; i++) seconds = Math.min(seconds, (await run()).seconds);
    return seconds;
  };
  const file = (await encode(db, encoding, output)).bytes.slice();
  const encodeSeconds = await best(() => encode(db, encoding, output));
  const decodeSeconds = await best(() => decode(file));
  const keepingSeconds = allocating ? await best(() => encode(db, encoding, output, true)) : NaN;
  const readPageSeconds = allocating ? await best(() => decode(file, true)) : NaN;
  const mb = db.length / 1e6;
  return {
    encode: mb / encodeSeconds,
    encodeKeeping: mb / keepingSeconds,
    decode: mb / decodeSeconds,
    decodeReadPage: mb / readPageSeconds,
    size: file.length,
  };
}

function target(value: number, goal: number, what: string): string {
  return `target ${what} >= ${goal} MB/s (issue 15): ${value >= goal ? "met" : "missed"}`;
}

/** The codec figures. */
export async function run(options: BenchOptions): Promise<BenchResult[]> {
  progress("codec: LTX encode/decode, CRC-64 and LZ4, WebAssembly vs TypeScript and lz4-wasm");
  const db = await databasePages(options.quick ? 8 : 32);
  const ms = options.quick ? 500 : 1500;
  // Best of several: one round of 8 MB takes ~15 ms, and a shared host preempts some.
  const rounds = options.quick ? 5 : 7;
  const pages: Uint8Array[] = [];
  for (let at = 0; at < db.length; at += PAGE_SIZE) pages.push(db.subarray(at, at + PAGE_SIZE));
  const results: BenchResult[] = [];

  const crcWasm = mbPerSecond(
    () => {
      for (const page of pages) crc64(page);
    },
    db.length,
    ms,
  );
  const crcReference = mbPerSecond(
    () => {
      for (const page of pages) crc64Reference(page);
    },
    db.length,
    ms,
  );
  results.push(
    result("CRC-64, 4 KiB pages, 1 core", "MB/s", crcWasm, crcReference, "TypeScript reference"),
  );

  for (const encoding of ["frame", "block"] as const) {
    const wasm = await encodeDecode(db, encoding, rounds, true);
    useReferenceCodec(true);
    let reference;
    try {
      reference = await encodeDecode(db, encoding, rounds, false);
    } finally {
      useReferenceCodec(false);
    }
    results.push(
      result(
        `LTX encode (${encoding}), 1 core`,
        "MB/s",
        wasm.encode,
        reference.encode,
        "TypeScript reference",
        `${target(wasm.encode, 600, "encode")}; ${encoding} output is ` +
          `${(wasm.size / db.length).toFixed(3)} of the page bytes; with a sink that keeps ` +
          `each chunk ${formatValue(wasm.encodeKeeping)} MB/s`,
      ),
      result(
        `LTX decode (${encoding}), 1 core`,
        "MB/s",
        wasm.decode,
        reference.decode,
        "TypeScript reference",
        `${target(wasm.decode, 1000, "decode")}; with readPage (a fresh array per page) ` +
          `${formatValue(wasm.decodeReadPage)} MB/s`,
      ),
    );
  }

  // The LZ4 block codec alone: sluice's WebAssembly build vs lz4_flex's.
  const scratch = new Uint8Array(compressBound(PAGE_SIZE) + 8);
  const sluiceCompress = mbPerSecond(
    () => {
      for (const page of pages) compressBlockWasm(page, scratch, 0);
    },
    db.length,
    ms,
  );
  const lz4Compress = mbPerSecond(
    () => {
      for (const page of pages) lz4wasm.compress(page);
    },
    db.length,
    ms,
  );
  const blocks = pages.map((page) => scratch.slice(0, compressBlockWasm(page, scratch, 0)));
  const lz4Blocks = pages.map((page) => lz4wasm.compress(page));
  const out = new Uint8Array(PAGE_SIZE);
  const sluiceDecompress = mbPerSecond(
    () => {
      for (const block of blocks) decompressBlockWasm(block, 0, block.length, out, 0, PAGE_SIZE);
    },
    db.length,
    ms,
  );
  const lz4Decompress = mbPerSecond(
    () => {
      for (const block of lz4Blocks) lz4wasm.decompress(block);
    },
    db.length,
    ms,
  );
  const note = "lz4-wasm allocates each output (it has no call into a preallocated buffer)";
  results.push(
    result(
      "LZ4 compress, 4 KiB pages, 1 core",
      "MB/s",
      sluiceCompress,
      lz4Compress,
      "lz4-wasm",
      note,
    ),
    result(
      "LZ4 decompress, 4 KiB pages, 1 core",
      "MB/s",
      sluiceDecompress,
      lz4Decompress,
      "lz4-wasm",
      note,
    ),
  );
  return results;
}

if (import.meta.main) {
  console.log(formatTable(await run({ quick: Deno.args.includes("--quick") })));
}
