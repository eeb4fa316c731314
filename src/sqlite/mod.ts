/**
 * SQLite file formats and connection helpers: the WAL reader with Litestream's rules
 * (FORMAT.md §4.1), random-access reads on long-lived descriptors, the database header, and the
 * asynchronous busy retry that replaces `busy_timeout` (FORMAT.md §4.2).
 *
 * Imports nothing else from `src/`.
 *
 * @module
 */

export {
  parseFrameHeader,
  parseWALHeader,
  PrevFrameMismatchError,
  readFrameHeader,
  WAL_FRAME_HEADER_SIZE,
  WAL_HEADER_SIZE,
  walChecksum,
  WALError,
  type WALFrameHeader,
  type WALHeader,
} from "./wal.ts";
export { readWAL, type WALBytes, type WALReadOptions, type WALReadResult } from "./wal_reader.ts";
export { openRandomAccess, type RandomAccessFile, type RandomAccessFileHandle } from "./file.ts";
export {
  DATABASE_HEADER_SIZE,
  type DatabaseHeader,
  InvalidDatabaseError,
  isSQLiteHeader,
  parseDatabaseHeader,
  pendingBytePage,
} from "./database.ts";
export { isBusyError, retryBusy, type RetryOptions } from "./busy.ts";
export {
  checkpoint,
  type CheckpointMode,
  type CheckpointResult,
  type HeldWriteLock,
  lockForTruncate,
  stopIdleCheckpointWorker,
  type TruncateResult,
} from "./checkpoint.ts";
export { releaseFreedMemory } from "./memory.ts";
export {
  LockedFile,
  LockedFileError,
  lockedFilesAvailable,
  type LockLevel,
  PENDING_BYTE,
} from "./locked_file.ts";
