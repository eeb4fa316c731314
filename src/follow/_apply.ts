/**
 * One transaction on the output, by SQLite's pager protocol (sqlite.org/atomiccommit.html), so
 * that SQLite readers in other processes see the database before it or after it, never between:
 *
 * 1. SHARED then RESERVED (readers go on reading; the journal is not hot while RESERVED is held);
 * 2. the journal: the original of every page that changes or is cut off, sealed (two fsyncs);
 * 3. the position record (sidecar) naming the state before and after;
 * 4. PENDING (no new reader starts) then EXCLUSIVE once the last reader is done;
 * 5. the new pages, page 1's header updated as SQLite's pager does it (file change counter,
 *    version-valid-for, size in pages; file format 1/1, rollback journal), truncation, fsync;
 * 6. the journal deleted: the commit point; then the locks are released.
 *
 * A reader's page cache is invalidated by the new change counter, exactly as after a commit by
 * another SQLite connection.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import { lockPageNumber, pageChecksum } from "../ltx/mod.ts";
import { type LockedFile, retryBusy } from "../sqlite/mod.ts";
import { JOURNAL_MAGIC, JournalWriter } from "./_journal.ts";
import type { Stage } from "./_stage.ts";

/** Where the output stands: what the position record (sidecar) holds. */
export interface OutputState {
  /** The newest TXID applied. */
  txid: number;
  pageSize: number;
  /** Database size in pages. */
  pageCount: number;
  /** Page 1's file change counter (offset 24). */
  counter: number;
  /** XOR of `pageChecksum` over the output's bytes, every page but the lock page. */
  checksum: bigint;
  /** The same over the database as the replica has it (page 1 before the header update). */
  sourceChecksum: bigint;
  /** Page 1's bytes at {@linkcode PATCHED_OFFSETS} as the replica has them. */
  pageOneSource: Uint8Array;
}

/** Page 1 header bytes the follower sets: format versions, change counter, size, valid-for. */
export const PATCHED_OFFSETS: readonly number[] = [
  18,
  19,
  24,
  25,
  26,
  27,
  28,
  29,
  30,
  31,
  92,
  93,
  94,
  95,
];

/**
 * Turns page 1 as the replica has it (WAL mode) into the output's: rollback journal mode (file
 * format 1/1), change counter `counter`, size `pageCount` and version-valid-for = counter.
 * Returns the replaced bytes (what the replica had).
 */
export function patchPageOne(page: Uint8Array, counter: number, pageCount: number): Uint8Array {
  const original = Uint8Array.from(PATCHED_OFFSETS, (offset) => page[offset]);
  const view = new DataView(page.buffer, page.byteOffset, page.byteLength);
  page[18] = 1;
  page[19] = 1;
  view.setUint32(24, counter >>> 0);
  view.setUint32(28, pageCount);
  view.setUint32(92, counter >>> 0);
  return original;
}

/** Page 1 with the replica's bytes put back at {@linkcode PATCHED_OFFSETS}. */
export function unpatchPageOne(page: Uint8Array, source: Uint8Array): Uint8Array {
  const copy = page.slice();
  PATCHED_OFFSETS.forEach((offset, i) => copy[offset] = source[i]);
  return copy;
}

/** The stage does not describe a whole database on top of the output. */
export class ApplyError extends Error {
  /** Builds an error naming the output and the reason. */
  constructor(message: string) {
    super(message);
    this.name = "ApplyError";
  }
}

/** Options of {@linkcode applyStage}. */
export interface ApplyOptions {
  /** The output, opened by the caller; the locks are taken and released here. */
  file: LockedFile;
  /** The output's `-journal` path. */
  journalPath: string;
  /** The state before. */
  state: OutputState;
  /** The TXID reached once the stage is applied. */
  txid: number;
  /** Persists the state pair (before, after) ahead of the commit point. */
  record(before: OutputState, after: OutputState): Promise<void>;
  /** Checked on the new database's source checksum before anything is written (optional). */
  expectSourceChecksum?: bigint;
  /**
   * Aborts while waiting for the locks (the journal is discarded, the output is untouched).
   * Once the output is being written, the transaction is finished.
   */
  signal?: AbortSignal;
  /** How long PENDING is held while a reader keeps EXCLUSIVE out, before letting readers in. */
  pendingHoldMs?: number;
}

