/**
 * LTX codec benchmark: CRC-64/GO-ISO, and LTX encode and decode of a whole snapshot, in MB/s of
 * page data per core (one thread).
 *
 *   deno run -A scripts/bench/codec.ts [--mb=32] [--json]
 *
 * Pages come from a generated SQLite database of typical rows (4 KiB pages, about half
 * compressible, like real tables and indexes). Encode writes to a discarding sink in both page
 * encodings; decode reads the encoded bytes back through a stream with full verification.
 * Runs in about 15 s.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import { crc64, Decoder, Encoder, type Header, type PageEncoding } from "../../src/ltx/mod.ts";

const args = Object.fromEntries(
  Deno.args.map((a) => a.replace(/^--/, "").split("=")).map(([k, v]) => [k, v ?? "true"]),
);
const TARGET_MB = Number(args.mb ?? 32);
const PAGE_SIZE = 4096;

/** Database pages of a table with text, numbers and JSON plus an index. */
async function databasePages(): Promise<Uint8Array> {
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

const db = await databasePages();
const mb = db.length / 1e6;
const results: Record<string, number> = {};

// CRC-64 over the database in 4 KiB slices (as the codec feeds it) and in one call.
for (const [label, slice] of [["crc64 4K pages", PAGE_SIZE], ["crc64 whole", db.length]] as const) {
  crc64(db.subarray(0, PAGE_SIZE)); // warm up
  const start = performance.now();
  let rounds = 0;
  while (performance.now() - start < 1500) {
    for (let at = 0; at < db.length; at += slice) crc64(db.subarray(at, at + slice));
    rounds++;
  }
  results[label] = (mb * rounds) / ((performance.now() - start) / 1000);
}

for (const encoding of ["frame", "block"] as const) {
  await encode(db.subarray(0, 256 * PAGE_SIZE), encoding); // warm up
  const encoded = await encode(db, encoding);
  results[`encode ${encoding}`] = mb / encoded.seconds;
  results[`ratio ${encoding}`] = encoded.size / db.length;
  await decode(encoded.chunks);
  const decoded = await decode(encoded.chunks);
  results[`decode ${encoding}`] = mb / decoded.seconds;
}

if (args.json) {
  console.log(JSON.stringify({ databaseMB: mb, ...results }));
} else {
  console.log(`database: ${mb.toFixed(1)} MB of ${PAGE_SIZE}-byte pages (generated rows)`);
  for (const [label, value] of Object.entries(results)) {
    console.log(
      label.startsWith("ratio")
        ? `${label.padEnd(16)} ${value.toFixed(3)} (file size / page bytes)`
        : `${label.padEnd(16)} ${value.toFixed(0).padStart(6)} MB/s`,
    );
  }
}
