/**
 * Where the next sync starts reading the WAL: the decision table of FORMAT.md §4.3.1.
 *
 * Kept apart from {@linkcode DB} as a pure function of what was observed, so every row of
 * the table is unit-testable without a live database.
 *
 * @module
 */

/** The persisted cursor: the header of the newest local L0 file, plus what only memory knows. */
export interface WALCursor {
  /** TXID of the newest L0 file. */
  txid: number;
  /** WAL offset where that file's frames start. */
  walOffset: number;
  /** Bytes of WAL that file covers. */
  walSize: number;
  /** WAL salts at the time. */
  salt1: number;
  salt2: number;
  /** Database size in pages after that file. */
  commit: number;
  /**
   * In memory only: the WAL was emptied (TRUNCATE) after this cursor had read all of it, so the
   * next WAL generation, whatever its salts, continues from offset 32 with nothing missed.
   */
  walEmptiedAfterSync?: boolean;
}

/** What the sync observed about the WAL right now. */
export interface WALObservation {
  /** Current size of the `-wal` file in bytes. */
  walFileSize: number;
  /** Salts of the current WAL header, or undefined when there is no valid header. */
  headerSalts?: { salt1: number; salt2: number };
  /** Whether the previous sync ended exactly at the end of the WAL file. */
  syncedToWALEnd: boolean;
  /** Bytes of one frame: 24 + page size. */
  frameSize: number;
}

/** The decision: read from `offset` expecting `salts`, or write a full snapshot. */
export type SyncStart =
  | { kind: "snapshot"; reason: string }
  | { kind: "idle" }
  | { kind: "incremental"; offset: number; salt1: number; salt2: number }
  | { kind: "check-last-frame"; offset: number };

/**
 * Decides where the next sync starts, before any frame is read (FORMAT.md §4.3.1). The last row
 * of the table ("last page match") needs a frame read, so it is returned as
 * `check-last-frame` for the caller to settle with {@linkcode afterLastFrameCheck}.
 */
export function decideSyncStart(cursor: WALCursor | undefined, seen: WALObservation): SyncStart {
  if (!cursor) return { kind: "snapshot", reason: "no local position" };
  if (cursor.walEmptiedAfterSync) {
    if (!seen.headerSalts) return { kind: "idle" };
    const { salt1, salt2 } = seen.headerSalts;
    return { kind: "incremental", offset: 32, salt1, salt2 };
  }
  const offset = cursor.walOffset + cursor.walSize;
  if (offset > seen.walFileSize) {
    // We had read the whole WAL and a TRUNCATE checkpoint then emptied it: nothing was missed.
    if (seen.syncedToWALEnd) {
      if (!seen.headerSalts) return { kind: "idle" };
      const { salt1, salt2 } = seen.headerSalts;
      return { kind: "incremental", offset: 32, salt1, salt2 };
    }
    return { kind: "snapshot", reason: "wal truncated by another process" };
  }
  const sameSalts = seen.headerSalts !== undefined &&
    seen.headerSalts.salt1 === cursor.salt1 && seen.headerSalts.salt2 === cursor.salt2;
  if (offset <= 32 || offset - seen.frameSize === 32) {
    return sameSalts
      ? { kind: "incremental", offset, salt1: cursor.salt1, salt2: cursor.salt2 }
      : { kind: "snapshot", reason: "wal restarted with unknown frames" };
  }
  return { kind: "check-last-frame", offset };
}

/** What the caller found when it compared the frame before the cursor with the L0 file. */
export interface LastFrameCheck {
  /** The frame at `offset - frameSize` carries the cursor's salts and the same page. */
  matches: boolean;
  /**
   * Salts of every valid frame from offset 32 up to (not including) the first frame that
   * still carries the cursor's salts; only needed when the header salts changed.
   */
  saltsSinceRestart?: Array<{ salt1: number; salt2: number }>;
  /**
   * A frame of the cursor's generation lies at the cursor's end offset: the old WAL grew past
   * what was synced before it restarted, and those frames may have been checkpointed into the
   * database. Only needed when the header salts changed.
   */
  oldFramesAfterCursor?: boolean;
}