/** The source checksum after applying did not match what the replica file says. */
export class ChecksumMismatchError extends ApplyError {
  /** Builds the error with both values. */
  constructor(path: string, expected: bigint, actual: bigint) {
    super(
      `${path}: applying the replica's files would give database checksum ${hex(actual)}, the ` +
        `replica says ${hex(expected)}; the output is not on the replica's lineage`,
    );
    this.name = "ChecksumMismatchError";
  }
}

function hex(value: bigint): string {
  return value.toString(16).padStart(16, "0");
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Applies `stage` to the output as one transaction (see the module doc) and returns the new
 * state. Pages equal to the output's are neither journaled nor written (most of a re-restore). On an abort or an error before the output is written, the journal is removed and the
 * output is untouched; an error while writing rolls back through SQLite's own hot-journal
 * recovery.
 * @throws {ApplyError} when the stage is not a whole database on top of the output.
 * @throws {ChecksumMismatchError} when `expectSourceChecksum` does not match.
 * @throws the signal's reason when aborted before the output was written.
 */
export async function applyStage(stage: Stage, options: ApplyOptions): Promise<OutputState> {
  const { file, state, signal } = options;
  const pageSize = state.pageSize;
  if (stage.pageSize !== pageSize) {
    throw new ApplyError(
      `${file.path}: the replica's page size is now ${stage.pageSize}, the output's ` +
        `${pageSize}; remove the output and start the follower again`,
    );
  }
  const oldSize = state.pageCount;
  const newSize = stage.commit;
  const lockPage = lockPageNumber(pageSize);
  const staged = new Set(stage.pgnos);
  for (let pgno = oldSize + 1; pgno <= newSize; pgno++) {
    if (pgno !== lockPage && !staged.has(pgno)) {
      throw new ApplyError(
        `${file.path}: the database grows to ${newSize} pages but page ${pgno} is not in the ` +
          `replica's files; the replica is incomplete`,
      );
    }
  }

  await acquire(file, "reserved", signal);
  let journal: JournalWriter | undefined;
  let writing = false;
  try {
    journal = await JournalWriter.create(options.journalPath, pageSize, oldSize);
    const old = new Uint8Array(pageSize);
    const next = new Uint8Array(pageSize);
    let checksum = state.checksum;
    const touched: number[] = [];

    // Page 1 always changes (the header), and is kept in memory.
    if ((await file.readAt(old, 0)) !== pageSize) {
      throw new ApplyError(`${file.path}: shorter than one page`);
    }
    const counter = (new DataView(old.buffer).getUint32(24) + 1) >>> 0;
    const pageOne = new Uint8Array(pageSize);
    let pageOneSource = state.pageOneSource;
    if (staged.has(1)) {
      await stage.read(1, pageOne);
      pageOneSource = patchPageOne(pageOne, counter, newSize);
    } else {
      pageOne.set(old);
      patchPageOne(pageOne, counter, newSize);
    }
    await journal.add(1, old);
    checksum ^= pageChecksum(1, old) ^ pageChecksum(1, pageOne);
    touched.push(1);

    for (const pgno of stage.pgnos) {
      if (pgno === 1 || pgno > newSize || pgno === lockPage) continue;
      signal?.throwIfAborted();
      await stage.read(pgno, next);
      if (pgno <= oldSize) {
        await readPage(file, pgno, old);
        if (equalBytes(old, next)) continue;
        await journal.add(pgno, old);
        checksum ^= pageChecksum(pgno, old);
      }
      checksum ^= pageChecksum(pgno, next);
      touched.push(pgno);
    }
    for (let pgno = newSize + 1; pgno <= oldSize; pgno++) {
      if (pgno === lockPage) continue;
      await readPage(file, pgno, old);
      await journal.add(pgno, old);
      checksum ^= pageChecksum(pgno, old);
    }
    const sourceChecksum = checksum ^ pageChecksum(1, pageOne) ^
      pageChecksum(1, unpatchPageOne(pageOne, pageOneSource));
    if (
      options.expectSourceChecksum !== undefined &&
      (options.expectSourceChecksum | CHECKSUM_BIT) !== (sourceChecksum | CHECKSUM_BIT)
    ) {
      throw new ChecksumMismatchError(file.path, options.expectSourceChecksum, sourceChecksum);
    }
    await journal.seal();
    const after: OutputState = {
      txid: options.txid,
      pageSize,
      pageCount: newSize,
      counter,
      checksum,
      sourceChecksum,
      pageOneSource,
    };
    await options.record(state, after);

    await acquireExclusive(file, signal, options.pendingHoldMs ?? PENDING_HOLD_MS);
    writing = true;
    await writePages(file, stage, touched, pageOne);
    if (newSize < oldSize) file.truncate(newSize * pageSize);
    await file.sync();
    await journal.remove(); // the commit point
    journal = undefined;
    return after;
  } catch (err) {
    if (journal && !writing) await journal.remove().catch(() => {});
    journal?.close();
    if (writing) {
      // The output is half-written under a sealed journal: let SQLite roll it back.
      file.unlock();
      await recoverHotJournal(file.path).catch(() => {});
    }
    throw err;
  } finally {
    file.unlock();
  }
}

const CHECKSUM_BIT = 0x8000000000000000n;

/** PENDING held this long without EXCLUSIVE: readers are let in for a moment. */
export const PENDING_HOLD_MS = 1000;
/** How long readers are let in after a PENDING hold timed out. */
const PENDING_BREAK_MS = 200;

/** Waits (asynchronously) for `level`, retrying every few milliseconds. */
async function acquire(file: LockedFile, level: "reserved", signal?: AbortSignal): Promise<void> {
  for (let delay = 1; !file.tryLock(level); delay = Math.min(delay * 2, 20)) {
    signal?.throwIfAborted();
    await sleep(delay);
  }
}

/**
 * PENDING, then EXCLUSIVE once the readers that already started are done. A reader holding a
 * long read transaction delays this; so that it does not starve every other reader (they
 * cannot start while PENDING is held and give up after their busy timeout), PENDING is let go
 * for a moment after {@linkcode PENDING_HOLD_MS}.
 */
async function acquireExclusive(
  file: LockedFile,
  signal: AbortSignal | undefined,
  holdMs: number,
): Promise<void> {
  for (;;) {
    signal?.throwIfAborted();
    if (!file.tryLock("pending")) {
      await sleep(1);
      continue;
    }
    const since = performance.now();
    for (let delay = 1;; delay = Math.min(delay * 2, 10)) {
      if (file.tryLock("exclusive")) return;
      if (signal?.aborted || performance.now() - since > holdMs) break;
      await sleep(delay);
    }
    file.releasePending();
    signal?.throwIfAborted();
    await sleep(PENDING_BREAK_MS);
  }
}

async function readPage(file: LockedFile, pgno: number, into: Uint8Array): Promise<void> {
  const n = await file.readAt(into, (pgno - 1) * into.length);
  if (n < into.length) into.fill(0, n);
}

/** Writes the touched pages, coalescing runs of consecutive pages into one write. */
async function writePages(
  file: LockedFile,
  stage: Stage,
  touched: number[],
  pageOne: Uint8Array,
): Promise<void> {
  const pageSize = stage.pageSize;
  const run = new Uint8Array(Math.max(1, Math.floor((1 << 20) / pageSize)) * pageSize);
  let runStart = 0;
  let runPages = 0;
  const flush = async () => {
    if (runPages === 0) return;
    await file.writeAt(run.subarray(0, runPages * pageSize), (runStart - 1) * pageSize);
    runPages = 0;
  };
  for (const pgno of touched) {
    if (runPages > 0 && (pgno !== runStart + runPages || (runPages + 1) * pageSize > run.length)) {
      await flush();
    }
    if (runPages === 0) runStart = pgno;
    const into = run.subarray(runPages * pageSize, (runPages + 1) * pageSize);
    if (pgno === 1) into.set(pageOne);
    else await stage.read(pgno, into);
    runPages++;
  }
  await flush();
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Rolls back a hot journal left by a follower that died mid-application, through SQLite itself
 * (a read-write connection notices the journal and plays it back). A journal whose header was
 * never sealed (it starts with zeros) is simply deleted: the output was not written under it.
 * Call it while this process holds no lock on the output.
 * @returns whether a journal was found.
 */
export async function recoverHotJournal(path: string): Promise<boolean> {
  const journalPath = `${path}-journal`;
  let head: Uint8Array;
  try {
    const file = await Deno.open(journalPath, { read: true });
    try {
      head = new Uint8Array(JOURNAL_MAGIC.length);
      await file.read(head);
    } finally {
      file.close();
    }
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
  if (!equalBytes(head, JOURNAL_MAGIC)) {
    await Deno.remove(journalPath).catch(() => {});
    return true;
  }
  const db = new DatabaseSync(path);
  try {
    await retryBusy(() => db.prepare("SELECT count(*) FROM sqlite_schema").get(), {
      timeoutMs: 60_000,
    });
  } finally {
    db.close();
  }
  return true;
}
