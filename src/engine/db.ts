/**
 * One replicated SQLite database: the connections that keep the WAL in place, the sync that
 * turns newly committed WAL frames into the next L0 LTX file in the meta directory, and the
 * checkpoints that keep the WAL bounded (FORMAT.md §4.2–§4.4).
 *
 * The newest local L0 file is the persisted cursor: its header records where in the WAL it
 * ended. There is no other position file, so a crash at any moment loses nothing: the next
 * sync resumes from the last L0 file that was completely written.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import {
  decodeHeader,
  Decoder,
  Encoder,
  formatTXID,
  type Header,
  HEADER_FLAG_NO_CHECKSUM,
  HEADER_SIZE,
  lockPageNumber,
  type PageEncoding,
} from "../ltx/mod.ts";
import {
  checkpoint,
  isBusyError,
  lockForTruncate,
  openRandomAccess,
  parseDatabaseHeader,
  parseFrameHeader,
  parseWALHeader,
  PrevFrameMismatchError,
  type RandomAccessFile,
  type RandomAccessFileHandle,
  readFrameHeader,
  readWAL,
  retryBusy,
  type TruncateResult,
  WAL_FRAME_HEADER_SIZE,
  WAL_HEADER_SIZE,
  type WALBytes,
  type WALHeader,
} from "../sqlite/mod.ts";
import { FileReplicaClient } from "../replica/mod.ts";
import type { LTXFileId, LTXFileInfo, ReplicaClient } from "../replica/mod.ts";
import {
  afterLastFrameCheck,
  decideAfterTruncate,
  decideSyncStart,
  type SyncStart,
  type WALCursor,
} from "./_wal_position.ts";
import { BufferPool } from "./_buffer_pool.ts";
import { cursorFrom, loadCursor } from "./_cursor.ts";
import { fileIdentity, markIdentityAdopted, readIdentity, writeIdentity } from "./_identity.ts";
import type { Logger } from "../log/mod.ts";
import { type ParkedState, statKey } from "./_park.ts";
import { ByteCollector, writeL0File } from "./_l0_file.ts";
import { statOrUndefined } from "./_local_stat.ts";
import { handOffPipe, imageEncoding, openEncoder } from "../pipeline/mod.ts";

/** Longest step of the clock file times come from (the kernel's tick), with a margin. */
const MTIME_TICK_MS = 20;

/** Tunables of one database; the defaults are Litestream's (FORMAT.md §4.5). */
export interface DBOptions {
  /** Directory for local L0 files (`<dir>/.<name>-sluice/` by default, chosen by the caller). */
  metaDir: string;
  /** LTX page encoding of the files this database writes. Default "frame". */
  encoding?: PageEncoding;
  /** PASSIVE checkpoint once the synced WAL reaches this many pages. Default 1000. */
  minCheckpointPageN?: number;
  /** Emergency TRUNCATE checkpoint at this many pages. Default 121359 (≈ 500 MB at 4 KiB). */
  truncatePageN?: number;
  /** PASSIVE checkpoint when data was synced and the DB file is older than this. Default 60 s. */
  checkpointInterval?: number;
  /** Total time to keep retrying a busy/locked operation before giving up. Default 1000 ms. */
  busyTimeout?: number;
  /** Most WAL bytes one sync reads before writing a file. Default 64 MiB. */
  maxSyncWALBytes?: number;
  /**
   * Report the database stalled when its WAL changed and no sync started from that state for
   * this long (ms). Default 30 s.
   */
  stallAfter?: number;
  /**
   * How {@linkcode DB.closeIdle} left this database when it was parked: when the file has not
   * been written since and the WAL is another one, every commit since is in the current WAL,
   * and the first sync continues from its start instead of taking a snapshot.
   */
  parked?: ParkedState;
  /** Structured logger; the database path is added to every line. */
  logger?: Logger;
}

/** Options of {@linkcode DB.sync}. */
export interface SyncOptions {
  /**
   * Whether the sync ends with the checkpoint its thresholds call for (default true). False
   * leaves it to {@linkcode DB.checkpointIfDue}, for a caller that ships the new file first:
   * a checkpoint can wait seconds for the application's write lock, and the file's upload
   * would wait with it.
   */
  checkpoint?: boolean;
}

/** What one sync did. */
export interface SyncResult {
  /** TXID of the L0 file written, or undefined when nothing was committed since the last one. */
  txid?: number;
  /** Whether the file was a full snapshot. */
  snapshot: boolean;
  /** Why a snapshot was taken. */
  reason?: string;
  /** Pages in the file. */
  pageCount: number;
  /** More committed WAL remains than one sync reads (`maxSyncWALBytes`): sync again. */
  more?: boolean;
  /**
   * Nothing was written and the WAL ends where the cursor does: not even an uncommitted
   * transaction is in progress (the scheduler opens no throttle window for such a sync).
   */
  idle?: boolean;
}

/** Counters exposed as metrics. */
export interface DBStats {
  syncs: number;
  syncErrors: number;
  checkpoints: number;
  checkpointErrors: number;
  /**
   * TRUNCATE checkpoints that restarted the WAL and left nothing unseen: the next sync
   * continued in the new WAL generation (RELIABILITY F11).
   */
  truncationsContinued: number;
  /** TRUNCATE checkpoints that restarted the WAL and were followed by a full snapshot. */
  truncationsSnapshotted: number;
  lastSyncAt?: Date;
  lastError?: string;
  /** When `lastError` happened (status output tells an old error from a current one). */
  lastErrorAt?: Date;
  /**
   * Set while the WAL has changed without any sync picking the change up for longer than
   * `stallAfter`: when that began. Changes are then not reaching the replica.
   */
  stalledSince?: Date;
}

/** A database file that is not usable for replication (missing, not SQLite, wrong mode). */
export class DatabaseOpenError extends Error {
  /** Builds an error; the message names the database path. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "DatabaseOpenError";
  }
}

/**
 * WAL bytes one sync reads at most (it stops at the first commit past this); a backlog is
 * synced in several. Small enough that a sync reads its WAL range in one go (see
 * {@linkcode MAX_SINGLE_WAL_READ_BYTES}); 64 MiB before, where a backlog's syncs read every
 * page twice.
 */
const DEFAULT_MAX_SYNC_WAL_BYTES = 8 << 20;
/**
 * Least time between two PASSIVE checkpoints for the page-count threshold. Syncs run every
 * few milliseconds under load, and a checkpoint after each one blocks the application's
 * writes each time (it halved an unthrottled writer's rate); the emergency threshold is not
 * spaced.
 */
const MIN_CHECKPOINT_SPACING_MS = 1000;

/** The WAL reads of every database's syncs reuse these (see _buffer_pool.ts). */
const WAL_READ_BUFFERS = new BufferPool();
/**
 * WAL bytes a checkpoint leaves to its sync under the application's write lock, at most: the
 * rest is synced before the lock is taken (a backlog of 60 MB held the lock for a second).
 */
const MAX_LOCKED_SYNC_BYTES = 1 << 20;
/** Syncs a checkpoint makes to get there before it gives up for this time. */
const MAX_CATCH_UP_SYNCS = 8;
/**
 * The checkpoint worker gives the write lock of a TRUNCATE up by itself after this long (ms):
 * a safety net only, the sync under it takes milliseconds. Below the busy timeouts
 * applications usually set (5 s for the writer in scripts/).
 */
const TRUNCATE_LOCK_EXPIRE_MS = 2000;
/**
 * Most WAL bytes a checkpoint (PASSIVE or TRUNCATE) syncs under the write lock; more
 * (committed while the lock was being taken) and it gives the lock up and waits for the next
 * turn.
 */
const MAX_TRUNCATE_LOCKED_SYNC_BYTES = 4 * MAX_LOCKED_SYNC_BYTES;
/**
 * Most WAL bytes a TRUNCATE checkpoint may have to copy itself after the PASSIVE one before it
 * was deferred: it holds off the application's writers meanwhile (64 MiB: a fraction of a
 * second at disk speed).
 */
const MAX_TRUNCATE_COPY_BYTES = 64 << 20;
const READ_CHUNK = 1 << 20;
/**
 * A sync keeps up to this many WAL bytes in memory (see `readWAL`'s `singleReadBytes`) and
 * takes its pages from there; past it, it reads the WAL twice (checksums, then the pages in
 * page order, a read per run of frames). At 600 commits/s of 64 KiB blobs, ~4 MB syncs
 * made ~700 such reads a second through FFI, 2.8 s of the main thread per minute in a CPU
 * profile (issue 15). Twice the most one sync reads, so a limited sync's last transaction fits.
 */
const MAX_SINGLE_WAL_READ_BYTES = 2 * DEFAULT_MAX_SYNC_WAL_BYTES;
/** L0 files up to this many page bytes are encoded in memory and written in one go. */
const SMALL_L0_BYTES = 4 << 20;
/** Litestream's helper tables: the sequence bumped to force WAL writes, and the lock table. */
const HELPER_TABLES_SQL =
  "CREATE TABLE IF NOT EXISTS _litestream_seq (id INTEGER PRIMARY KEY, seq INTEGER);" +
  "CREATE TABLE IF NOT EXISTS _litestream_lock (id INTEGER);";
/** Bumps the sequence: a write that forces a WAL frame (to create or restart the WAL). */
const BUMP_SEQ_SQL =
  "INSERT INTO _litestream_seq (id, seq) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET seq = seq + 1";

/**
 * One database under replication. Not safe for concurrent `sync()` calls: the
 * {@linkcode Store} serializes them (and `sync()` itself queues behind a running one).
 */
export class DB {
  /** Absolute path of the database file. */
  readonly path: string;
  /** Absolute path of its meta directory. */
  readonly metaDir: string;
  /** Local L0 store: the meta directory in the file replica layout. */
  readonly local: FileReplicaClient;
  /** Counters for metrics and status. */
  readonly stats: DBStats = {
    syncs: 0,
    syncErrors: 0,
    checkpoints: 0,
    checkpointErrors: 0,
    truncationsContinued: 0,
    truncationsSnapshotted: 0,
  };
  /**
   * How long each of the last 256 checkpoints held the database's write lock (ms): an
   * application without a busy timeout gets SQLITE_BUSY if it commits during that time.
   */
  readonly writeLockHoldsMs: number[] = [];

