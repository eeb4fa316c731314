/**
 * LZ4 block codec benchmark: sluice's TypeScript codec (src/ltx/_lz4_block.ts) against the WASM
 * build of lz4_flex (npm:lz4-wasm-nodejs), on realistic SQLite pages and synthetic ones.
 *
 *   deno run -A scripts/bench/lz4.ts [--ms=400]
 *
 * Page sets: the fixture databases (4 KiB and 64 KiB pages), a freshly generated database of
 * typical rows with an index (4 KiB pages), text pages and random (incompressible) pages.
 * Prints MB/s of uncompressed bytes per core, and the compression ratio. Runs in about 15 s.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import * as wasm from "lz4-wasm-nodejs";
import { compressBlock, compressBound, decompressBlock } from "../../src/ltx/_lz4_block.ts";

const msArg = Deno.args.find((a) => a.startsWith("--ms="));
const MEASURE_MS = msArg ? Number(msArg.slice(5)) : 400;
const fixtures = new URL("../../../shared/fixtures/sqlite/", import.meta.url);

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

function textPages(count: number, pageSize: number): Uint8Array[] {
  const encoder = new TextEncoder();
  const pages: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    let text = "";
    while (text.length < pageSize) {
      text += `row ${i * 1000 + text.length} name=user${text.length % 97} ` +
        `email=u${text.length}@example.com; `;
    }
    pages.push(encoder.encode(text).slice(0, pageSize));
  }
  return pages;
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

function mbPerSecond(run: () => void, bytesPerRun: number): number {
  run(); // warm up
  let bytes = 0;
  const start = performance.now();
  while (performance.now() - start < MEASURE_MS) {
    run();
    bytes += bytesPerRun;
  }
  return bytes / ((performance.now() - start) / 1000) / 1e6;
}

const sets: [string, Uint8Array[]][] = [
  ["fixture 4K", [
    ...splitPages(await Deno.readFile(new URL("v1.db", fixtures)), 4096),
    ...splitPages(await Deno.readFile(new URL("v2.db", fixtures)), 4096),
  ]],
  ["generated 4K", await generatedDatabasePages()],
  ["fixture 64K", splitPages(await Deno.readFile(new URL("big.db", fixtures)), 65536)],
  ["text 4K", textPages(64, 4096)],
  ["random 4K", randomPages(64, 4096)],
  ["random 64K", randomPages(8, 65536)],
];

console.log(
  "page set       pages  ratio(ts/wasm)   compress MB/s ts / wasm   decompress MB/s ts / wasm",
);
for (const [name, pages] of sets) {
  const total = pages.reduce((n, p) => n + p.length, 0);
  const scratch = new Uint8Array(compressBound(65536));
  const tsBlocks = pages.map((p) => scratch.slice(0, compressBlock(p, scratch, 0)));
  const wasmBlocks = pages.map((p) => wasm.compress(p)); // 4-byte size prefix + block
  const outputs = pages.map((p) => new Uint8Array(p.length));
  // Cross-check: each side's blocks decode with sluice's decoder to the original page.
  for (const [i, page] of pages.entries()) {
    for (const block of [tsBlocks[i], wasmBlocks[i].subarray(4)]) {
      const end = decompressBlock(block, 0, block.length, outputs[i], 0, page.length);
      if (end !== page.length || outputs[i].some((b, k) => b !== page[k])) {
        throw new Error(`${name}: page ${i} does not round-trip`);
      }
    }
  }
  const ratio = (blocks: Uint8Array[], prefix: number) =>
    (blocks.reduce((n, b) => n + b.length - prefix, 0) / total).toFixed(3);
  const tsCompress = mbPerSecond(() => {
    for (const p of pages) compressBlock(p, scratch, 0);
  }, total);
  const wasmCompress = mbPerSecond(() => {
    for (const p of pages) wasm.compress(p);
  }, total);
  const tsDecompress = mbPerSecond(() => {
    for (let i = 0; i < pages.length; i++) {
      decompressBlock(tsBlocks[i], 0, tsBlocks[i].length, outputs[i], 0, pages[i].length);
    }
  }, total);
  const wasmDecompress = mbPerSecond(() => {
    for (const b of wasmBlocks) wasm.decompress(b);
  }, total);
  console.log(
    `${name.padEnd(14)} ${String(pages.length).padStart(5)}  ${ratio(tsBlocks, 0)}/${
      ratio(wasmBlocks, 4)
    }      ${tsCompress.toFixed(0).padStart(6)} / ${wasmCompress.toFixed(0).padStart(6)}` +
      `           ${tsDecompress.toFixed(0).padStart(6)} / ${
        wasmDecompress.toFixed(0).padStart(6)
      }`,
  );
}
