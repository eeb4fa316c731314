/**
 * One database's replica: ships the local L0 files to a {@linkcode ReplicaClient} in TXID
 * order (FORMAT.md §4.3.6). The replica position is recovered from the replica's own listing, so
 * nothing but the remote files themselves records how far replication got.
 *
 * Two conditions are handled here rather than left to fail forever:
 * - a replica that lost files (emptied, or its newest files deleted behind sluice's back) is
 *   made restorable again by a new snapshot, taken as soon as a listing shows the loss;
 * - a full meta directory: the local copies of L0 files already on the replica are dropped
 *   early (their `l0-retention` cut short) so that syncs can go on.
 *
 * @module
 */

import type { LTXFileId, LTXFileInfo, ReplicaClient } from "../replica/mod.ts";
import type { FileReplicaClient } from "../replica/mod.ts";
import { decodeHeader, formatTXID, HEADER_SIZE } from "../ltx/mod.ts";
import type { Logger } from "../log/mod.ts";
import { dirname } from "node:path";

/**
 * How long the meta directory is reported full after its last "no space left" error: long
 * enough for a scrape and an alert to see it, short enough to clear once space is back.
 */
export const META_FULL_REPORT_MS = 10 * 60_000;

/** Counters exposed as metrics. */
export interface ReplicaStats {
  uploads: number;
  uploadErrors: number;
  bytesUploaded: number;
  lastUploadAt?: Date;
  lastError?: string;
  /** When `lastError` happened. */
  lastErrorAt?: Date;
  /** Snapshots taken because the replica had lost files. */
  lossSnapshots?: number;
  /** Local L0 files dropped early because the meta directory was full. */
  metaFilesDropped?: number;
}

/** Options of {@linkcode Replica}. */
export interface ReplicaOptions {
  /** Logger with the database path already attached. */
  logger?: Logger;
  /**
   * Takes a level-9 snapshot of the database at its current position on this replica and
   * resolves to its TXID. It is how a replica that lost files becomes restorable again;
   * without it such a replica fails every upload with {@linkcode ReplicaGapError}. Also
   * settable later ({@linkcode Replica.setLossSnapshot}).
   */
  lossSnapshot?: () => Promise<{ txid: number }>;
  /**
   * The replica was created just now and is empty (see {@linkcode createNewLocalReplica}): its
   * position is 0 without a listing.
   */
  empty?: boolean;
}

/** How far a replica is behind its database: what is not shipped yet. */
export interface ReplicaBacklog {
  /** The database's newest local TXID. */
  localTXID: number;
  /** The newest TXID known to be on the replica; undefined when it was never listed. */
  replicaTXID?: number;
  /** Local L0 files after the replica position. */
  files: number;
  /** Their size (LTX bytes). */
  ltxBytes: number;
  /** WAL bytes they carry (the sum of their headers' `walSize`). */
  walBytes: number;
}

/** What a failed final sync leaves behind: the backlog and the reason. */
export interface FinalSyncFailure extends ReplicaBacklog {
  /** The database. */
  path: string;
  /** Why the final sync failed. */
  error: string;
}

/** Local L0 files are missing, so the replica cannot be continued without a new snapshot. */
export class ReplicaGapError extends Error {
  /** Builds an error naming the missing TXIDs. */
  constructor(message: string) {
    super(message);
    this.name = "ReplicaGapError";
  }
}

/** Uploads a database's local L0 files to its replica. */
export class Replica {
  /** The remote storage. */
  readonly client: ReplicaClient;
  /** Counters for metrics and status. */
  readonly stats: ReplicaStats = { uploads: 0, uploadErrors: 0, bytesUploaded: 0 };
  #local: FileReplicaClient;
  #logger?: Logger;
  #position?: number;
  /** The newest position ever listed or reached; survives the errors that forget `#position`. */
  #lastConfirmed?: number;
  #oldestPending?: number;
  #lossSnapshot?: () => Promise<{ txid: number }>;
  /** Why the replica must be snapshotted before it is continued (it lost files). */
  #lossReason?: string;
  /** When the meta directory last ran out of space (ms since the epoch). */
  #metaFullAt?: number;

