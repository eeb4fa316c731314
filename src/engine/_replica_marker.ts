/**
 * The owner marker of a replica: which database replicates into it.
 *
 * Two databases pointed at one replica path would interleave their TXIDs and compactions and
 * leave a replica that restores to neither. The first database to replicate there records
 * itself in `<replica>/sluice-owner.json`; any other database is refused with
 * {@linkcode ReplicaInUseError}. The marker names the database by its absolute path only (not
 * the host): a container redeployed on a new host with the same path is the same database.
 * Litestream ignores the file (it only reads `ltx/`), so replicas stay compatible.
 *
 * Only backends with the `ownerMarker` capability carry the marker (file replicas so far: the S3
 * client exposes no way to read or write a key outside its LTX layout).
 *
 * @module
 */

import type { OwnerMarker, ReplicaClient } from "../replica/mod.ts";

/** What the marker records. */
export interface ReplicaOwner {
  /** Absolute path of the database that replicates here. */
  db: string;
  /** Host name of the first process that claimed it (informational). */
  host?: string;
  /** When it was claimed (RFC 3339). */
  since?: string;
}

/** The replica belongs to another database. */
export class ReplicaInUseError extends Error {
  /** The database recorded in the marker. */
  readonly owner: ReplicaOwner;
  /** Builds an error naming the replica, its owner, the refused database and the fix. */
  constructor(location: string, owner: ReplicaOwner, dbPath: string, markerPath: string) {
    super(
      `replica ${location} belongs to database ${owner.db}, not ${dbPath}; give each ` +
        `database its own replica path (or delete ${markerPath} if ${owner.db} is gone for good)`,
    );
    this.name = "ReplicaInUseError";
    this.owner = owner;
  }
}

/**
 * Claims the replica of `client` for the database at `dbPath` (absolute), or checks that it is
 * already ours. A marker that cannot be parsed is treated as foreign: refusing is safe, guessing
 * is not. `options.absent`: the replica was created just now, so the first read is skipped (the
 * exclusive creation still fails if another claimant won, and its marker is then read).
 * @throws {ReplicaInUseError} when the replica belongs to another database.
 */
export async function claimReplica(
  client: ReplicaClient,
  dbPath: string,
  store: OwnerMarker | undefined = client.ownerMarker?.(),
  options: { absent?: boolean } = {},
): Promise<void> {
  if (!store) return;
  for (let attempt = 0; attempt < 2; attempt++) {
    const text = attempt === 0 && options.absent ? undefined : await store.read();
    if (text !== undefined) {
      const owner = parseOwner(text);
      if (owner.db === dbPath) return;
      throw new ReplicaInUseError(client.location, owner, dbPath, store.path);
    }
    const record: ReplicaOwner = {
      db: dbPath,
      host: Deno.hostname(),
      since: new Date().toISOString(),
    };
    if (await store.createExclusive(JSON.stringify(record) + "\n")) return;
    // Lost a race with another claimant: read what it wrote.
  }
}

function parseOwner(text: string): ReplicaOwner {
  try {
    const value = JSON.parse(text) as ReplicaOwner;
    if (typeof value?.db === "string") return value;
  } catch { /* fall through */ }
  return { db: `(unreadable marker: ${JSON.stringify(text.slice(0, 80))})` };
}