  #options: Required<Omit<DBOptions, "logger" | "parked">> & Pick<DBOptions, "logger" | "parked">;
  #reader?: DatabaseSync;
  #writer?: DatabaseSync;
  #dbFile?: RandomAccessFileHandle;
  #walFile?: RandomAccessFile & { close(): void };
  #ino?: number | null;
  #dev?: number | null;
  /**
   * Set when the file at the path is not the database the local cursor describes (replaced
   * while sluice was down or between two opens): the next sync must be a snapshot.
   */
  #replacedSinceCursor?: string;
  /** Inodes of the `-wal` and `-shm` files this process uses, to recognise them once stale. */
  #sidecarInodes = new Map<string, number>();
  #pageSize = 0;
  #cursor?: WALCursor;
  #syncedToWALEnd = false;
  /** The last checkpoint gave up for this time (see `#defer`). */
  #checkpointDeferred = false;
  /** Where the last PASSIVE checkpoint backfilled to (`walBytesSynced` then, and its WAL). */
  #backfilled?: { salt1: number; salt2: number; at: number };
  #newestL0?: LTXFileInfo;
  /** Stored checksum of the last frame the cursor covers; avoids re-reading the L0 page. */
  #lastFrameChecksum?: { offset: number; checksum1: number; checksum2: number };
  #lastCheckpointAt = Date.now();
  #syncedSinceCheckpoint = false;
  #running: Promise<unknown> = Promise.resolve();
  /** The directory fsync of the newest L0 file while it runs (see {@linkcode writeL0File}). */
  #dirSync?: Promise<void>;
  #closed = false;
  /** The WAL's stat (see {@linkcode walStateKey}) when the last successful sync started. */
  #accountedWAL?: string;
  /** When a poll first saw a WAL state that no sync has started from since. */
  #unaccountedSince?: number;

  /** Prepares a database for replication; nothing is opened until {@linkcode open}. */
  constructor(path: string, options: DBOptions) {
    this.path = path;
    this.metaDir = options.metaDir;
    this.local = FileReplicaClient.metaDirectory(options.metaDir);
    this.#options = {
      encoding: "frame",
      minCheckpointPageN: 1000,
      truncatePageN: 121359,
      checkpointInterval: 60_000,
      busyTimeout: 1000,
      maxSyncWALBytes: DEFAULT_MAX_SYNC_WAL_BYTES,
      stallAfter: 30_000,
      ...options,
    };
  }

  /** Page size, known after {@linkcode open}. */
  get pageSize(): number {
    return this.#pageSize;
  }

  /** TXID of the newest local L0 file (0 before the first sync). */
  get txid(): number {
    return this.#cursor?.txid ?? 0;
  }

  /**
   * The L0 file this process wrote last, as a listing of the meta directory would describe it:
   * the shipper uploads it without a stat.
   */
  get newestL0File(): LTXFileInfo | undefined {
    return this.#newestL0;
  }

  /** Logical WAL bytes synced so far (for metrics): end of the last synced frame. */
  get walBytesSynced(): number {
    return this.#cursor ? this.#cursor.walOffset + this.#cursor.walSize : 0;
  }

