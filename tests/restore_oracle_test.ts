/**
 * sluice-written replicas restored by Go Litestream itself (tests/_oracle.ts): the bytes must
 * equal both the source database and sluice's own restore, which also proves that both pick
 * the same plan files.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { compact, Decoder, type PageEncoding } from "../src/ltx/mod.ts";
import { FileReplicaClient } from "../src/replica/mod.ts";
import { restore } from "../src/restore/mod.ts";
import { litestreamRestore, oracleAvailable } from "./_oracle.ts";
import {
  buildStates,
  changedPages,
  planNames,
  snapshotPages,
  withTempDir,
  writeLTX,
} from "./_restore_helpers.ts";

const ignore = !oracleAvailable();

/** Compacts level-0 files `minTXID…maxTXID` into one file at `level`, like the compactor. */
async function compactInto(
  client: FileReplicaClient,
  level: number,
  minTXID: number,
  maxTXID: number,
  timestamp: number,
  encoding: PageEncoding,
): Promise<void> {
  const inputs: Decoder[] = [];
  for (let txid = minTXID; txid <= maxTXID; txid++) {
    const stream = await client.openLTXFile({ level: 0, minTXID: txid, maxTXID: txid });
    inputs.push(new Decoder(stream, { name: `L0 ${txid}` }));
  }
  const pipe = new TransformStream<Uint8Array, Uint8Array>();
  const upload = client.writeLTXFile({ level, minTXID, maxTXID }, pipe.readable, timestamp);
  await compact(inputs, pipe.writable, { encoding });
  await upload;
}

for (const pageSize of [4096, 65536]) {
  for (const encoding of ["frame", "block"] as PageEncoding[]) {
    Deno.test({
      name: `oracle: Litestream restores a sluice replica (${
        pageSize / 1024
      } KiB, ${encoding}) as sluice does`,
      ignore,
      fn: async () => {
        await withTempDir(async (dir) => {
          const images = buildStates(join(dir, "source.db"), pageSize);
          const replicaDir = join(dir, "replica");
          const client = new FileReplicaClient(replicaDir);
          const pages = (i: number) => images[i].byteLength / pageSize;
          const ts = Date.now() - 60_000;
          await writeLTX(
            client,
            0,
            { minTXID: 1, maxTXID: 1, pageSize, commit: pages(0), timestamp: ts + 1 },
            snapshotPages(images[0], pageSize),
            { encoding },
          );
          for (let txid = 2; txid <= 4; txid++) {
            await writeLTX(
              client,
              0,
              {
                minTXID: txid,
                maxTXID: txid,
                pageSize,
                commit: pages(txid - 1),
                timestamp: ts + txid,
              },
              changedPages(images[txid - 2], images[txid - 1], pageSize),
              { encoding },
            );
          }
          await writeLTX(
            client,
            9,
            { minTXID: 1, maxTXID: 2, pageSize, commit: pages(1), timestamp: ts + 2 },
            snapshotPages(images[1], pageSize),
            { encoding },
          );
          // L1 1-3 ties L0 3-3 on maxTXID and wins on the smaller minTXID; it spans the shrink.
          await compactInto(client, 1, 1, 3, ts + 3, encoding);

          const ours = join(dir, "sluice.db");
          const result = await restore(client, { outputPath: ours });
          assert.deepEqual(planNames(result.files), ["L9:1-2", "L1:1-3", "L0:4-4"]);
          const theirs = join(dir, "litestream.db");
          const oracle = await litestreamRestore(replicaDir, theirs);
          assert.equal(oracle.txid, 4);
          const expected = images[3];
          assert.deepEqual(await Deno.readFile(ours), expected);
          assert.deepEqual(await Deno.readFile(theirs), expected);
        });
      },
    });
  }
}

/**
 * A database whose rows are one page each; every replica file rewrites "its" row with its own
 * label, so the restored rows tell exactly which files the plan applied.
 */
function markedDatabase(path: string, rows: number): Uint8Array {
  const db = new DatabaseSync(path);
  db.exec(
    "PRAGMA page_size = 4096; PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)",
  );
  const insert = db.prepare("INSERT INTO t (id, v) VALUES (?, ?)");
  for (let id = 1; id <= rows; id++) insert.run(id, label(`row ${id}`));
  db.close();
  return Deno.readFileSync(path);
}

const LABEL_SIZE = 3000;

/** 3000 bytes: the text, padded; unique per text, so it can be found in a page. */
function label(text: string): Uint8Array {
  const bytes = new Uint8Array(LABEL_SIZE).fill(0x2e);
  bytes.set(new TextEncoder().encode(`<${text}>`));
  return bytes;
}

