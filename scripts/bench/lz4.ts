/**
 * LZ4 block codec benchmark: sluice's WebAssembly codec (wasm/codec/, via src/ltx/_codec.ts)
 * against its TypeScript reference (src/ltx/_lz4_block.ts) and against the WebAssembly build of
 * lz4_flex (npm:lz4-wasm-nodejs), on realistic SQLite pages and synthetic ones.
 *
 *   deno run -A scripts/bench/lz4.ts [--quick]
 *
 * Page sets: a freshly generated database of typical rows with an index (4 KiB pages), the
 * 64 KiB-page fixture database, and random (incompressible) 4 KiB pages. Reports MB/s of
 * uncompressed bytes on one core; every baseline runs on the same pages in the same run. sluice
 * writes into preallocated buffers; lz4-wasm has no such call and allocates each output.
 * Every block of every side is first checked to decode to its page with sluice's decoders.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import * as wasm from "lz4-wasm-nodejs";
import { compressBlock, compressBound, decompressBlock } from "../../src/ltx/mod.ts";
import { compressBlockWasm, decompressBlockWasm } from "../../src/ltx/testing.ts";

import { type BenchOptions, type BenchResult, formatTable, progress, result } from "./_common.ts";

const fixtures = new URL("../../tests/fixtures/sqlite/", import.meta.url);

function splitPages(bytes: Uint8Array, pageSize: number): Uint8Array[] {
  const pages: Uint8Array[] = [];
  for (let at = 0; at + pageSize <= bytes.length; at += pageSize) {
    pages.push(bytes.slice(at, at + pageSize));
  }
  return pages;
}

/** A database of typical application rows: text, numbers, JSON, an index. */
async function generatedDatabasePages(): Promise<Uint8Array[]> {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/bench.db`;
    const db = new DatabaseSync(path);
    db.exec("PRAGMA page_size = 4096; PRAGMA journal_mode = DELETE;");
    db.exec(
      "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, email TEXT, created INTEGER, " +
        "profile TEXT); CREATE INDEX users_email ON users(email);",
    );
    const insert = db.prepare("INSERT INTO users (name, email, created, profile) VALUES (?,?,?,?)");
    db.exec("BEGIN");
    let seed = 12345;
    const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
    const words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"];
    for (let i = 0; i < 20000; i++) {
      const name = `${words[Math.floor(rand() * 8)]} ${words[Math.floor(rand() * 8)]} ${i}`;
      const email = `user${Math.floor(rand() * 1e9)}@example.com`;
      const profile = JSON.stringify({
        theme: rand() < 0.5 ? "dark" : "light",
        visits: Math.floor(rand() * 1000),
        tags: words.filter(() => rand() < 0.3),
      });
      insert.run(name, email, 1_700_000_000_000 + Math.floor(rand() * 1e10), profile);
    }
    db.exec("COMMIT");
    db.close();
    return splitPages(await Deno.readFile(path), 4096);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function randomPages(count: number, pageSize: number): Uint8Array[] {
  return Array.from({ length: count }, () => {
    const page = new Uint8Array(pageSize);
    for (let at = 0; at < pageSize; at += 65536) {
      crypto.getRandomValues(page.subarray(at, at + 65536));
    }
    return page;
  });
}

function mbPerSecond(run: () => void, bytesPerRun: number, ms: number): number {
  run(); // warm up
  let bytes = 0;
  const start = performance.now();
  while (performance.now() - start < ms) {
    run();
    bytes += bytesPerRun;
  }
  return bytes / ((performance.now() - start) / 1000) / 1e6;
}

/** The LZ4 figures: sluice's WebAssembly block codec vs its TypeScript reference and lz4-wasm. */
export async function run(options: BenchOptions): Promise<BenchResult[]> {
  progress("lz4: WebAssembly block codec vs TypeScript reference and lz4-wasm");
  const ms = options.quick ? 200 : 600;
  const sets: [string, Uint8Array[]][] = [
    ["generated 4K", await generatedDatabasePages()],
    ["fixture 64K", splitPages(await Deno.readFile(new URL("big.db", fixtures)), 65536)],
    ["random 4K", randomPages(64, 4096)],
  ];
  const results: BenchResult[] = [];
  for (const [name, pages] of sets) {
    const total = pages.reduce((n, p) => n + p.length, 0);
    const scratch = new Uint8Array(compressBound(65536) + 8);
    const tsBlocks = pages.map((p) => scratch.slice(0, compressBlock(p, scratch, 0)));
    const wasmBlocks = pages.map((p) => wasm.compress(p)); // 4-byte size prefix + block
    const outputs = pages.map((p) => new Uint8Array(p.length));
    // Cross-check: each side's blocks decode with sluice's decoder to the original page.
    for (const [i, page] of pages.entries()) {
      for (const block of [tsBlocks[i], wasmBlocks[i].subarray(4)]) {
        for (const decompress of [decompressBlock, decompressBlockWasm]) {
          const end = decompress(block, 0, block.length, outputs[i], 0, page.length);
          if (end !== page.length || outputs[i].some((b, k) => b !== page[k])) {
            throw new Error(`${name}: page ${i} does not round-trip`);
          }
        }
      }
    }
    const sluiceCompress = mbPerSecond(
      () => {
        for (const p of pages) compressBlockWasm(p, scratch, 0);
      },
      total,
      ms,
    );
    const sluiceDecompress = mbPerSecond(
      () => {
        for (let i = 0; i < pages.length; i++) {
          decompressBlockWasm(tsBlocks[i], 0, tsBlocks[i].length, outputs[i], 0, pages[i].length);
        }
      },
      total,
      ms,
    );
    const ratio = (blocks: Uint8Array[], prefix: number) =>
      (blocks.reduce((n, b) => n + b.length - prefix, 0) / total).toFixed(3);
    const tsCompress = mbPerSecond(
      () => {
        for (const p of pages) compressBlock(p, scratch, 0);
      },
      total,
      ms,
    );
    const wasmCompress = mbPerSecond(
      () => {
        for (const p of pages) wasm.compress(p);
      },
      total,
      ms,
    );
    const tsDecompress = mbPerSecond(
      () => {
        for (let i = 0; i < pages.length; i++) {
          decompressBlock(tsBlocks[i], 0, tsBlocks[i].length, outputs[i], 0, pages[i].length);
        }
      },
      total,
      ms,
    );
    const wasmDecompress = mbPerSecond(
      () => {
        for (const b of wasmBlocks) wasm.decompress(b);
      },
      total,
      ms,
    );
    const sizes = `${name}: ${pages.length} pages, compressed size ratio sluice ` +
      `${ratio(tsBlocks, 0)} (WebAssembly and TypeScript alike), lz4-wasm ${ratio(wasmBlocks, 4)}`;
    const lz4Note = "lz4-wasm allocates each output (it has no call into a preallocated buffer)";
    results.push(
      result(
        `LZ4 compress, ${name} pages, 1 core`,
        "MB/s",
        sluiceCompress,
        tsCompress,
        "TypeScript reference",
        sizes,
      ),
      result(
        `LZ4 compress, ${name} pages, 1 core`,
        "MB/s",
        sluiceCompress,
        wasmCompress,
        "lz4-wasm (lz4_flex)",
        lz4Note,
      ),
      result(
        `LZ4 decompress, ${name} pages, 1 core`,
        "MB/s",
        sluiceDecompress,
        tsDecompress,
        "TypeScript reference",
      ),
      result(
        `LZ4 decompress, ${name} pages, 1 core`,
        "MB/s",
        sluiceDecompress,
        wasmDecompress,
        "lz4-wasm (lz4_flex)",
        lz4Note,
      ),
    );
  }
  return results;
}

if (import.meta.main) {
  console.log(formatTable(await run({ quick: Deno.args.includes("--quick") })));
}