  /** Pairs the database's local L0 store with its remote replica. */
  constructor(client: ReplicaClient, local: FileReplicaClient, options: ReplicaOptions = {}) {
    this.client = client;
    this.#local = local;
    this.#logger = options.logger;
    this.#lossSnapshot = options.lossSnapshot;
    if (options.empty) this.#position = this.#lastConfirmed = 0;
  }

  /** Sets how a replica that lost files is snapshotted (see {@linkcode ReplicaOptions}). */
  setLossSnapshot(snapshot: () => Promise<{ txid: number }>): void {
    this.#lossSnapshot = snapshot;
  }

  /**
   * The newest TXID on the replica: max maxTXID at level 0, or at any level when level 0 is
   * empty (or behind a position seen before). Listed once, then tracked in memory; an upload
   * error forgets it. A listing below a position this process saw before means the replica
   * lost files: the next upload snapshots.
   */
  async position(): Promise<number> {
    if (this.#position !== undefined) return this.#position;
    const levels = await presentLevels(this.client);
    let max = levels.has(0) ? await maxTXID(this.client, 0) : 0;
    if (max === 0 || (this.#lastConfirmed !== undefined && max < this.#lastConfirmed)) {
      for (let level = 1; level <= 9; level++) {
        if (levels.has(level)) max = Math.max(max, await maxTXID(this.client, level));
      }
    }
    if (this.#lastConfirmed !== undefined && max < this.#lastConfirmed) {
      // Nothing sluice does ever lowers it: retention keeps every level's newest file.
      this.#lossReason ??= `its newest TXID went back from ${formatTXID(this.#lastConfirmed)} to ` +
        `${formatTXID(max)}`;
    }
    this.#position = max;
    this.#lastConfirmed = max;
    return max;
  }

  /** The cached position without a listing; undefined until known, or while it is lost. */
  get knownPosition(): number | undefined {
    return this.#lossReason === undefined ? this.#position : undefined;
  }

  /**
   * The newest TXID this process has seen on the replica, kept while an error has made the
   * cached position unknown (status and metrics still show how far the replica got).
   */
  get lastConfirmedPosition(): number | undefined {
    return this.#position ?? this.#lastConfirmed;
  }

  /**
   * Records that a listing elsewhere (the compactor's) showed files missing from the replica:
   * the next upload takes a new snapshot first, and the position is listed again.
   */
  reportLoss(reason: string): void {
    this.#lossReason ??= reason;
    this.#position = undefined;
  }

  /**
   * Whether the meta directory ran out of space within the last
   * {@linkcode META_FULL_REPORT_MS} (status and the `sluice_db_meta_disk_full` gauge).
   */
  metaDiskFull(now = Date.now()): boolean {
    return this.#metaFullAt !== undefined && now - this.#metaFullAt < META_FULL_REPORT_MS;
  }

  /**
   * Milliseconds since the oldest local change that is not yet on the replica (0 when the
   * replica is caught up). `localTXID` is the database's newest local TXID.
   */
  lag(localTXID: number, now = Date.now()): number {
    if (this.#position !== undefined && this.#position >= localTXID) return 0;
    return this.#oldestPending === undefined ? 0 : Math.max(0, now - this.#oldestPending);
  }

  /** Records that a local L0 file was written at `timestamp` (for the lag figure). */
  noteLocalWrite(timestamp: number): void {
    if (this.#oldestPending === undefined) this.#oldestPending = timestamp;
  }

  /**
   * Uploads every local L0 file after the replica position up to `localTXID`, one at a time,
   * in order. Returns the new replica position. A replica that lost files, or that the local
   * files cannot continue (the files after its position were deleted locally once shipped),
   * first gets a new snapshot; the files after it follow.
   * @throws {ReplicaGapError} when a needed local file is missing and no snapshot can be taken.
   * `newest`, when given, describes the local L0 file just written (saves its stat).
   * @throws the client's error; the cached position is then forgotten and re-listed next time.
   */
  async upload(localTXID: number, newest?: LTXFileInfo): Promise<number> {
    let position = 0;
    try {
      // Inside the try: a replica that cannot even be listed is an upload error too (metrics).
      position = await this.position();
      if (this.#lossReason !== undefined) {
        // The local files that continue what is left keep level 0 free of holes; the snapshot
        // makes the replica restorable whether they do or not.
        const listed = position;
        const snapshotTXID = await this.#snapshotAfterLoss();
        position = await this.#localContinues(listed) ? listed : snapshotTXID;
        this.#position = this.#lastConfirmed = position;
      }
      for (let snapshotted = false; position < localTXID;) {
        const reached = await this.#uploadFrom(position, localTXID, newest);
        position = reached.position;
        if (reached.next === undefined) break;
        const reason = `it ends at TXID ${formatTXID(position)} and the local L0 files in ` +
          `${this.#local.root} continue only from ${formatTXID(reached.next)}`;
        if (snapshotted || !this.#lossSnapshot) {
          throw new ReplicaGapError(
            `the replica ${this.client.location} cannot be continued: ${reason}; take a snapshot ` +
              `(sluice snapshot) to start it again`,
          );
        }
        this.#lossReason = reason;
        position = await this.#snapshotAfterLoss();
        snapshotted = true;
      }
    } catch (err) {
      this.stats.uploadErrors++;
      this.stats.lastError = (err as Error).message;
      this.stats.lastErrorAt = new Date();
      this.#position = undefined;
      throw err;
    }
    if (position >= localTXID) this.#oldestPending = undefined;
    return position;
  }

  /**
   * Uploads the local files that continue `position`, up to `localTXID`. Returns the position
   * reached, and `next`, the first local file after it, when that one does not continue it.
   */
  async #uploadFrom(
    position: number,
    localTXID: number,
    newest?: LTXFileInfo,
  ): Promise<{ position: number; next?: number }> {
    if (localTXID === position + 1) {
      // The usual sync: one new file, which the database just described, or whose name is
      // known: no listing of the whole level (a directory read per sync, on every tenant).
      const next = newest?.level === 0 && newest.minTXID === localTXID &&
          newest.maxTXID === localTXID
        ? newest
        : await this.#localL0File(localTXID);
      if (next) {
        await this.#uploadOne(next);
        this.#position = this.#lastConfirmed = localTXID;
        this.#oldestPending = undefined;
        return { position: localTXID };
      }
    }
    for await (const file of this.#local.ltxFiles(0, { seekTXID: position + 1 })) {
      if (file.minTXID > localTXID) break;
      if (file.minTXID !== position + 1) return { position, next: file.minTXID };
      await this.#uploadOne(file);
      position = file.maxTXID;
      this.#position = position;
      this.#lastConfirmed = position;
      this.#oldestPending = position >= localTXID ? undefined : this.#oldestPending;
    }
    return { position };
  }

  /** The local L0 file holding exactly `txid`, as a listing would describe it; or undefined. */
  async #localL0File(txid: number): Promise<LTXFileInfo | undefined> {
    const id: LTXFileId = { level: 0, minTXID: txid, maxTXID: txid };
    const stat = await Deno.stat(this.#local.filePath(id)).catch(() => undefined);
    if (!stat?.isFile) return undefined;
    return { ...id, size: stat.size, createdAt: stat.mtime ?? new Date(0) };
  }

  /** Whether the local L0 files continue the replica from `position` (none after it: no). */
  async #localContinues(position: number): Promise<boolean> {
    for await (const file of this.#local.ltxFiles(0, { seekTXID: position + 1 })) {
      return file.minTXID === position + 1;
    }
    return false;
  }

  /**
   * The replica lost files: without a new snapshot it restores to an older state, or not at
   * all. Takes one (at the database's newest TXID, so nothing before it needs shipping) and
   * continues after it.
   */
  async #snapshotAfterLoss(): Promise<number> {
    const reason = this.#lossReason!;
    const snapshot = this.#lossSnapshot;
    if (!snapshot) {
      throw new ReplicaGapError(
        `the replica ${this.client.location} lost files (${reason}); take a snapshot ` +
          `(sluice snapshot) to start it again`,
      );
    }
    this.#logger?.warn(
      "the replica lost files (emptied, or files deleted behind sluice's back); taking a new " +
        "snapshot now so that it can be restored again",
      { replica: this.client.location, reason },
    );
    const { txid } = await snapshot();
    this.#lossReason = undefined;
    this.#position = txid;
    this.#lastConfirmed = txid;
    this.stats.lossSnapshots = (this.stats.lossSnapshots ?? 0) + 1;
    this.#logger?.warn("new snapshot written; the replica continues from it", {
      txid: formatTXID(txid),
    });
    return txid;
  }

  async #uploadOne(file: LTXFileInfo): Promise<void> {
    const id: LTXFileId = { level: 0, minTXID: file.minTXID, maxTXID: file.maxTXID };
    if (this.client.copyLTXFile) {
      // Directory to directory: a kernel copy, not a stream through this process.
      await this.client.copyLTXFile(id, this.#local.filePath(id), file.createdAt.getTime());
    } else {
      const body = await this.#local.openLTXFile(id);
      await this.client.writeLTXFile(id, body, file.createdAt.getTime());
    }
    this.stats.uploads++;
    this.stats.bytesUploaded += file.size;
    this.stats.lastUploadAt = new Date();
    this.#logger?.debug("uploaded", { txid: formatTXID(file.maxTXID), bytes: file.size });
  }

  /**
   * Deletes local L0 files that are already on the replica and older than `retentionMs`,
   * always keeping the newest local file (it is the WAL cursor).
   */
  async cleanupLocal(retentionMs: number, now = Date.now()): Promise<number> {
    const position = this.#position;
    if (position === undefined) return 0;
    const files: LTXFileInfo[] = [];
    for await (const f of this.#local.ltxFiles(0)) files.push(f);
    const doomed = files.slice(0, -1).filter((f) =>
      f.maxTXID <= position && now - f.createdAt.getTime() >= retentionMs
    );
    if (doomed.length > 0) await this.#local.deleteLTXFiles(doomed);
    return doomed.length;
  }

  /**
   * Makes room after a sync failed for lack of space in the meta directory: ships what is
   * waiting, then deletes every local L0 file already on the replica except the newest (the
   * persisted cursor), whatever `l0-retention` says: those copies only spare the compactor a
   * download. The condition is logged once per episode and shown by {@linkcode metaDiskFull}.
   * @returns true when files were deleted (sync again), false when `err` is not "no space"
   * or nothing could be freed (the replica is behind: nothing local may go yet).
   */
  async relieveFullMetaDir(err: unknown, localTXID: number): Promise<boolean> {
    if (!isNoSpace(err)) return false;
    const now = Date.now();
    const newEpisode = !this.metaDiskFull(now);
    this.#metaFullAt = now;
    // Shipped files are what may go: ship what is waiting first. A failure here (the replica
    // is down too) leaves those confirmed before, not a new error.
    await this.upload(localTXID).catch(() => {});
    const position = this.lastConfirmedPosition ?? 0;
    const files: LTXFileInfo[] = [];
    for await (const f of this.#local.ltxFiles(0)) files.push(f);
    const doomed = files.slice(0, -1).filter((f) => f.maxTXID <= position);
    if (doomed.length > 0) await this.#local.deleteLTXFiles(doomed);
    this.stats.metaFilesDropped = (this.stats.metaFilesDropped ?? 0) + doomed.length;
    if (newEpisode) {
      this.#logger?.warn(
        "meta directory is full: deleting the local copies of L0 files already on the " +
          "replica (l0-retention cut short) and going on; give it more space",
        {
          meta: this.#local.root,
          deleted: doomed.length,
          freedBytes: doomed.reduce((sum, f) => sum + f.size, 0),
          waiting: files.filter((f) => f.maxTXID > position).length,
        },
      );
    }
    return doomed.length > 0;
  }

  /**
   * How far the replica is behind `localTXID`: the local L0 files after the newest position
   * confirmed on the replica, their bytes and the WAL bytes they carry.
   */
  async backlog(localTXID: number): Promise<ReplicaBacklog> {
    const replicaTXID = this.lastConfirmedPosition;
    const backlog: ReplicaBacklog = { localTXID, replicaTXID, files: 0, ltxBytes: 0, walBytes: 0 };
    for await (const file of this.#local.ltxFiles(0, { seekTXID: (replicaTXID ?? 0) + 1 })) {
      if (file.minTXID > localTXID) break;
      backlog.files++;
      backlog.ltxBytes += file.size;
      const head = await this.#local.openLTXFile(file, { length: HEADER_SIZE });
      backlog.walBytes += decodeHeader(new Uint8Array(await new Response(head).arrayBuffer()))
        .walSize;
    }
    return backlog;
  }

  /**
   * Logs a failed final sync with how far behind it leaves the replica, and returns that.
   * The backlog is best effort: when the meta directory cannot be read, only TXIDs are given.
   */
  async finalSyncFailed(path: string, err: unknown, localTXID: number): Promise<FinalSyncFailure> {
    const error = err instanceof Error ? err.message : String(err);
    const backlog = await this.backlog(localTXID).catch((): ReplicaBacklog => ({
      localTXID,
      replicaTXID: this.lastConfirmedPosition,
      files: 0,
      ltxBytes: 0,
      walBytes: 0,
    }));
    this.#logger?.error("final sync failed; the replica is behind", {
      error,
      localTXID: formatTXID(localTXID),
      replicaTXID: backlog.replicaTXID === undefined ? "unknown" : formatTXID(backlog.replicaTXID),
      files: backlog.files,
      ltxBytes: backlog.ltxBytes,
      walBytes: backlog.walBytes,
    });
    return { path, error, ...backlog };
  }
}

