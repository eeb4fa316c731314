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
 * Only file replicas carry the marker so far: the S3 client exposes no way to read or write a
 * key outside its LTX layout (see {@linkcode markerStoreFor}).
 *
 * @module
 */

import { join } from "node:path";
import type { ReplicaClient } from "./replica/client.ts";
import { FileReplicaClient } from "./replica/file.ts";

/** File name of the marker at the root of a replica. */
export const MARKER_NAME = "sluice-owner.json";

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

/** Where a backend keeps the marker. */
export interface MarkerStore {
  /** Where the marker is, for messages. */
  readonly path: string;
  /** The marker's text, or undefined when there is none. */
  read(): Promise<string | undefined>;
  /** Creates the marker unless one exists; false when another process created it first. */
  createExclusive(text: string): Promise<boolean>;
}

/** The marker store of `client`, or undefined when the backend cannot hold one yet (S3). */
export function markerStoreFor(client: ReplicaClient): MarkerStore | undefined {
  if (client instanceof FileReplicaClient) return fileMarkerStore(client.root);
  return undefined;
}

/** A marker at `<root>/sluice-owner.json`, created with O_EXCL so two claimants cannot both win. */
export function fileMarkerStore(root: string): MarkerStore {
  const path = join(root, MARKER_NAME);
  return {
    path,
    async read() {
      try {
        return await Deno.readTextFile(path);
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) return undefined;
        throw err;
      }
    },
    async createExclusive(text) {
      await Deno.mkdir(root, { recursive: true });
      const tmp = `${path}.${Deno.pid}-${crypto.randomUUID().slice(0, 8)}.tmp`;
      await Deno.writeTextFile(tmp, text);
      try {
        // link() fails if the marker exists: atomic and never half-written.
        await Deno.link(tmp, path);
        return true;
      } catch (err) {
        if (err instanceof Deno.errors.AlreadyExists) return false;
        throw err;
      } finally {
        await Deno.remove(tmp).catch(() => {});
      }
    },
  };
}

/**
 * Claims the replica of `client` for the database at `dbPath` (absolute), or checks that it is
 * already ours. A marker that cannot be parsed is treated as foreign: refusing is safe, guessing
 * is not.
 * @throws {ReplicaInUseError} when the replica belongs to another database.
 */
export async function claimReplica(
  client: ReplicaClient,
  dbPath: string,
  store: MarkerStore | undefined = markerStoreFor(client),
): Promise<void> {
  if (!store) return;
  for (let attempt = 0; attempt < 2; attempt++) {
    const text = await store.read();
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
