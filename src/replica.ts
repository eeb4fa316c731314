/**
 * One database's replica: ships the local L0 files to a {@linkcode ReplicaClient} in TXID
 * order (spec §4.3.6). The replica position is recovered from the replica's own listing, so
 * nothing but the remote files themselves records how far replication got.
 *
 * @module
 */

import type { LTXFileId, LTXFileInfo, ReplicaClient } from "./replica/client.ts";
import { FileReplicaClient } from "./replica/file.ts";
import type { Logger } from "./log.ts";

/** Counters exposed as metrics. */
export interface ReplicaStats {
  uploads: number;
  uploadErrors: number;
  bytesUploaded: number;
  lastUploadAt?: Date;
  lastError?: string;
  /** When `lastError` happened. */
  lastErrorAt?: Date;
}

/** Options of {@linkcode Replica}. */
export interface ReplicaOptions {
  /** Logger with the database path already attached. */
  logger?: Logger;
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

  /** Pairs the database's local L0 store with its remote replica. */
  constructor(client: ReplicaClient, local: FileReplicaClient, options: ReplicaOptions = {}) {
    this.client = client;
    this.#local = local;
    this.#logger = options.logger;
  }

  /**
   * The newest TXID on the replica: max maxTXID at level 0, or at any level when level 0 is
   * empty. Listed once, then tracked in memory; an upload error forgets it.
   */
  async position(): Promise<number> {
    if (this.#position !== undefined) return this.#position;
    let max = await maxTXID(this.client, 0);
    if (max === 0) {
      for (let level = 1; level <= 9; level++) {
        max = Math.max(max, await maxTXID(this.client, level));
      }
    }
    this.#position = max;
    this.#lastConfirmed = Math.max(this.#lastConfirmed ?? 0, max);
    return max;
  }

  /** The cached position without a listing; undefined until known. */
  get knownPosition(): number | undefined {
    return this.#position;
  }

  /**
   * The newest TXID this process has seen on the replica, kept while an error has made the
   * cached position unknown (status and metrics still show how far the replica got).
   */
  get lastConfirmedPosition(): number | undefined {
    return this.#position ?? this.#lastConfirmed;
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
   * in order. Returns the new replica position.
   * @throws {ReplicaGapError} when a needed local file is missing.
   * @throws the client's error; the cached position is then forgotten and re-listed next time.
   */
  async upload(localTXID: number): Promise<number> {
    let position = 0;
    try {
      // Inside the try: a replica that cannot even be listed is an upload error too (metrics).
      position = await this.position();
      if (position >= localTXID) {
        this.#oldestPending = undefined;
        return position;
      }
      for await (const file of this.#local.ltxFiles(0, { seekTXID: position + 1 })) {
        if (file.minTXID > localTXID) break;
        if (file.minTXID !== position + 1) {
          throw new ReplicaGapError(
            `local L0 files ${hex(position + 1)}…${hex(file.minTXID - 1)} are missing in ` +
              `${this.#local.location}; the replica cannot be continued from ${hex(position)}`,
          );
        }
        await this.#uploadOne(file);
        position = file.maxTXID;
        this.#position = position;
        this.#lastConfirmed = position;
        this.#oldestPending = position >= localTXID ? undefined : this.#oldestPending;
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

  async #uploadOne(file: LTXFileInfo): Promise<void> {
    const id: LTXFileId = { level: 0, minTXID: file.minTXID, maxTXID: file.maxTXID };
    if (this.client instanceof FileReplicaClient) {
      // Directory to directory: a kernel copy, not a stream through this process.
      await this.client.copyLTXFile(id, this.#local.filePath(id), file.createdAt.getTime());
    } else {
      const body = await this.#local.openLTXFile(id);
      await this.client.writeLTXFile(id, body, file.createdAt.getTime());
    }
    this.stats.uploads++;
    this.stats.bytesUploaded += file.size;
    this.stats.lastUploadAt = new Date();
    this.#logger?.debug("uploaded", { txid: hex(file.maxTXID), bytes: file.size });
  }

  /**
   * Reads the replica's newest L0 file (for a database found behind its replica).
   * Returns undefined when the replica is empty.
   */
  async newestFile(): Promise<{ txid: number; bytes: Uint8Array } | undefined> {
    let newest: LTXFileInfo | undefined;
    for await (const f of this.client.ltxFiles(0)) newest = f;
    if (!newest) return undefined;
    const stream = await this.client.openLTXFile(newest);
    const bytes = new Uint8Array(await new Response(stream).arrayBuffer());
    return { txid: newest.maxTXID, bytes };
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
}

async function maxTXID(client: ReplicaClient, level: number): Promise<number> {
  let max = 0;
  for await (const f of client.ltxFiles(level)) max = Math.max(max, f.maxTXID);
  return max;
}

function hex(txid: number): string {
  return txid.toString(16).padStart(16, "0");
}