/** Whether `err` (or an error it wraps) is the file system's "no space left on device". */
export function isNoSpace(err: unknown): boolean {
  for (let e = err; e instanceof Error; e = e.cause) {
    if ((e as Error & { code?: unknown }).code === "ENOSPC") return true;
  }
  return false;
}

/** Every level a replica can hold files at (FORMAT.md §2). */
const ALL_LEVELS: ReadonlySet<number> = new Set([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);

/**
 * The levels worth listing for the position. A replica on this machine's file system
 * (`localPath`: `<root>/ltx/<level>/<file>`, the layout the follower watches too) says with
 * one directory listing which level directories exist: a new tenant's replica then costs one
 * listing instead of ten. Every level otherwise, and whenever that listing fails.
 */
async function presentLevels(client: ReplicaClient): Promise<ReadonlySet<number>> {
  const path = client.localPath?.({ level: 0, minTXID: 1, maxTXID: 1 });
  if (path === undefined) return ALL_LEVELS;
  const ltxDir = dirname(dirname(path));
  const levels = new Set<number>();
  try {
    for await (const entry of Deno.readDir(ltxDir)) {
      const level = /^\d$/.test(entry.name) ? Number(entry.name) : undefined;
      if (level !== undefined && !entry.isFile) levels.add(level);
    }
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return levels; // nothing replicated yet
    return ALL_LEVELS; // the listing of each level reports what is wrong
  }
  return levels;
}

/**
 * For a replica in a local directory (`localPath`, laid out as `<root>/ltx/<level>/<file>`)
 * whose root does not exist yet: creates the root and its level-0 directory, so that the first
 * upload links its file straight into place. @returns true when this call created the root: the
 * replica is new and empty (no owner marker, no temporary files, no level to list). False for
 * other backends and whenever the root exists (or cannot be created: the claim then says why).
 */
export async function createNewLocalReplica(client: ReplicaClient): Promise<boolean> {
  const path = client.localPath?.({ level: 0, minTXID: 1, maxTXID: 1 });
  if (path === undefined) return false;
  const levelDir = dirname(path);
  const root = dirname(dirname(levelDir));
  // Not recursive: only a root this call created makes the replica new.
  const create = () => Deno.mkdir(root).then(() => true, (err) => err);
  let created = await create();
  if (created instanceof Deno.errors.NotFound) {
    // The parent is missing too (the first tenant of a `dir:` entry's replica).
    await Deno.mkdir(dirname(root), { recursive: true }).catch(() => {});
    created = await create();
  }
  if (created !== true) return false;
  await Deno.mkdir(levelDir, { recursive: true, mode: 0o755 });
  return true;
}

async function maxTXID(client: ReplicaClient, level: number): Promise<number> {
  let max = 0;
  for await (const f of client.ltxFiles(level)) max = Math.max(max, f.maxTXID);
  return max;
}