/** Finishes the "last page match" row of FORMAT.md §4.3.1. */
export function afterLastFrameCheck(
  cursor: WALCursor,
  seen: WALObservation,
  offset: number,
  check: LastFrameCheck,
): SyncStart {
  if (!check.matches) return { kind: "snapshot", reason: "wal overwritten by another process" };
  const header = seen.headerSalts;
  if (!header) return { kind: "snapshot", reason: "wal header missing" };
  if (header.salt1 === cursor.salt1 && header.salt2 === cursor.salt2) {
    return { kind: "incremental", offset, salt1: cursor.salt1, salt2: cursor.salt2 };
  }
  // The WAL restarted after a checkpoint. SQLite adds one to salt-1 at each restart: any other
  // step means a generation came and went unseen (its frames may only be in the database now).
  if (header.salt1 !== ((cursor.salt1 + 1) >>> 0)) {
    return { kind: "snapshot", reason: "wal restarted more than once since the last sync" };
  }
  // Frames of the old generation beyond the cursor were
  // committed while we were not looking and may now be in the database only: snapshot.
  if (check.oldFramesAfterCursor) {
    return { kind: "snapshot", reason: "wal restarted after frames that were never synced" };
  }
  // Safe only if every frame before the old ones carries the new salts: any third generation
  // means a checkpoint we did not see (frames were missed).
  for (const salts of check.saltsSinceRestart ?? []) {
    if (salts.salt1 !== header.salt1 || salts.salt2 !== header.salt2) {
      return { kind: "snapshot", reason: "wal restarted more than once since the last sync" };
    }
  }
  return { kind: "incremental", offset: 32, salt1: header.salt1, salt2: header.salt2 };
}

/** What a TRUNCATE checkpoint that held the write lock for its last sync left behind. */
export interface TruncateObservation {
  /** The sync under the write lock reached the end of the WAL. */
  syncedToEnd: boolean;
  /** Salts of the WAL header read under the write lock; undefined when there was none. */
  locked?: { salt1: number; salt2: number };
  /**
   * What the checkpoint worker reported; undefined when the outcome is unknown (the lock had
   * expired, the worker failed, or the checkpoint was never run). `dataVersionAfter` was read
   * in a read transaction the worker began right after the checkpoint and kept until sluice's
   * own was back: begun on the emptied WAL, it blocks every backfill, so the WAL cannot
   * restart again in between.
   */
  checkpoint?: { busy: number; dataVersionLocked: number; dataVersionAfter: number };
  /**
   * Salts of the WAL header after the checkpoint, read once sluice's read transaction was
   * begun again and a write made sure the WAL has a header; undefined when it has none.
   */
  after?: { salt1: number; salt2: number };
}

/** Whether the next sync continues in the new WAL generation, needs a snapshot, or neither. */
export type TruncateDecision =
  | { kind: "continue" }
  | { kind: "snapshot"; reason: string }
  | { kind: "not-restarted" };

/**
 * Decides what follows a TRUNCATE checkpoint (FORMAT.md §4.4, RELIABILITY F11). The WAL
 * restarted when its salts changed. Continuing from offset 32 of the new generation is safe
 * only when every frame the checkpoint discarded had been synced: the sync under the lock
 * reached the end of the committed WAL, the checkpoint was not busy, and no connection
 * committed after the lock was given up (`data_version` unchanged on the worker's connection:
 * such a commit went into the old WAL, to be backfilled unseen, or into the new one). The
 * salts themselves say nothing more: after a TRUNCATE by another connection, the next writer
 * starts the WAL with random salts (wal.c randomizes them when its own connection never
 * restarted the WAL), not salt-1 + 1. Anything else that restarted the WAL means a snapshot.
 */
export function decideAfterTruncate(seen: TruncateObservation): TruncateDecision {
  const { locked, after, checkpoint } = seen;
  if (locked && after && locked.salt1 === after.salt1 && locked.salt2 === after.salt2) {
    return { kind: "not-restarted" };
  }
  const snapshot = (reason: string): TruncateDecision => ({ kind: "snapshot", reason });
  if (!checkpoint) return snapshot("checkpoint boundary (TRUNCATE outcome unknown)");
  if (checkpoint.busy !== 0) return snapshot("checkpoint boundary (busy TRUNCATE, WAL restarted)");
  if (!seen.syncedToEnd) return snapshot("checkpoint boundary (TRUNCATE before the WAL's end)");
  if (checkpoint.dataVersionAfter !== checkpoint.dataVersionLocked) {
    return snapshot("checkpoint boundary (TRUNCATE, a commit slipped in)");
  }
  if (!locked || !after) return snapshot("checkpoint boundary (TRUNCATE, no WAL header)");
  return { kind: "continue" };
}
