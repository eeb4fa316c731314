/**
 * Attaching a database to its replica: the one sequence every writer of L0 files goes through
 * (the {@linkcode Store} of `sluice replicate`, the daemonless `sluice snapshot`, exec and
 * directory tenants), so that none of them can skip a safety check.
 *
 * In order: the meta directory lock (one writer of the L0 files), the database opened for
 * replication, the replica client, the replica's owner marker (one database per replica),
 * temporary files of a killed writer removed (a client capability), and the replica position:
 * a database behind its replica continues the replica's TXID sequence. A new database's
 * directory replica that does not exist yet is created first and known empty: its marker is
 * created without a read, and there are no temporary files to remove nor levels to list.
 *
 * @module
 */

import type { Logger } from "../log/mod.ts";
import { formatTXID } from "../ltx/mod.ts";
import {
  checkReplicaContent,
  type LTXFileInfo,
  type ReplicaClient,
  SNAPSHOT_LEVEL,
} from "../replica/mod.ts";
import { DB, type DBOptions } from "./db.ts";
import { createNewLocalReplica, Replica } from "./shipper.ts";
import type { MetaLock } from "./meta_lock.ts";
import { claimOwnership, leasedClient } from "./_lease.ts";

/** What {@linkcode attachDatabase} needs to know about a database. */
export interface AttachEntry extends Omit<DBOptions, "logger"> {
  /** Absolute database path. */
  path: string;
  /** Creates the replica client (called once per attach). */
  createClient: () => ReplicaClient;
}

/** Options of {@linkcode attachDatabase}. */
export interface AttachOptions {
  logger?: Logger;
  /**
   * Takes the meta directory lock (e.g. {@linkcode lockMetaDir} naming this process), or hands
   * over one already held. Called before the database is opened when the file exists, after
   * it otherwise (nothing is created beside a missing database).
   */
  lock: () => Promise<MetaLock>;
  /** Take over the replica's owner lease from whoever holds it (`replicate --takeover`). */
  takeover?: boolean;
}

/** A database attached to its replica; the caller owns all three and detaches when done. */
export interface Attachment {
  db: DB;
  replica: Replica;
  lock: MetaLock;
}

/**
 * Attaches `entry`'s database to its replica. On failure everything taken so far is released.
 * @throws {MetaDirLockedError} when another process holds the meta directory (from `lock`).
 * @throws {ReplicaInUseError} when the replica belongs to another database.
 * @throws {DatabaseOpenError} | {ReplicaError} when the database or the replica cannot be read.
 */
export async function attachDatabase(
  entry: AttachEntry,
  options: AttachOptions,
): Promise<Attachment> {
  const { logger } = options;
  const db = new DB(entry.path, { ...entry, logger });
  let client: ReplicaClient | undefined;
  let lock: MetaLock | undefined;
  try {
    // One process at a time may write a database's L0 files (meta_lock.ts). Locked before
    // opening, but only for an existing file: nothing is created beside a missing database.
    if (exists(entry.path)) lock = await options.lock();
    await db.open();
    lock ??= await options.lock();
    client = entry.createClient();
    // A database without local history (a new tenant) whose directory replica does not exist
    // yet: the replica is new and empty, which spares the attach a marker read, a temp-file
    // sweep and a level listing (each a failed file-system call, with its error, on the event
    // loop) and the first upload a failed link.
    const fresh = db.txid === 0 && await createNewLocalReplica(client);
    // Two databases writing one replica would interleave their TXIDs: the first one owns it
    // (the owner marker, or on object storage a renewed lease, src/engine/_lease.ts).
    const lease = await claimOwnership(client, entry.path, {
      takeover: options.takeover,
      logger,
      markerAbsent: fresh,
    });
    if (lease?.mode === "lease") client = leasedClient(client, lease);
    // A fresh replica was ours (claimed above) from its creation on: nobody left temp files.
    if (!fresh) await client.removeTempFiles?.();
    const replica = new Replica(client, db.local, { logger, empty: fresh });
    // A database behind its replica (restored from an older backup, or a lost meta dir)
    // continues the replica's TXID sequence instead of colliding with it.
    const remote = await replica.position();
    // Encrypted and plaintext files never mix on one replica (src/replica/age.ts).
    await checkReplicaContent(client, remote);
    if (remote > db.txid) {
      // The DB takes a snapshot next: whatever is at the path continues the TXID sequence
      // without ever being mixed with the history before `remote` (a new database at an
      // old tenant's path, a lost meta dir).
      await db.adoptReplicaPosition(client, await replicaFileEndingAt(client, remote));
    } else if (remote < db.txid) {
      // Local L0 files left from a previous run are not on the replica yet: the lag figure
      // starts at the oldest of them, not at the next write.
      for await (const file of db.local.ltxFiles(0, { seekTXID: remote + 1 })) {
        replica.noteLocalWrite(file.createdAt.getTime());
        break;
      }
    }
    return { db, replica, lock };
  } catch (err) {
    await db.close().catch(() => {});
    await client?.close().catch(() => {});
    lock?.release();
    throw err;
  }
}

/** Whether `path` exists (synchronous: a stat of a local file takes microseconds). */
function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Releases what {@linkcode attachDatabase} took: the database, the client, then the lock. */
export async function detachDatabase(attachment: Attachment): Promise<void> {
  try {
    await attachment.db.close();
    await attachment.replica.client.close();
  } finally {
    attachment.lock.release();
  }
}

/**
 * The replica's file that ends at `txid` (its position): the newest level-0 file, or, when
 * level 0 does not reach that far (bucket lifecycle rules expired it), the smallest file of
 * another level that does. Only listed: the caller streams it (it may be a full image).
 * @throws {Error} when no file ends at `txid` (the replica changed since it was listed).
 */
async function replicaFileEndingAt(client: ReplicaClient, txid: number): Promise<LTXFileInfo> {
  let found: LTXFileInfo | undefined;
  for (let level = 0; level <= SNAPSHOT_LEVEL && !found; level++) {
    for await (const file of client.ltxFiles(level)) {
      if (file.maxTXID === txid && (!found || file.size < found.size)) found = file;
    }
  }
  if (!found) {
    throw new Error(
      `no file of replica ${client.location} ends at its position ${formatTXID(txid)}; ` +
        `it changed while being read, will retry`,
    );
  }
  return found;
}
