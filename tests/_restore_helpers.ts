/**
 * Builders shared by the restore tests: real LTX files written with the ltx Encoder into a
 * real FileReplicaClient, and page sets cut from database images.
 *
 * @module
 */

import {
  Encoder,
  type Header,
  HEADER_FLAG_NO_CHECKSUM,
  lockPageNumber,
  type Page,
  type PageEncoding,
} from "../src/ltx/mod.ts";
import type { LTXFileInfo, ReplicaClient } from "../src/replica/mod.ts";
import { DatabaseSync } from "node:sqlite";

/** Header fields a test chooses; the rest default to Litestream's values. */
export interface HeaderFields {
  minTXID: number;
  maxTXID: number;
  pageSize: number;
  commit: number;
  timestamp?: number;
  flags?: number;
  preApplyChecksum?: bigint;
}

/** A complete header with Litestream defaults (NoChecksum, zero WAL fields). */
export function makeHeader(fields: HeaderFields): Header {
  return {
    flags: fields.flags ?? HEADER_FLAG_NO_CHECKSUM,
    pageSize: fields.pageSize,
    commit: fields.commit,
    minTXID: fields.minTXID,
    maxTXID: fields.maxTXID,
    timestamp: fields.timestamp ?? Date.now(),
    preApplyChecksum: fields.preApplyChecksum ?? 0n,
    walOffset: 0,
    walSize: 0,
    walSalt1: 0,
    walSalt2: 0,
    nodeID: 0n,
  };
}

/** Options of {@linkcode writeLTX}. */
export interface WriteLTXOptions {
  encoding?: PageEncoding;
  postApplyChecksum?: bigint;
}

/**
 * Encodes one LTX file straight into the replica (streamed, so a 1 GiB snapshot is never held
 * in memory) and returns its listing entry.
 */
export async function writeLTX(
  client: ReplicaClient,
  level: number,
  fields: HeaderFields,
  pages: Iterable<Page> | AsyncIterable<Page>,
  options: WriteLTXOptions = {},
): Promise<LTXFileInfo> {
  const header = makeHeader(fields);
  const pipe = new TransformStream<Uint8Array, Uint8Array>();
  const upload = client.writeLTXFile(
    { level, minTXID: header.minTXID, maxTXID: header.maxTXID },
    pipe.readable,
    header.timestamp,
  );
  const encoder = new Encoder(pipe.writable, header, { encoding: options.encoding });
  try {
    for await (const page of pages) await encoder.encodePage(page.pgno, page.data);
    await encoder.close(options.postApplyChecksum);
  } catch (err) {
    await encoder.abort(err);
    await upload.catch(() => {});
    throw err;
  }
  return await upload;
}