  /**
   * Opens the database for replication: sets WAL mode, creates the helper tables, starts the
   * long-running read transaction, opens the long-lived descriptors and loads the cursor.
   * Never creates the database file.
   * @throws {DatabaseOpenError} when the file is missing, not SQLite, or not switchable to WAL.
   */
  async open(): Promise<void> {
    let info: Deno.FileInfo;
    try {
      // Synchronous: a stat of a local file takes microseconds, where an async op costs the
      // event loop several times that in thread-pool round trips, for every tenant opened.
      info = Deno.statSync(this.path);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) {
        throw new DatabaseOpenError(
          `database ${this.path} does not exist (sluice never creates one)`,
        );
      }
      throw err;
    }
    if (!info.isFile) throw new DatabaseOpenError(`${this.path} is not a regular file`);
    this.#ino = info.ino;
    this.#dev = info.dev;
    try {
      await this.#openHandles(info.mode ?? undefined);
      // A meta dir without levels holds no cursor; and with no cursor, no identity to check.
      if (!(await this.#prepareMetaDir())) this.#cursor = await loadCursor(this.local);
      if (this.#cursor) await this.#checkIdentity();
      await this.#continueAfterParking();
      this.#closeWriter();
    } catch (err) {
      this.#release();
      if (err instanceof DatabaseOpenError) throw err;
      throw new DatabaseOpenError(`cannot open ${this.path}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  /**
   * Opens the descriptors and connections, makes sure the database is in WAL mode with a WAL,
   * and starts the long read transaction. Used by {@linkcode open} and to re-attach after the
   * WAL was deleted or replaced behind this process. `sidecarMode` (the database file's mode;
   * given only while this process has no connection to the database) lets it create a
   * missing `-wal` and `-shm` first, off the event loop (see {@linkcode createSidecars}).
   */
  async #openHandles(sidecarMode?: number): Promise<void> {
    // The one descriptor on the DB file that sluice keeps while attached (POSIX locks).
    this.#dbFile = await openRandomAccess(this.path);
    {
      const head = new Uint8Array(100);
      const n = await this.#dbFile.readAt(head, 0);
      parseDatabaseHeader(head.subarray(0, n), this.path);
      // One connection does it all at open: the switch to WAL mode, the helper tables, then
      // the long read transaction. The writer is opened on demand (each connection costs a
      // synchronous open on the event loop: a burst of new tenants pays it a thousand times).
      // Its first statement reads the schema: busy while an application's last close holds the
      // database exclusively (checkpointing and deleting its WAL), which a woken tenant races.
      if (sidecarMode !== undefined && head[18] === 2 && head[19] === 2) {
        await createSidecars(this.path, sidecarMode);
      }
      const reader = this.#reader = await this.#retry(() => this.#connect());
      const mode = await this.#retry(() =>
        reader.prepare("PRAGMA journal_mode = wal").get() as { journal_mode: string }
      );
      if (mode.journal_mode !== "wal") {
        throw new DatabaseOpenError(
          `${this.path}: could not switch to WAL mode (journal_mode is ${mode.journal_mode})`,
        );
      }
      // Header bytes 18–19 are 1 with a rollback journal, 2 in WAL mode. The switch persists
      // in the file and changes how the application's own connections work: say so (once:
      // the next open finds WAL mode).
      if (head[18] !== 2 || head[19] !== 2) {
        this.#options.logger?.warn(
          "database was in rollback-journal mode; switched it to WAL mode for good (sluice " +
            "replicates the WAL; PRAGMA journal_mode=delete while sluice is stopped reverts it)",
          { db: this.path },
        );
      }
      // Every statement that reads may meet an application's lock (its last close checkpoints
      // and deletes the WAL under an exclusive lock: a woken tenant's open races exactly that).
      this.#pageSize =
        (await this.#retry(() => reader.prepare("PRAGMA page_size").get() as { page_size: number }))
          .page_size;
      // Make sure a WAL with a header exists before opening the descriptor on it.
      if (fileSize(this.path + "-wal") < WAL_HEADER_SIZE) {
        await this.#retry(() => startWAL(reader));
      } else {
        await this.#retry(() => reader.exec(HELPER_TABLES_SQL));
      }
      this.#walFile = await openRandomAccess(this.path + "-wal");
      await this.#beginReadTx();
      this.#sidecarInodes.clear();
      for (const suffix of ["-wal", "-shm"]) {
        const ino = statOrUndefined(this.path + suffix)?.ino;
        if (ino != null) this.#sidecarInodes.set(suffix, ino);
      }
    }
  }

  /**
   * Creates the local level-0 directory. @returns true when the meta directory had no level
   * directory at all (a new database, or one never synced): no cursor, no temporary files and
   * nothing else to look for in it.
   */
  async #prepareMetaDir(): Promise<boolean> {
    const ltxDir = join(this.metaDir, "ltx");
    const created = await Deno.mkdir(ltxDir).then(() => true, (err) => {
      if (err instanceof Deno.errors.AlreadyExists) return false;
      if (err instanceof Deno.errors.NotFound) return undefined; // no meta dir yet
      throw err;
    });
    if (created === undefined) {
      await Deno.mkdir(join(ltxDir, "0"), { recursive: true });
      return true;
    }
    if (created) {
      await Deno.mkdir(join(ltxDir, "0"));
      return true;
    }
    await Deno.mkdir(join(ltxDir, "0"), { recursive: true });
    await this.local.removeTempFiles();
    return false;
  }

  /**
   * Whether the WAL at the path is still the file this process reads. SQLite deletes the WAL
   * when the last connection closes; sluice's read transaction prevents that while its locks
   * hold, but not when something drops them (an application in `locking_mode=EXCLUSIVE`, a
   * file system without POSIX locks, a tool that opened and closed the database inside this
   * process). Reading on from the unlinked old WAL would look idle for ever: replication would
   * silently stop.
   */
  #walStillOurs(): { ours: boolean; info?: Deno.FileInfo } {
    // Synchronous, as in open: a stat of a local file takes microseconds, where an async op
    // costs the event loop several times that in thread-pool round trips (every sync).
    const info = statOrUndefined(this.path + "-wal");
    const ours = info?.ino != null && info.ino === this.#sidecarInodes.get("-wal");
    return { ours, info };
  }

  /**
   * Re-attaches after the WAL was deleted or replaced behind this process: fresh descriptors,
   * connections and read transaction, and a snapshot next, since whatever the old WAL held
   * past our cursor may have been checkpointed unseen.
   * @throws {DatabaseOpenError} when the database file itself is gone or was replaced (the
   * store starts over with it; sluice never creates a database).
   */
  async #reattach(): Promise<void> {
    if (this.replaced()) {
      throw new DatabaseOpenError(`database ${this.path} was removed or replaced`);
    }
    const reason = "WAL deleted or replaced behind sluice (its SHARED lock was lost)";
    this.#options.logger?.warn(
      "the WAL is not the file sluice was reading; re-attaching and taking a snapshot",
      { wal: this.path + "-wal" },
    );
    this.#release();
    try {
      await this.#openHandles();
      await this.#prepareMetaDir();
      this.#closeWriter();
    } catch (err) {
      this.#release();
      throw err;
    }
    this.#replacedSinceCursor = reason;
    this.#lastFrameChecksum = undefined;
    this.#syncedToWALEnd = false;
  }

  /**
   * Replaces the local cursor when the replica is ahead of it (the database was restored from
   * an older backup, or the meta dir was lost): the replica's file `file` ending at its
   * position becomes the newest local L0 file, so the next sync continues the TXID sequence
   * with a snapshot (FORMAT.md §4.2 step 9). The file is streamed (or copied by the kernel),
   * never held in memory: it may be a full image of a large database.
   */
  async adoptReplicaPosition(client: ReplicaClient, file: LTXFileInfo): Promise<void> {
    const txid = file.maxTXID;
    if (txid <= this.txid) return;
    const head = await client.openLTXFile(file, { length: HEADER_SIZE });
    const header = decodeHeader(new Uint8Array(await new Response(head).arrayBuffer()));
    const stale: { level: number; minTXID: number; maxTXID: number }[] = [];
    for await (const f of this.local.ltxFiles(0)) stale.push(f);
    // First, so that a crash before the snapshot below cannot leave the adopted cursor
    // trusted: a recorded identity that matches no file makes the next open snapshot too.
    await markIdentityAdopted(this.metaDir);
    const id = { level: 0, minTXID: txid, maxTXID: txid };
    const sourcePath = client.localPath?.(file);
    if (sourcePath !== undefined) await this.local.copyLTXFile(id, sourcePath, header.timestamp);
    else await this.local.writeLTXFile(id, await client.openLTXFile(file), header.timestamp);
    await this.local.deleteLTXFiles(stale);
    this.#cursor = cursorFrom(header);
    this.#lastFrameChecksum = undefined;
    // Whatever file is here now (the same database with a lost meta dir, or a new database at
    // an old tenant's path), the replica's history describes another WAL: continuing it
    // incrementally could mix two databases, so the next sync is a full snapshot. A restore
    // then yields the old database up to `txid` and this one after it, never a mix.
    this.#replacedSinceCursor = "local position behind the replica";
    this.#options.logger?.warn(
      "database is behind its replica (new database or lost meta dir); continuing after " +
        "replica TXID with a snapshot",
      { txid: formatTXID(txid) },
    );
  }

  /**
   * Reads what was committed since the last sync and writes it as the next L0 file.
   * Calls queue: a sync requested while one runs starts after it. Checkpoints run after a
   * sync when the thresholds of FORMAT.md §4.4 are met.
   * @throws whatever failed; the cursor is left at the last complete file.
   */
  sync(options: SyncOptions = {}): Promise<SyncResult> {
    const next = this.#running.catch(() => {}).then(() =>
      this.#syncAndCheckpoint(options.checkpoint !== false)
    );
    this.#running = next;
    return next;
  }

  /**
   * The checkpoint a sync with `checkpoint: false` left out, when the thresholds of FORMAT.md
   * §4.4 are met (queued behind a running sync). `onCaughtUp` is called (not awaited) once
   * the checkpoint has synced to near the WAL's end, before it waits for the write lock and
   * copies: the caller can ship what those syncs wrote meanwhile.
   * @throws what the checkpoint threw (a busy database is not an error).
   */
  checkpointIfDue(onCaughtUp?: () => void): Promise<void> {
    const next = this.#running.catch(() => {}).then(() => this.#maybeCheckpoint(onCaughtUp));
    this.#running = next;
    return next;
  }

  /** Runs a checkpoint in the given mode now (queued behind a running sync). */
  checkpoint(mode: "PASSIVE" | "TRUNCATE"): Promise<void> {
    const next = this.#running.catch(() => {}).then(() => this.#checkpoint(mode));
    this.#running = next;
    return next;
  }

  /**
   * Writes a full snapshot (level 9, `0000000000000001-<txid>.ltx`) of the database at its
   * current position to `client`, after a sync so the position is fresh (FORMAT.md §3.3).
   * Queued like a sync, so no checkpoint runs while it streams.
   * @returns the TXID the snapshot covers (0 when the database has nothing to snapshot).
   */
  snapshot(client: ReplicaClient): Promise<{ txid: number; pageCount: number; bytes: number }> {
    const next = this.#running.catch(() => {}).then(async () => {
      await this.#syncOnce();
      return await this.#writeSnapshot(client);
    });
    this.#running = next;
    return next;
  }

  /**
   * Whether the next sync is known to write a full image (no local position yet, or the file
   * was replaced): such a sync is heavy work, which callers may queue.
   */
  get needsSnapshot(): boolean {
    return this.#cursor === undefined || this.#replacedSinceCursor !== undefined;
  }

  /** Size in bytes of the database file this object has open (0 when closed). */
  async fileSize(): Promise<number> {
    return this.#dbFile ? await this.#dbFile.size() : 0;
  }

  /** `device:inode` of the database file this object has open, to index databases by file. */
  get fileKey(): string | undefined {
    return this.#dbFile !== undefined && this.#ino != null
      ? `${this.#dev}:${this.#ino}`
      : undefined;
  }

  /** Whether `info` (a stat of some path) is the database file this object has open. */
  isFile(info: Deno.FileInfo): boolean {
    return this.#dbFile !== undefined && info.ino != null && info.ino === this.#ino &&
      info.dev === this.#dev;
  }

  /**
   * Whether the database file at `path` is no longer the one opened (replaced by `mv`).
   * Synchronous: the safety-net polls of every open database ask (see `_local_stat.ts`).
   */
  replaced(): boolean {
    const info = statOrUndefined(this.path);
    return !info || (info.ino ?? null) !== (this.#ino ?? null);
  }

  /**
   * The health tripwire, fed by the safety-net poll with the WAL's current stat. A WAL that
   * changed while no sync started from its new state for `stallAfter` means commits are not
   * reaching the replica (syncs failing, or a WAL swapped behind this process): reported once
   * in the log and as `stats.stalledSince` (status, metrics) until a sync catches up.
   */
  observeWAL(info: Deno.FileInfo | undefined, now: number = Date.now()): void {
    if (walStateKey(info) === this.#accountedWAL) {
      this.#unaccountedSince = undefined;
      return;
    }
    this.#unaccountedSince ??= now;
    if (this.stats.stalledSince || now - this.#unaccountedSince < this.#options.stallAfter) return;
    this.stats.stalledSince = new Date(this.#unaccountedSince);
    this.#options.logger?.warn("the database changed but no sync has picked the change up", {
      since: this.stats.stalledSince.toISOString(),
      lastError: this.stats.lastError ?? "none",
    });
  }

  /** A sync started from the WAL state `info` and succeeded: that state is on an L0 file. */
  #accountFor(info: Deno.FileInfo | undefined): void {
    if (!info) return; // re-attached: the next sync starts from a known WAL
    this.#accountedWAL = walStateKey(info);
    this.#unaccountedSince = undefined;
    if (this.stats.stalledSince) {
      this.#options.logger?.info("changes reach the replica again", {
        stalledSince: this.stats.stalledSince.toISOString(),
      });
      this.stats.stalledSince = undefined;
    }
  }

  /** Waits for a running sync, then releases connections and descriptors. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#running.catch(() => {});
    await this.#settleDirSync().catch(() => {}); // durable before the process may exit
    const moved = this.#dbFile !== undefined && this.replaced();
    // A deleted file has no reader left to checkpoint for: copying its WAL into it would
    // only cost fsyncs, on this thread, while the disk may be busy with everyone else's.
    if (moved && (await this.#dbFile!.linkCount()) !== 0) this.#checkpointMovedFile();
    this.#release();
    if (moved) await this.#setAsideStaleWAL();
  }

  /**
   * Closes an idle database for parking. Under the write lock: a last sync must find no new
   * frame, a PASSIVE checkpoint backfills the WAL into the database file, and the file's state
   * is recorded once the clock has moved past that write (so that any later write shows in
   * it). Then the connections close, the writer last and in the same synchronous step as its
   * ROLLBACK: when it is the last connection of any process, SQLite deletes the WAL, as the
   * application's own last close would have; there is nothing left in it to checkpoint.
   * @returns what {@linkcode DBOptions.parked} needs to continue without a snapshot, or
   * undefined (the database stays open) when a commit arrived since the last sync or the lock
   * is busy: it is not idle after all.
   */
  closeIdle(): Promise<ParkedState | undefined> {
    const next = this.#running.catch(() => {}).then(async () => {
      if (this.#closed || !this.#reader || !this.#walFile) return undefined;
      await this.#settleDirSync();
      try {
        await this.#lockWrites();
      } catch (err) {
        if (isBusyError(err)) return undefined;
        throw err;
      }
      const lockedAt = performance.now();
      let parked: ParkedState | undefined;
      try {
        if ((await this.#syncOnce()).txid !== undefined) return undefined;
        const walSize = await this.#walFile.size();
        this.#reader.exec("COMMIT"); // our read mark must not hold the checkpoint back
        await this.#retry(() => checkpoint(this.path, "PASSIVE"));
        const info = await Deno.stat(this.path);
        // File times come from a coarse clock (one tick, up to 10 ms): a write in the same
        // tick as the checkpoint's would leave them equal. None can happen while we hold the
        // lock and wait the tick out.
        const wait = (info.mtime?.getTime() ?? 0) + MTIME_TICK_MS - Date.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        parked = {
          dbState: statKey(info),
          walIno: this.#sidecarInodes.get("-wal") ?? null,
          walSize,
        };
      } finally {
        if (!parked) {
          this.#writerConnection().exec("ROLLBACK");
          if (this.#reader && !this.#reader.isTransaction) await this.#beginReadTx();
        }
      }
      this.#noteWriteLockHeld(performance.now() - lockedAt);
      this.#closed = true;
      this.#release(); // the writer closes right after its ROLLBACK, then the descriptors
      return parked;
    });
    this.#running = next;
    return next;
  }

  /**
   * A database renamed away (`mv app.db new.db`) leaves its WAL at the old path, and SQLite
   * never checkpoints a database file that moved: it checks on close. Without sluice the
   * application's last close, before the move, would have checkpointed the WAL into the file;
   * with sluice connected it is not the last, so the commits still in the WAL would be lost to
   * the file under its new name. Our connection is bound to the file wherever it is now, so it
   * checkpoints them in (through SQLite, with its locks) before letting go. Synchronous, once
   * per moved database, and bounded by sluice's own checkpoints (about 1,000 pages).
   */
  #checkpointMovedFile(): void {
    const reader = this.#reader;
    if (!reader) return;
    try {
      if (reader.isTransaction) reader.exec("COMMIT");
      const result = reader.prepare("PRAGMA wal_checkpoint(PASSIVE)").get() as {
        busy: number;
        log: number;
        checkpointed: number;
      };
      if (result.busy !== 0 || result.checkpointed < result.log) {
        this.#options.logger?.warn(
          "database moved; its WAL could not be checkpointed into it completely",
          { walFrames: result.log, checkpointed: result.checkpointed },
        );
      }
    } catch (err) {
      this.#options.logger?.warn("database moved; cannot checkpoint its WAL into it", {
        error: (err as Error).message,
      });
    }
  }

  /**
   * After the database file was replaced, its old `-wal` stays at the path:
   * SQLite will not checkpoint a moved database, and this process's connection kept the WAL
   * alive. SQLite would apply that WAL to whatever database is at the path next and corrupt
   * it, so it is renamed to `<db>-wal.stale-<ms>` (it may hold the moved database's last
   * transactions; they are on the replica). Only a WAL that is certainly the old one is
   * touched: the same inode this process used, frames under the salts of our last sync, and
   * nothing written after it.
   * An application that already reopened the path writes under new salts (SQLite restarts an
   * empty or checkpointed WAL with a fresh salt), and its live WAL must not be pulled away.
   * The `-shm` is left alone: the next first connection rebuilds it, and another process may
   * have it mapped.
   */
  async #setAsideStaleWAL(): Promise<void> {
    const ino = this.#sidecarInodes.get("-wal");
    const cursor = this.#cursor;
    if (ino === undefined || !cursor) return;
    // Only a database replaced by another file needs it. One moved away or deleted leaves
    // the path empty, and its owner may be moving the WAL along right now (`mv a.db b.db; mv
    // a.db-wal b.db-wal`): taking it would cost the moved database its last transactions.
    // A database created at the path later starts empty, and SQLite deletes a leftover WAL then.
    if (!(await Deno.lstat(this.path).then(() => true, () => false))) return;
    const path = this.path + "-wal";
    let file: Deno.FsFile | undefined;
    try {
      file = await Deno.open(path, { read: true });
      const info = await file.stat();
      // Frames past our last sync mean someone still writes to it (an application that
      // reopened the path while our read transaction kept the WAL from being reset): leave it.
      if (info.ino !== ino || info.size <= WAL_HEADER_SIZE) return;
      if (info.size !== this.#cursorEnd(cursor)) {
        this.#options.logger?.warn(
          "database was moved or replaced while its WAL was in use; the WAL was left in place",
          { wal: path },
        );
        return;
      }
      const head = new Uint8Array(WAL_HEADER_SIZE);
      const header = parseWALHeader(head.subarray(0, (await file.read(head)) ?? 0));
      if (header?.salt1 !== cursor.salt1 || header.salt2 !== cursor.salt2) return;
    } catch {
      return; // gone or unreadable: nothing to set aside
    } finally {
      file?.close();
    }
    const aside = `${path}.stale-${Date.now()}`;
    try {
      await Deno.rename(path, aside);
    } catch (err) {
      // Deleted since the check (the application removed the database with its WAL, or its
      // directory): nothing is left to set aside.
      if (err instanceof Deno.errors.NotFound) return;
      this.#options.logger?.error("cannot set aside the old WAL of a moved database", {
        path,
        error: (err as Error).message,
      });
      return;
    }
    // The check and the rename are two steps: a WAL created at the path in between (a new
    // database there) is the application's, so it goes back unless the path is taken again.
    const moved = await Deno.lstat(aside).catch(() => undefined);
    if (moved && moved.ino !== ino) {
      await Deno.link(aside, path).then(() => Deno.remove(aside)).catch(() => {});
      return;
    }
    this.#options.logger?.warn(
      "database was moved or replaced; its old WAL was set aside so that SQLite cannot " +
        "apply it to the file now at this path",
      { wal: aside },
    );
  }

  async #syncAndCheckpoint(checkpoint: boolean): Promise<SyncResult> {
    if (this.#closed) throw new Error(`${this.path} is closed`);
    let result: SyncResult;
    try {
      const wal = this.#walStillOurs();
      if (!wal.ours) await this.#reattach();
      result = await this.#syncOnce();
      this.#accountFor(wal.ours ? wal.info : undefined);
      this.stats.syncs++;
      this.stats.lastSyncAt = new Date();
    } catch (err) {
      this.stats.syncErrors++;
      this.stats.lastError = (err as Error).message;
      this.stats.lastErrorAt = new Date();
      throw err;
    }
    if (checkpoint) await this.#maybeCheckpoint();
    return result;
  }

  /**
   * One sync. `maxWALBytes` bounds what it reads of the WAL (default `maxSyncWALBytes`); the
   * result's `more` says that it stopped there.
   */
  async #syncOnce(forceSnapshot?: string, maxWALBytes?: number): Promise<SyncResult> {
    const taken: Uint8Array[] = [];
    try {
      return await this.#syncWith(
        (bytes) => {
          const buffer = WAL_READ_BUFFERS.take(bytes);
          taken.push(buffer);
          return buffer;
        },
        forceSnapshot,
        maxWALBytes,
      );
    } finally {
      // Nothing of this sync holds on to the WAL bytes once its L0 file is written.
      for (const buffer of taken) WAL_READ_BUFFERS.give(buffer);
    }
  }

  /** One sync, whose WAL reads go into buffers from `takeBuffer`. */
  async #syncWith(
    takeBuffer: (bytes: number) => Uint8Array,
    forceSnapshot?: string,
    maxWALBytes = this.#options.maxSyncWALBytes,
  ): Promise<SyncResult> {
    await this.#regainReadTx();
    const walFile = this.#walFile!;
    const pageSize = this.#pageSize;
    const frameSize = WAL_FRAME_HEADER_SIZE + pageSize;
    const walFileSize = await walFile.size();
    const header = await this.#readWALHeader();
    const seen = {
      walFileSize,
      headerSalts: header ? { salt1: header.salt1, salt2: header.salt2 } : undefined,
      syncedToWALEnd: this.#syncedToWALEnd,
      frameSize,
    };
    forceSnapshot ??= this.#replacedSinceCursor;
    let start: SyncStart = forceSnapshot
      ? { kind: "snapshot", reason: forceSnapshot }
      : decideSyncStart(this.#cursor, seen);
    /** The checksum of the frame before the start, when the check just read that frame. */
    let previousChecksum: { checksum1: number; checksum2: number } | undefined;
    if (start.kind === "check-last-frame") {
      const check = await this.#checkLastFrame(start.offset, header);
      start = afterLastFrameCheck(this.#cursor!, seen, start.offset, check);
      const frame = check.frame;
      if (
        start.kind === "incremental" && frame && frame.offset + frameSize === start.offset &&
        frame.salt1 === start.salt1 && frame.salt2 === start.salt2
      ) previousChecksum = frame;
    }
    if (start.kind === "idle") {
      this.#cursor!.walEmptiedAfterSync = true;
      return { snapshot: false, pageCount: 0, idle: true };
    }

    const snapshot = start.kind === "snapshot";
    let offset = start.kind === "incremental" ? start.offset : WAL_HEADER_SIZE;
    let salts = start.kind === "incremental"
      ? { salt1: start.salt1, salt2: start.salt2 }
      : { salt1: header?.salt1 ?? 0, salt2: header?.salt2 ?? 0 };
    const read = header
      ? await readWAL(walFile, {
        offset,
        salt1: salts.salt1,
        salt2: salts.salt2,
        maxBytes: snapshot ? 0 : maxWALBytes,
        header,
        previousChecksum,
        allocate: takeBuffer,
        singleReadBytes: MAX_SINGLE_WAL_READ_BYTES,
      }).catch(async (err) => {
        if (!(err instanceof PrevFrameMismatchError)) throw err;
        // The frame before our offset is gone: continue from the start of the current WAL.
        offset = WAL_HEADER_SIZE;
        salts = { salt1: header.salt1, salt2: header.salt2 };
        return await readWAL(walFile, {
          offset,
          maxBytes: maxWALBytes,
          header,
          allocate: takeBuffer,
          singleReadBytes: MAX_SINGLE_WAL_READ_BYTES,
        });
      })
      : null;

    const walBytes = read && read.endOffset > 0 ? read.endOffset - offset : 0;
    if (!snapshot && walBytes === 0) {
      this.#syncedToWALEnd = offset === walFileSize;
      return { snapshot: false, pageCount: 0, idle: this.#syncedToWALEnd };
    }
    const dbSize = await this.#dbFile!.size();
    const commit = read && read.commit > 0 ? read.commit : Math.floor(dbSize / pageSize);
    if (commit === 0) {
      // An empty database (0 bytes, nothing committed yet): nothing to replicate.
      return { snapshot: false, pageCount: 0 };
    }
    const pageMap = read?.pageMap ?? new Map<number, number>();
    const txid = this.txid + 1;
    const ltxHeader: Header = {
      flags: HEADER_FLAG_NO_CHECKSUM,
      pageSize,
      commit,
      minTXID: txid,
      maxTXID: txid,
      timestamp: Date.now(),
      preApplyChecksum: 0n,
      walOffset: offset,
      walSize: walBytes,
      walSalt1: salts.salt1,
      walSalt2: salts.salt2,
      nodeID: 0n,
    };

    const pgnos = this.#pagesToWrite(snapshot, pageMap, commit);
    await this.#writeL0(ltxHeader, pgnos, pageMap, read?.frames);

    this.#cursor = cursorFrom(ltxHeader);
    if (snapshot) await this.#recordIdentity();
    this.#syncedToWALEnd = offset + walBytes === walFileSize;
    this.#syncedSinceCheckpoint = true;
    if (walBytes > 0) {
      const lastAt = offset + walBytes - frameSize;
      const inMemory = read?.frames && lastAt - read.frames.offset + WAL_FRAME_HEADER_SIZE <=
          read.frames.bytes.length
        ? read.frames.bytes.subarray(lastAt - read.frames.offset)
        : undefined;
      const last = inMemory ? parseFrameHeader(inMemory) : await readFrameHeader(walFile, lastAt);
      this.#lastFrameChecksum = last
        ? { offset: offset + walBytes, checksum1: last.checksum1, checksum2: last.checksum2 }
        : undefined;
    } else {
      this.#lastFrameChecksum = undefined;
    }
    const reason = start.kind === "snapshot" ? start.reason : undefined;
    this.#options.logger?.debug("synced", {
      txid: formatTXID(txid),
      pages: pgnos.length,
      snapshot,
      ...(reason ? { reason } : {}),
    });
    // Not "the WAL file goes on": a WAL restarted without TRUNCATE keeps its old length, and
    // what lies past the last commit is an older generation (syncing again finds nothing).
    return { txid, snapshot, reason, pageCount: pgnos.length, more: read?.limited === true };
  }

  async #writeSnapshot(client: ReplicaClient) {
    await this.#regainReadTx();
    const cursor = this.#cursor;
    if (!cursor) return { txid: 0, pageCount: 0, bytes: 0 };
    const frameSize = WAL_FRAME_HEADER_SIZE + this.#pageSize;
    const end = this.#cursorEnd(cursor);
    // The image at the cursor: committed WAL frames up to its end, the database file below them.
    const read = end > WAL_HEADER_SIZE
      ? await readWAL(this.#walFile!, { offset: WAL_HEADER_SIZE, maxBytes: end - WAL_HEADER_SIZE })
      : null;
    if (read && read.endOffset !== end) {
      throw new Error(
        `${this.path}: WAL changed under the snapshot (read to ${read.endOffset}, expected ${end})`,
      );
    }
    const pageMap = read?.pageMap ?? new Map<number, number>();
    const commit = cursor.commit;
    const lastFrame = Math.max(end - frameSize, WAL_HEADER_SIZE);
    const header: Header = {
      flags: HEADER_FLAG_NO_CHECKSUM,
      pageSize: this.#pageSize,
      commit,
      minTXID: 1,
      maxTXID: cursor.txid,
      timestamp: Date.now(),
      preApplyChecksum: 0n,
      walOffset: lastFrame,
      walSize: end - lastFrame,
      walSalt1: cursor.salt1,
      walSalt2: cursor.salt2,
      nodeID: 0n,
    };
    const pgnos = this.#pagesToWrite(true, pageMap, commit);
    const id = { level: 9, minTXID: 1, maxTXID: cursor.txid };
    const info = await this.#encodeTo(client, id, header, pgnos, pageMap);
    return { txid: cursor.txid, pageCount: pgnos.length, bytes: info.size };
  }

  /** End of the WAL range the cursor has synced, in the current WAL generation. */
  #cursorEnd(cursor: WALCursor): number {
    return cursor.walEmptiedAfterSync ? WAL_HEADER_SIZE : cursor.walOffset + cursor.walSize;
  }

  /** The pages of the next L0 file, ascending: WAL pages plus growth pages, or everything. */
  #pagesToWrite(snapshot: boolean, pageMap: Map<number, number>, commit: number): number[] {
    const lockPage = lockPageNumber(this.#pageSize);
    if (snapshot) {
      // Built whole, then the lock page cut out: a million pages cost ~50 ms of CPU pushed
      // one at a time (the loop runs once, mostly unoptimized), ~20 ms this way.
      const all = Array.from({ length: commit }, (_, i) => i + 1);
      if (lockPage <= commit) all.splice(lockPage - 1, 1);
      return all;
    }
    const set = new Set(pageMap.keys());
    // Growth pages: after a shrink, regrowth must resend every page above the old size, or a
    // compaction could resurrect stale copies of them (FORMAT.md §7 item 7).
    const prevCommit = this.#cursor?.commit ?? 0;
    for (let pgno = prevCommit + 1; pgno <= commit; pgno++) {
      if (pgno !== lockPage) set.add(pgno);
    }
    return [...set].filter((p) => p <= commit).sort((a, b) => a - b);
  }

  /**
   * Writes the pages into `<meta>/ltx/0/<txid>-<txid>.ltx`, atomically. A small file (the
   * usual incremental sync) is encoded in memory and written with its directory fsync left to
   * run while it ships (see _l0_file.ts); a large one streams.
   */
  async #writeL0(
    header: Header,
    pgnos: number[],
    pageMap: Map<number, number>,
    walBytes?: WALBytes,
  ): Promise<void> {
    await this.#settleDirSync();
    const id = { level: 0, minTXID: header.minTXID, maxTXID: header.maxTXID };
    if (pgnos.length * this.#pageSize > SMALL_L0_BYTES) {
      this.#newestL0 = await this.#encodeTo(this.local, id, header, pgnos, pageMap, walBytes);
      return;
    }
    const collector = new ByteCollector();
    // The collector copies each chunk: the encoder need not allocate a fresh one per chunk.
    const encoder = new Encoder(collector.writable, header, {
      encoding: this.#options.encoding,
      reuseChunks: true,
    });
    for await (const run of this.#readRuns(pgnos, pageMap, walBytes)) {
      await encoder.encodePages(run.pgno, run.count, run.data);
    }
    await encoder.close();
    const bytes = collector.collected();
    const { dirSynced } = await writeL0File(this.local.filePath(id), bytes, header.timestamp);
    this.#dirSync = dirSynced;
    this.#newestL0 = { ...id, size: bytes.length, createdAt: new Date(header.timestamp) };
  }

  /** Waits for the directory fsync of the last small L0 file. @throws its error. */
  async #settleDirSync(): Promise<void> {
    const pending = this.#dirSync;
    if (!pending) return;
    this.#dirSync = undefined;
    await pending;
  }

  /**
   * Encodes pages straight into a client's atomic write. A large file (a snapshot, a big
   * sync) is compressed and checksummed on a codec worker (src/pipeline), so reading the
   * pages, coding them and writing the output overlap and the event loop stays free.
   * `walBytes`: the sync's WAL read, when it holds the frames (see `#readRuns`).
   */
  async #encodeTo(
    client: ReplicaClient,
    id: LTXFileId,
    header: Header,
    pgnos: number[],
    pageMap: Map<number, number>,
    walBytes?: WALBytes,
  ): Promise<LTXFileInfo> {
    // A directory client writes each chunk out before it reads the next: the encoder may
    // then reuse its buffers instead of leaving a fresh one per chunk to the GC (issue 15).
    const reuseChunks = client.releasesEachChunk === true;
    const pipe = reuseChunks ? handOffPipe() : new TransformStream<Uint8Array, Uint8Array>();
    const written = client.writeLTXFile(id, pipe.readable, header.timestamp);
    // The write can fail (disk full) while pages are still being encoded; its rejection is
    // awaited below, but must count as handled now or the process dies of it.
    written.catch(() => {});
    const encoder = openEncoder(pipe.writable, header, {
      encoding: this.#options.encoding,
      reuseChunks,
      expectedBytes: pgnos.length * this.#pageSize,
      ...imageEncoding(),
    });
    try {
      // Runs of pages from the database file are read straight into the encoder's batches,
      // which move to the codec worker as they are: no copy on this thread (a full image is
      // all such runs). Pages in the WAL go through #readRuns, which takes them out of their
      // frames.
      const pageSize = this.#pageSize;
      const fromFile = (into: Uint8Array, first: number) =>
        this.#readFull(this.#dbFile!, into, (first - 1) * pageSize, "database");
      for (let at = 0, end = 0; at < pgnos.length; at = end) {
        const inWAL = pageMap.has(pgnos[at]);
        end = at + 1;
        while (
          end < pgnos.length && pageMap.has(pgnos[end]) === inWAL &&
          (inWAL || pgnos[end] === pgnos[end - 1] + 1)
        ) end++;
        if (!inWAL) {
          await encoder.encodePagesFrom(pgnos[at], end - at, fromFile);
          continue;
        }
        const wal = at === 0 && end === pgnos.length ? pgnos : pgnos.slice(at, end);
        for await (const run of this.#readRuns(wal, pageMap, walBytes)) {
          await encoder.encodePages(run.pgno, run.count, run.data);
        }
      }
      await encoder.close();
    } catch (err) {
      await encoder.abort(err).catch(() => {});
      await written.catch(() => {});
      throw err;
    }
    return await written;
  }

  /**
   * The pages to write, ascending, from the WAL (when in the page map) or the database file,
   * as runs of consecutive pages, each a view of one of two buffers reused for the whole call
   * or of `walBytes` (the consumer must be done with a run before it asks for the one after
   * next): a run is one read of up to `READ_CHUNK` bytes, read while the consumer still works
   * on the run before, or no read at all when `walBytes` (what the WAL reader read) holds it.
   * A full image then costs the main thread a read and a copy per megabyte instead of work
   * per page (issue 15), and its memory stays bounded.
   */
  async *#readRuns(
    pgnos: number[],
    pageMap: Map<number, number>,
    walBytes?: WALBytes,
  ): AsyncGenerator<{ pgno: number; count: number; data: Uint8Array }> {
    const pageSize = this.#pageSize;
    const frameSize = WAL_FRAME_HEADER_SIZE + pageSize;
    const perChunk = Math.max(1, Math.floor(READ_CHUNK / pageSize));
    const runPages = Math.min(perChunk, pgnos.length);
    const buffers = [0, 1].map(() => new Uint8Array(runPages * pageSize));
    /** Whole frames of a run from the WAL, headers included; allocated at the first such run. */
    const frameBuffers: Uint8Array[] = [];
    const reads: Promise<{ pgno: number; count: number; data: Uint8Array }>[] = [];
    let next = 0;
    let turn = 0;
    /** Starts the read of the run at `next`, into the buffers whose turn it is. */
    const startRead = () => {
      const pgno = pgnos[next];
      const frameOffset = pageMap.get(pgno);
      let count = 1;
      // A run is consecutive pages in the database file, or consecutive pages whose frames
      // are consecutive in the WAL (what a bulk write leaves): one read either way, where a
      // read per page costs an FFI call on a pool thread each (a 64 MiB sync: 16,000 calls).
      while (
        count < perChunk && next + count < pgnos.length && pgnos[next + count] === pgno + count &&
        (frameOffset === undefined
          ? !pageMap.has(pgno + count)
          : pageMap.get(pgno + count) === frameOffset + count * frameSize)
      ) count++;
      next += count;
      const slot = turn++ % 2;
      let data: Uint8Array = buffers[slot].subarray(0, count * pageSize);
      let read: Promise<void>;
      if (frameOffset === undefined) {
        read = this.#readFull(this.#dbFile!, data, (pgno - 1) * pageSize, "database");
      } else {
        // The frames are in memory when the WAL reader read them in one go (a small sync).
        const at = walBytes ? frameOffset - walBytes.offset : -1;
        const inMemory = walBytes && at >= 0 && at + count * frameSize <= walBytes.bytes.length
          ? walBytes.bytes.subarray(at, at + count * frameSize)
          : undefined;
        if (count === 1 && inMemory) {
          data = inMemory.subarray(WAL_FRAME_HEADER_SIZE, frameSize);
          read = Promise.resolve();
        } else if (count === 1) {
          read = this.#readFull(this.#walFile!, data, frameOffset + WAL_FRAME_HEADER_SIZE, "wal");
        } else {
          const frames = inMemory ??
            (frameBuffers[slot] ??= new Uint8Array(runPages * frameSize)).subarray(
              0,
              count * frameSize,
            );
          const filled = inMemory
            ? Promise.resolve()
            : this.#readFull(this.#walFile!, frames, frameOffset, "wal");
          read = filled.then(() => {
            for (let k = 0; k < count; k++) {
              const at = k * frameSize + WAL_FRAME_HEADER_SIZE;
              data.set(frames.subarray(at, at + pageSize), k * pageSize);
            }
          });
        }
      }
      const run = read.then(() => ({ pgno, count, data }));
      run.catch(() => {}); // awaited in turn below; a read ahead may fail unobserved
      reads.push(run);
    };
    if (next < pgnos.length) startRead();
    while (reads.length > 0) {
      const run = await reads.shift()!;
      // The other buffers are free again: the consumer is done with the run read into them.
      if (next < pgnos.length) startRead();
      yield run;
    }
  }

  async #readFull(file: RandomAccessFile, buf: Uint8Array, position: number, what: string) {
    const n = await file.readAt(buf, position);
    if (n < buf.length) {
      throw new Error(
        `${this.path}: short read of the ${what} file at offset ${position} ` +
          `(${n} of ${buf.length} bytes); was it truncated by another process?`,
      );
    }
  }

  async #readWALHeader(): Promise<WALHeader | null> {
    const bytes = new Uint8Array(WAL_HEADER_SIZE);
    const n = await this.#walFile!.readAt(bytes, 0);
    return parseWALHeader(bytes.subarray(0, n));
  }

  /**
   * The "last page match" of FORMAT.md §4.3.1: is the frame just before the cursor still the one we
   * synced? Compares its stored checksum with the one we saw (cheap), or else its page data
   * with the copy in the newest L0 file (after a restart).
   */
  async #checkLastFrame(offset: number, header: WALHeader | null) {
    const cursor = this.#cursor!;
    const frameSize = WAL_FRAME_HEADER_SIZE + this.#pageSize;
    const frameOffset = offset - frameSize;
    const frame = await readFrameHeader(this.#walFile!, frameOffset);
    let matches = !!frame && frame.salt1 === cursor.salt1 && frame.salt2 === cursor.salt2;
    if (matches && frame) {
      const known = this.#lastFrameChecksum;
      if (known && known.offset === offset) {
        matches = known.checksum1 === frame.checksum1 && known.checksum2 === frame.checksum2;
      } else {
        const data = new Uint8Array(this.#pageSize);
        await this.#readFull(
          this.#walFile!,
          data,
          offset - frameSize + WAL_FRAME_HEADER_SIZE,
          "wal",
        );
        matches = await this.#l0HasPage(cursor.txid, frame.pgno, data);
      }
    }
    if (!matches || !header) return { matches };
    // The frame read here seeds the WAL reader's checksum: it need not read it again.
    const read = frame ? { ...frame, offset: frameOffset } : undefined;
    if (header.salt1 === cursor.salt1 && header.salt2 === cursor.salt2) {
      return { matches, frame: read };
    }
    // The WAL restarted: collect the salts of frames that precede the old generation.
    const saltsSinceRestart: { salt1: number; salt2: number }[] = [];
    for (let at = WAL_HEADER_SIZE; at < offset; at += frameSize) {
      const f = await readFrameHeader(this.#walFile!, at);
      if (!f) break;
      if (f.salt1 === cursor.salt1 && f.salt2 === cursor.salt2) break;
      saltsSinceRestart.push({ salt1: f.salt1, salt2: f.salt2 });
    }
    const next = await readFrameHeader(this.#walFile!, offset);
    const oldFramesAfterCursor = !!next && next.salt1 === cursor.salt1 &&
      next.salt2 === cursor.salt2;
    return { matches, saltsSinceRestart, oldFramesAfterCursor, frame: read };
  }

  async #l0HasPage(txid: number, pgno: number, data: Uint8Array): Promise<boolean> {
    const stream = await this.local.openLTXFile({ level: 0, minTXID: txid, maxTXID: txid });
    const decoder = new Decoder(stream, { name: `${this.metaDir}/ltx/0/${formatTXID(txid)}` });
    try {
      await decoder.readHeader();
      for (let page = await decoder.readPageView(); page; page = await decoder.readPageView()) {
        if (page.pgno === pgno) return equalBytes(page.data, data);
        if (page.pgno > pgno) return false;
      }
      return false;
    } finally {
      await decoder.cancel().catch(() => {});
    }
  }

  /** Thresholds of FORMAT.md §4.4, evaluated after a sync. */
  async #maybeCheckpoint(onCaughtUp?: () => void): Promise<void> {
    if (!this.#cursor) return;
    const frameSize = WAL_FRAME_HEADER_SIZE + this.#pageSize;
    const walBytes = (pages: number) => WAL_HEADER_SIZE + pages * frameSize;
    const synced = this.walBytesSynced;
    // `truncate-page-n: 0` turns the TRUNCATE checkpoint off (it ran after every sync).
    const truncateAt = this.#options.truncatePageN > 0
      ? walBytes(this.#options.truncatePageN)
      : Infinity;
    // Usually after a sync that reached the WAL's end. A writer that never pauses never lets
    // one end there: its WAL then grew to the truncate threshold (500 MB, RELIABILITY F11),
    // each later checkpoint copying hundreds of MB, and the application's reads slowed with
    // it. So past the PASSIVE threshold the checkpoints run anyway, spaced; each catches up
    // first (#catchUp) and is skipped for this time when the writer stays ahead.
    const checkpointAt = Math.min(truncateAt, walBytes(this.#options.minCheckpointPageN));
    if (!this.#syncedToWALEnd && synced < checkpointAt) return;
    const spaced = Date.now() - this.#lastCheckpointAt >= MIN_CHECKPOINT_SPACING_MS;
    try {
      if (synced >= truncateAt) {
        // Spaced too: a writer that holds the write lock all the time makes each one give up
        // (busy), and after every sync they would only cost the syncs' time.
        if (!spaced) return;
        await this.#checkpoint("PASSIVE", onCaughtUp);
        // A TRUNCATE holds off the application's writers while it copies what is not yet
        // backfilled: after a PASSIVE one that ran, or when little is left to copy. After
        // deferred ones (the writer outpaces the syncs) the whole WAL was left: 1.2 GB held a
        // writer of 64 KiB blobs for 6.4 s, past its 5 s busy timeout ("database is locked").
        if (
          this.walBytesSynced >= truncateAt &&
          (!this.#checkpointDeferred || this.#notBackfilled() <= MAX_TRUNCATE_COPY_BYTES)
        ) {
          await this.#checkpoint("TRUNCATE", onCaughtUp);
        }
      } else if (
        synced >= walBytes(this.#options.minCheckpointPageN) && spaced
      ) {
        // Spaced like Litestream's (one sync a second there): each holds the write lock.
        await this.#checkpoint("PASSIVE", onCaughtUp);
      } else if (
        this.#syncedSinceCheckpoint && synced > walBytes(1) &&
        Date.now() - this.#lastCheckpointAt >= this.#options.checkpointInterval
      ) {
        await this.#checkpoint("PASSIVE", onCaughtUp);
      }
    } catch (err) {
      // A busy checkpoint is routine (a long reader elsewhere); anything else is reported.
      if (!isBusyError(err)) throw err;
      this.#options.logger?.debug("checkpoint busy", { error: (err as Error).message });
    }
  }

  /**
   * Syncs without the write lock until at most {@linkcode MAX_LOCKED_SYNC_BYTES} of WAL are
   * left for the sync that runs under it. False when a writer outpaces the syncs: the lock
   * would then be held for as long as the backlog takes to encode and write.
   */
  async #catchUp(): Promise<boolean> {
    for (let i = 0; i < MAX_CATCH_UP_SYNCS; i++) {
      // Caught up when a sync reached the end of the committed WAL and found little: what is
      // committed by the time the lock is held is then about as little. (Not the WAL file's
      // size: a WAL restarted without TRUNCATE keeps its old length, and comparing with that
      // deferred every checkpoint of a WAL that had once been large.)
      const result = await this.#syncOnce();
      if (!result.more && result.pageCount * this.#pageSize <= MAX_LOCKED_SYNC_BYTES) return true;
    }
    return false;
  }

  /** The checkpoint procedure of FORMAT.md §4.4 (`onCaughtUp`: see `checkpointIfDue`). */
  async #checkpoint(mode: "PASSIVE" | "TRUNCATE", onCaughtUp?: () => void): Promise<void> {
    this.#checkpointDeferred = false;
    this.#options.logger?.debug("checkpoint start", { mode, synced: this.walBytesSynced });
    const before = await this.#readWALHeader();
    await this.#syncOnce();
    let lockHeldMs = 0;
    try {
      if (mode === "TRUNCATE") {
        if (await this.#catchUp()) {
          onCaughtUp?.();
          return await this.#truncate();
        }
        this.#defer("TRUNCATE deferred: the writer outpaces the syncs");
        return;
      } else {
        // The read transaction moves to the WAL's end under the write lock, after a last sync:
        // the checkpoint then backfills exactly what is on L0 files, and no writer can restart
        // the WAL while it runs (our read mark is on it). The lock is held for that short step
        // only, not for the checkpoint's copying and fsyncs, so applications keep committing.
        if (!(await this.#catchUp())) {
          this.#defer("checkpoint deferred: the writer outpaces the syncs");
          return;
        }
        onCaughtUp?.();
        const moved = await this.#moveReadTxUnderWriteLock();
        lockHeldMs += moved.lockHeldMs;
        if (!moved.moved) {
          this.#noteWriteLockHeld(lockHeldMs);
          this.#defer("checkpoint deferred: the backlog grew while locking");
          this.#closeWriter();
          return;
        }
        // Our read mark is at the synced end now: the checkpoint backfills up to here.
        const mark = this.#cursor
          ? { salt1: this.#cursor.salt1, salt2: this.#cursor.salt2, at: this.walBytesSynced }
          : undefined;
        // In a worker: a large checkpoint would freeze the event loop for hundreds of ms.
        await this.#retry(() => checkpoint(this.path, "PASSIVE"));
        this.#backfilled = mark;
        // Move it again so the WAL can restart (our mark drops to 0 when all was backfilled);
        // under the lock, so no frame we have not synced can be backfilled and discarded.
        // Skipped when what was committed during the checkpoint is too much to sync under the
        // lock: our mark then stays where it was (safe; the WAL only cannot restart yet).
        if (await this.#catchUp()) {
          lockHeldMs += (await this.#moveReadTxUnderWriteLock()).lockHeldMs;
        }
      }
    } catch (err) {
      this.stats.checkpointErrors++;
      throw err;
    }
    this.stats.checkpoints++;
    this.#lastCheckpointAt = Date.now();
    this.#syncedSinceCheckpoint = false;
    await this.#bumpSeq();
    const after = await this.#readWALHeader();
    const restarted = !before || !after || before.salt1 !== after.salt1 ||
      before.salt2 !== after.salt2;
    this.#noteWriteLockHeld(lockHeldMs);
    this.#options.logger?.debug("checkpoint", {
      mode,
      restarted,
      writeLockMs: Number(lockHeldMs.toFixed(2)),
    });
    this.#closeWriter();
  }

  /**
   * The TRUNCATE checkpoint (FORMAT.md §4.4, RELIABILITY F11), after a PASSIVE one and a
   * catch-up. The checkpoint worker takes the write lock on its own connection; this thread
   * syncs to the WAL's end under it and ends its read transaction; then the worker gives the
   * lock up, runs the TRUNCATE and begins a read transaction in one synchronous step, reading
   * `PRAGMA data_version` before and after, and keeps that reader until ours is back (the WAL
   * cannot restart a second time unseen). When nothing was committed in between, every frame
   * the TRUNCATE discarded is on an L0 file and the next sync continues from the start of the
   * new WAL generation; otherwise it is a snapshot, as it always was before.
   *
   * What `data_version` does here was measured with node:sqlite (SQLite 3.53.2, two connections
   * of one process, and a writer process): see {@linkcode decideAfterTruncate} and
   * tests/checkpoint_truncate_continue_test.ts.
   */
  async #truncate(): Promise<void> {
    const reader = this.#reader!;
    // Busy (a writer holds the lock) is retried for the busy timeout, then given up for this
    // time (#maybeCheckpoint ignores busy errors): the next one is a second later.
    const lock = await this.#retry(() => lockForTruncate(this.path, TRUNCATE_LOCK_EXPIRE_MS));
    let lockedHeader: WALHeader | null = null;
    let syncedToEnd = false;
    let result: TruncateResult | undefined;
    let lockHeldMs = 0;
    let truncateSent = false;
    let failure: { error: unknown } | undefined;
    let deferred = false;
    try {
      // What was committed while the lock was being taken (the retries above) is synced under
      // it, up to a few MiB: more would hold the application's commits for as long as it
      // takes to encode, so the lock is then given up and the TRUNCATE tried at the next turn.
      const first = await this.#syncOnce(undefined, MAX_TRUNCATE_LOCKED_SYNC_BYTES);
      if (first.more) {
        deferred = true;
        return;
      }
      // Synced to the end of the committed WAL once a sync finds nothing more. Not the WAL
      // file's end: a WAL restarted without TRUNCATE keeps its old length, and what lies past
      // the last commit frame is an older generation or a rolled-back transaction's spill.
      syncedToEnd = first.txid === undefined;
      for (let i = 0; i < 3 && !syncedToEnd; i++) {
        syncedToEnd = (await this.#syncOnce()).txid === undefined;
      }
      // Nothing can change the header while the lock is held (a restart needs it).
      lockedHeader = await this.#readWALHeader();
      // Until the outcome is known, the WAL's end is not the cursor's: were the WAL emptied
      // and this call to fail below, the next sync must not take the empty WAL for "nothing
      // missed" (decideSyncStart), it must snapshot.
      this.#syncedToWALEnd = false;
      reader.exec("COMMIT"); // TRUNCATE waits for every reader, ours included
      truncateSent = true;
      result = await lock.truncate();
      lockHeldMs = result.lockHeldMs;
    } catch (error) {
      failure = { error };
    } finally {
      // Whatever failed, the lock is given up at once; our read transaction is begun again
      // before the worker ends the one it began right after the TRUNCATE (the two overlap,
      // so the WAL cannot restart a second time unseen in between).
      if (!truncateSent) lockHeldMs = await lock.release();
      try {
        if (!reader.isTransaction) await this.#beginReadTx();
      } finally {
        await lock.release();
        this.#noteWriteLockHeld(lockHeldMs);
        if (deferred) {
          this.#defer("TRUNCATE deferred: the backlog grew while locking");
          this.#closeWriter();
        }
      }
    }
    this.#lastCheckpointAt = Date.now();
    // A write makes sure the new WAL has its header (SQLite writes it with the first frame).
    await this.#bumpSeq();
    const after = await this.#readWALHeader();
    const decision = decideAfterTruncate({
      syncedToEnd,
      locked: lockedHeader ?? undefined,
      after: after ?? undefined,
      checkpoint: result,
    });
    this.#options.logger?.debug("checkpoint", {
      mode: "TRUNCATE",
      next: decision.kind,
      ...(decision.kind === "snapshot" ? { reason: decision.reason } : {}),
      writeLockMs: Number(lockHeldMs.toFixed(2)),
      dataVersion: result ? `${result.dataVersionLocked}/${result.dataVersionAfter}` : "unknown",
      busy: result?.busy ?? "unknown",
    });
    if (decision.kind === "continue" && this.#cursor) {
      this.stats.truncationsContinued++;
      this.#cursor.walEmptiedAfterSync = true;
    } else if (decision.kind !== "not-restarted") {
      this.stats.truncationsSnapshotted++;
      // Commits between the sync and the checkpoint may have been backfilled unseen: the new
      // WAL generation starts from a snapshot. Without the write lock (it held the
      // application's commits 1.6-2.5 s for 600 MB, RELIABILITY F11): the read transaction
      // begun after the checkpoint pins the image as it does for any snapshot. Begun on the
      // emptied WAL, it holds read lock 0, and no checkpoint backfills a frame while a reader
      // holds that lock (wal.c takes it exclusively to backfill); begun after a commit, its
      // read mark keeps the frames after it from being backfilled or overwritten. Either way
      // the database file's pages that no WAL frame replaces stay as they are while the
      // snapshot reads them.
      await this.#syncOnce(
        decision.kind === "snapshot" ? decision.reason : "checkpoint boundary (TRUNCATE)",
      );
    }
    this.#closeWriter();
    if (failure) throw failure.error;
    this.stats.checkpoints++;
    this.#syncedSinceCheckpoint = false;
  }

  /**
   * Takes the write lock, syncs the last frames and restarts the read transaction at the WAL's
   * end, then releases the lock. Syncs at most {@linkcode MAX_TRUNCATE_LOCKED_SYNC_BYTES}
   * under it and gives it up, moving nothing, when more was committed while it was being
   * taken (the busy retries can last as long as a fast writer keeps the lock): syncing all
   * of that would hold the application's commits while it encodes.
   * @returns how long the lock was held (ms) and whether the read transaction moved.
   */
  async #moveReadTxUnderWriteLock(): Promise<{ lockHeldMs: number; moved: boolean }> {
    const writer = this.#writerConnection();
    const reader = this.#reader!;
    await this.#lockWrites();
    const lockedAt = performance.now();
    let moved = false;
    try {
      // Bounded: what was committed while the lock was being taken may be more.
      if (!(await this.#syncOnce(undefined, MAX_TRUNCATE_LOCKED_SYNC_BYTES)).more) {
        reader.exec("COMMIT");
        await this.#beginReadTx();
        moved = true;
      }
    } finally {
      writer.exec("ROLLBACK");
    }
    return { lockHeldMs: performance.now() - lockedAt, moved };
  }

  /** WAL bytes synced in this WAL generation that no checkpoint has backfilled yet. */
  #notBackfilled(): number {
    const mark = this.#backfilled;
    const cursor = this.#cursor;
    const sameWAL = mark && cursor && mark.salt1 === cursor.salt1 && mark.salt2 === cursor.salt2;
    return this.walBytesSynced - (sameWAL ? mark.at : 0);
  }

  /** A checkpoint given up for this time: the next is spaced as if this one had run. */
  #defer(why: string): void {
    this.#options.logger?.debug(why);
    this.#lastCheckpointAt = Date.now();
    this.#checkpointDeferred = true;
  }

  /** Keeps the most recent write-lock hold times (ms) for status and the bench. */
  #noteWriteLockHeld(ms: number): void {
    const holds = this.writeLockHoldsMs;
    holds.push(ms);
    if (holds.length > 256) holds.splice(0, holds.length - 256);
  }

  /**
   * The connection that writes (helper tables, sequence bumps, the checkpoint's write lock).
   * Opened on demand and closed after use: an idle database then costs one SQLite connection,
   * not two (about 60 KiB each, which adds up over a thousand tenants).
   */
  #writerConnection(): DatabaseSync {
    return this.#writer ??= this.#connect();
  }

  /** Closes the writer connection between uses; the reader keeps the WAL and its locks. */
  #closeWriter(): void {
    try {
      if (this.#writer?.isTransaction) this.#writer.exec("ROLLBACK");
      this.#writer?.close();
    } catch { /* reopened on next use */ }
    this.#writer = undefined;
  }

  /** Takes the database write lock on the writer connection (released by ROLLBACK). */
  async #lockWrites(): Promise<void> {
    const writer = this.#writerConnection();
    await this.#retry(() =>
      this.#withHelperTables(() => {
        writer.exec("BEGIN");
        try {
          writer.exec("INSERT INTO _litestream_lock (id) VALUES (1)");
        } catch (err) {
          writer.exec("ROLLBACK");
          throw err;
        }
      })
    );
  }

  /**
   * Runs a write that uses sluice's helper tables, re-creating them first when the application
   * dropped them (SQLite's speedtest1 drops every table between its test sets): without them
   * no checkpoint could take the write lock and replication would stop for good.
   */
  #withHelperTables<T>(write: () => T): T {
    try {
      return write();
    } catch (err) {
      if (!/no such table: _litestream_/.test((err as Error).message)) throw err;
      this.#options.logger?.warn("sluice's helper tables were dropped; re-creating them");
      this.#writerConnection().exec(HELPER_TABLES_SQL);
      return write();
    }
  }

  /**
   * Begins the read transaction again if it is gone. It is what keeps checkpoints from
   * discarding frames not yet synced, and a re-begin after a COMMIT can fail (busy for the
   * whole busy timeout while another connection checkpoints), leaving none. What this process
   * knew about the WAL since (its end, the last frame's checksum, a TRUNCATE's continuation)
   * is then void: the next sync decides as a restarted sluice would, and snapshots when the
   * WAL restarted meanwhile.
   */
  async #regainReadTx(): Promise<void> {
    if (this.#reader?.isTransaction !== false) return;
    this.#options.logger?.warn(
      "read transaction lost (a re-begin failed); checking the WAL as after a restart",
    );
    this.#syncedToWALEnd = false;
    this.#lastFrameChecksum = undefined;
    if (this.#cursor) this.#cursor.walEmptiedAfterSync = false;
    await this.#beginReadTx();
  }

  async #beginReadTx(): Promise<void> {
    await this.#retry(() => {
      this.#reader!.exec("BEGIN");
      try {
        // Any read starts the snapshot; the schema table exists even when the application
        // dropped sluice's helper tables.
        this.#reader!.prepare("SELECT COUNT(1) FROM sqlite_schema").get();
      } catch (err) {
        this.#reader!.exec("ROLLBACK");
        throw err;
      }
    });
  }

  /** Forces a WAL write (to create the WAL, or restart it after a checkpoint). */
  async #bumpSeq(): Promise<void> {
    await this.#retry(() =>
      this.#withHelperTables(() => this.#writerConnection().exec(BUMP_SEQ_SQL))
    );
  }

  /**
   * After parking, with the read transaction in place (no WAL restart can come between): the
   * parking checkpoint had backfilled every frame, so an unwritten database file means no
   * checkpoint ran since and at most one WAL generation began, from the parked state. When
   * the WAL is another file (the last close deleted it) or restarted under new salts, that
   * generation holds every commit since and continues the cursor from its start; the same
   * generation continues where the cursor ends, as usual.
   */
  async #continueAfterParking(): Promise<void> {
    const parked = this.#options.parked;
    const cursor = this.#cursor;
    if (!parked || !cursor || this.#replacedSinceCursor) return;
    const dbState = statKey(await Deno.stat(this.path).catch(() => undefined));
    if (dbState !== parked.dbState) return; // written since: the WAL decides (FORMAT.md §4.3.1)
    const header = await this.#readWALHeader();
    const sameWAL = this.#sidecarInodes.get("-wal") === parked.walIno;
    if (sameWAL && header?.salt1 === cursor.salt1 && header?.salt2 === cursor.salt2) return;
    cursor.walEmptiedAfterSync = true;
  }

  /**
   * Compares the database file with the one the local cursor was taken from. A different
   * file (moved in over the old one) makes the cursor meaningless even when a stale WAL
   * still matches it, so the next sync snapshots.
   */
  async #checkIdentity(): Promise<void> {
    const current = fileIdentity(this.#dev, this.#ino);
    const recorded = await readIdentity(this.metaDir);
    if (recorded === undefined) {
      // First run, or a meta dir from before this record existed: trust the cursor.
      if (this.#cursor) await this.#recordIdentity();
    } else if (recorded !== current && this.#cursor) {
      this.#replacedSinceCursor = "database file replaced since the last sync";
    }
  }

  /** Records the file a snapshot was just taken from (atomically: a torn record would lie). */
  async #recordIdentity(): Promise<void> {
    await writeIdentity(this.metaDir, fileIdentity(this.#dev, this.#ino));
    this.#replacedSinceCursor = undefined;
  }

  #connect(): DatabaseSync {
    const conn = new DatabaseSync(
      existingFileURL(this.path),
      { timeout: 0 } as ConstructorParameters<typeof DatabaseSync>[1],
    );
    // busy_timeout would freeze the event loop (node:sqlite is synchronous): retry async instead.
    // synchronous = NORMAL: sluice's own commits (the helper tables, the sequence bump that
    // starts a WAL) then skip their fsync, which would block the event loop for milliseconds
    // per database opened or woken. Nothing relies on them being durable: the application's
    // next commit syncs the WAL they are in, checkpoints still sync (SQLite does at NORMAL),
    // and a WAL lost to a power cut is a WAL the cursor no longer matches: a snapshot.
    try {
      conn.exec(
        "PRAGMA busy_timeout = 0; PRAGMA wal_autocheckpoint = 0; PRAGMA synchronous = NORMAL;",
      );
    } catch (err) {
      conn.close(); // the caller may try again (a busy error): no connection left behind
      throw err;
    }
    return conn;
  }

  #retry<T>(fn: () => T): Promise<T> {
    return retryBusy(fn, { timeoutMs: this.#options.busyTimeout });
  }

  #release(): void {
    for (const conn of [this.#reader, this.#writer]) {
      try {
        if (conn?.isTransaction) conn.exec("ROLLBACK");
      } catch { /* closing anyway */ }
      try {
        conn?.close();
      } catch { /* already closed */ }
    }
    this.#reader = this.#writer = undefined;
    // Descriptors last: closing one drops this process's POSIX locks on the file.
    this.#walFile?.close();
    this.#dbFile?.close();
    this.#walFile = this.#dbFile = undefined;
  }
}

/**
 * Starts the WAL of a database that has none (its last connection closed, or the file was just
 * copied in): the helper tables and the first sequence value, in one transaction on `conn`.
 *
 * The commit runs at `synchronous = OFF`: SQLite would otherwise fsync the new WAL and its
 * directory before the first frame (two fsyncs on the event loop per database opened, most
 * of a new tenant's open). That header sync guards against frames of an older WAL generation
 * being read as current after a power cut; a WAL shorter than its header has none. Nothing
 * relies on this commit being durable (see {@linkcode DB}'s `#connect`): a WAL lost to a power
 * cut is one the cursor no longer matches, which means a snapshot. The applications' own
 * connections sync the WAL and its directory entry themselves when they commit or checkpoint.
 */
function startWAL(conn: DatabaseSync): void {
  conn.exec("PRAGMA synchronous = OFF");
  try {
    conn.exec("BEGIN IMMEDIATE");
    try {
      conn.exec(HELPER_TABLES_SQL + BUMP_SEQ_SQL);
      conn.exec("COMMIT");
    } catch (err) {
      if (conn.isTransaction) conn.exec("ROLLBACK");
      throw err;
    }
  } finally {
    conn.exec("PRAGMA synchronous = NORMAL");
  }
}

/**
 * `file:` URL of `path` with `mode=rw`: SQLite then fails instead of creating a new, empty
 * database when the file was deleted between our existence check and the open (a tenant
 * removed at that moment came back as an empty database: 4 times in 1,500 under churn).
 */
function existingFileURL(path: string): URL {
  const url = pathToFileURL(path);
  url.search = "mode=rw";
  return url;
}

/** What the tripwire compares: a WAL's inode, size and modification time, or "none". */
function walStateKey(info: Deno.FileInfo | undefined): string {
  return info ? `${info.ino}:${info.size}:${info.mtime?.getTime()}` : "none";
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Size of a local file, 0 when it does not exist (synchronous, as in {@linkcode DB.open}). */
function fileSize(path: string): number {
  try {
    return Deno.statSync(path).size;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return 0;
    throw err;
  }
}

/**
 * Makes sure a WAL-mode database has its `-wal` and `-shm` before SQLite opens it: creates them
 * when missing (a new tenant, or one whose application's last connection removed them) on the
 * thread pool, with the database file's permissions. SQLite would otherwise create them at its
 * first read, on the event loop: a file creation costs ~0.3 ms of kernel time on this project's
 * machine (ext4) and waits for every other creation in that directory, and a burst of new
 * tenants paid it twice each on the one thread (−0.5 to −1.2 ms of main-thread time per new
 * tenant). No existence check first: a stat of a missing name waits for the directory just the
 * same, and opening an existing file without writing to it changes nothing.
 *
 * Safe because this process holds no SQLite connection to the database yet (the meta dir lock
 * keeps every other opener of it out, and one closing is waited for), so closing the
 * descriptors opened here drops no lock. An empty `-wal` is no WAL to SQLite (it checks the
 * size), and SQLite gives an empty `-wal` or `-shm` the database's mode and owner, as it does
 * to the files it creates. Failures are left for SQLite's own open to report.
 */
async function createSidecars(path: string, mode: number): Promise<void> {
  await Promise.all(["-wal", "-shm"].map(async (suffix) => {
    try {
      (await Deno.open(path + suffix, { write: true, create: true, mode: mode & 0o777 })).close();
    } catch { /* SQLite's own open reports it */ }
  }));
}