/**
 * The image with row `id`'s label replaced by `text`, and the page that changed. Only live
 * cells of table leaf pages are searched: freed space may still hold stale copies of a row.
 */
function relabel(image: Uint8Array, id: number, text: string, pageSize: number) {
  const needle = new TextEncoder().encode(`<row ${id}>`);
  const view = new DataView(image.buffer, image.byteOffset, image.byteLength);
  for (let pgno = 1; pgno * pageSize <= image.byteLength; pgno++) {
    const base = (pgno - 1) * pageSize;
    const header = base + (pgno === 1 ? 100 : 0);
    if (image[header] !== 0x0d) continue; // not a table leaf
    for (let cell = 0; cell < view.getUint16(header + 3); cell++) {
      const start = base + view.getUint16(header + 8 + 2 * cell);
      // The blob follows a few bytes of cell and record header.
      for (let i = start; i < start + 16; i++) {
        if (needle.every((byte, j) => image[i + j] === byte)) {
          const data = image.slice(base, base + pageSize);
          data.set(label(text), i - base);
          return { pgno, data };
        }
      }
    }
  }
  throw new Error(`row ${id} not found in a live cell`);
}

function labels(path: string): string[] {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    return db.prepare("SELECT v FROM t ORDER BY id").all().map((row) => {
      const text = new TextDecoder().decode(row.v as Uint8Array);
      return text.slice(1, text.indexOf(">"));
    });
  } finally {
    db.close();
  }
}

const SCENARIOS: { name: string; files: [number, number, number][]; plan: string[] }[] = [
  {
    name: "multi-level",
    files: [
      [9, 1, 10],
      [2, 1, 12],
      [2, 13, 24],
      [1, 11, 14],
      [1, 15, 18],
      [1, 19, 22],
      [1, 23, 26],
      ...[21, 22, 23, 24, 25, 26, 27, 28, 29, 30].map((t): [number, number, number] => [0, t, t]),
    ],
    plan: [
      "L9:1-10",
      "L1:11-14",
      "L2:13-24",
      "L1:23-26",
      "L0:27-27",
      "L0:28-28",
      "L0:29-29",
      "L0:30-30",
    ],
  },
  {
    name: "equal ranges",
    files: [[9, 1, 5], [1, 6, 10], [2, 6, 10], [0, 6, 6]],
    plan: ["L9:1-5", "L2:6-10"],
  },
  {
    name: "larger max",
    files: [[9, 1, 5], [3, 6, 9], [1, 6, 10], [3, 10, 10]],
    plan: ["L9:1-5", "L1:6-10"],
  },
  { name: "smaller min", files: [[9, 1, 5], [1, 3, 10], [2, 6, 10]], plan: ["L9:1-5", "L1:3-10"] },
  {
    name: "no snapshot",
    files: [[1, 1, 4], [1, 5, 8], [0, 3, 3], [0, 4, 4], [0, 5, 5], [0, 9, 9]],
    plan: ["L1:1-4", "L1:5-8", "L0:9-9"],
  },
];

Deno.test({
  name: "oracle: Litestream applies the same plan files as sluice (tie-breaks, levels)",
  ignore,
  fn: async (t) => {
    for (const scenario of SCENARIOS) {
      await t.step(scenario.name, async () => {
        await withTempDir(async (dir) => {
          const pageSize = 4096;
          const base = markedDatabase(join(dir, "base.db"), scenario.files.length);
          const commit = base.byteLength / pageSize;
          const replicaDir = join(dir, "replica");
          const client = new FileReplicaClient(replicaDir);
          const ts = Date.now() - 60_000;
          for (const [i, [level, minTXID, maxTXID]] of scenario.files.entries()) {
            const name = `L${level}:${minTXID}-${maxTXID}`;
            const changed = relabel(base, i + 1, name, pageSize);
            const pages = minTXID === 1
              ? snapshotPages(base, pageSize).map((p) => p.pgno === changed.pgno ? changed : p)
              : [changed];
            await writeLTX(
              client,
              level,
              { minTXID, maxTXID, pageSize, commit, timestamp: ts + maxTXID },
              pages,
              { encoding: "block" },
            );
          }

          const ours = join(dir, "sluice.db");
          const result = await restore(client, { outputPath: ours, integrityCheck: "quick" });
          assert.deepEqual(planNames(result.files), scenario.plan);
          const applied = labels(ours).filter((text) => !text.startsWith("row "));
          assert.deepEqual(applied.sort(), [...scenario.plan].sort());

          const theirs = join(dir, "litestream.db");
          await litestreamRestore(replicaDir, theirs);
          assert.deepEqual(labels(theirs), labels(ours));
          assert.deepEqual(await Deno.readFile(theirs), await Deno.readFile(ours));
        });
      });
    }
  },
});