/** Encodes one LTX file into memory. */
export async function encodeLTX(
  fields: HeaderFields,
  pages: Iterable<Page>,
  options: WriteLTXOptions = {},
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const sink = new WritableStream<Uint8Array>({
    write: (chunk) => void chunks.push(chunk.slice()),
  });
  const encoder = new Encoder(sink, makeHeader(fields), { encoding: options.encoding });
  for (const page of pages) await encoder.encodePage(page.pgno, page.data);
  await encoder.close(options.postApplyChecksum);
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

/** Every page of a database image except the lock page: a snapshot's page set. */
export function snapshotPages(image: Uint8Array, pageSize: number): Page[] {
  const lock = lockPageNumber(pageSize);
  const pages: Page[] = [];
  for (let pgno = 1; pgno * pageSize <= image.byteLength; pgno++) {
    if (pgno === lock) continue;
    pages.push({ pgno, data: image.subarray((pgno - 1) * pageSize, pgno * pageSize) });
  }
  return pages;
}

/**
 * The pages of `after` that differ from `before`, plus every page past `before`'s end (the
 * growth pages Litestream sends): an incremental's page set.
 */
export function changedPages(before: Uint8Array, after: Uint8Array, pageSize: number): Page[] {
  const lock = lockPageNumber(pageSize);
  const pages: Page[] = [];
  for (let pgno = 1; pgno * pageSize <= after.byteLength; pgno++) {
    if (pgno === lock) continue;
    const start = (pgno - 1) * pageSize;
    const data = after.subarray(start, start + pageSize);
    if (
      start + pageSize <= before.byteLength &&
      equalBytes(data, before.subarray(start, start + pageSize))
    ) {
      continue;
    }
    pages.push({ pgno, data });
  }
  return pages;
}

/** Byte equality without a per-byte assertion message flood. */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A page of `pageSize` bytes whose content identifies `pgno` and `version`. */
export function patternPage(pageSize: number, pgno: number, version = 0): Uint8Array {
  const data = new Uint8Array(pageSize);
  const view = new DataView(data.buffer);
  view.setUint32(0, pgno);
  view.setUint32(4, version);
  for (let i = 8; i < pageSize; i += 64) data[i] = (pgno * 31 + version * 7 + i) & 0xff;
  return data;
}

/**
 * Four states of a real database: created, updated, shrunk by VACUUM, regrown. Each image is
 * the database file after close (WAL checkpointed into it, header still in WAL mode).
 */
export function buildStates(path: string, pageSize: number): Uint8Array[] {
  const steps = [
    `PRAGMA page_size = ${pageSize}; PRAGMA journal_mode = WAL;
     CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB, s TEXT);
     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
     INSERT INTO t (v, s) SELECT randomblob(700), printf('row %d', i) FROM n;`,
    `UPDATE t SET v = randomblob(900) WHERE id % 7 = 0;
     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
     INSERT INTO t (v, s) SELECT zeroblob(1500), 'compressible' FROM n;
     CREATE INDEX t_s ON t (s);`,
    `DELETE FROM t WHERE id > 60; VACUUM;`,
    `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 800)
     INSERT INTO t (v, s) SELECT randomblob(1200), printf('again %d', i) FROM n;`,
  ];
  const images: Uint8Array[] = [];
  for (const sql of steps) {
    const db = new DatabaseSync(path);
    db.exec(sql);
    db.close();
    images.push(Deno.readFileSync(path));
  }
  return images;
}

/** Lists a whole replica (all levels) as `level/min-max` strings, for assertions. */
export function planNames(files: LTXFileInfo[]): string[] {
  return files.map((f) => `L${f.level}:${f.minTXID}-${f.maxTXID}`);
}

/** Runs `fn` with a fresh temp dir that is removed afterwards. */
export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "sluice-restore-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Copies a directory tree (fixtures are never modified in place). */
export async function copyTree(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const entry of Deno.readDir(from)) {
    const source = `${from}/${entry.name}`;
    const target = `${to}/${entry.name}`;
    if (entry.isDirectory) {
      await copyTree(source, target);
    } else {
      await Deno.copyFile(source, target);
      const { mtime } = await Deno.stat(source);
      if (mtime) await Deno.utime(target, mtime, mtime);
    }
  }
}

/** Resolves a path under tests/fixtures (see tests/fixtures/README.md). */
export function fixture(path: string): string {
  return new URL(`./fixtures/${path}`, import.meta.url).pathname;
}

/**
 * Writes a database that grows without its new pages: TXID 1 holds pages 1 and 2 (Commit 2),
 * TXID 2 raises Commit to 4 but holds only page 4, so page 3 is in none of the files (pages of
 * 512 bytes, from {@linkcode patternPage}).
 */
export async function writeGrowthWithoutPage3(client: ReplicaClient): Promise<void> {
  const pageSize = 512;
  await writeLTX(client, 0, { minTXID: 1, maxTXID: 1, pageSize, commit: 2 }, [
    { pgno: 1, data: patternPage(pageSize, 1) },
    { pgno: 2, data: patternPage(pageSize, 2) },
  ]);
  await writeLTX(client, 0, { minTXID: 2, maxTXID: 2, pageSize, commit: 4 }, [
    { pgno: 4, data: patternPage(pageSize, 4) },
  ]);
}

/** Files next to `name` (`-wal`, `-shm`, `.tmp`, …) that a restore must not leave behind. */
export async function leftovers(dir: string, name: string): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.name !== name && entry.name.startsWith(name)) found.push(entry.name);
  }
  return found.sort();
}
