/**
 * `<meta>/db-identity`: which database file (device and inode) the local L0 files describe.
 * A different file moved in over the old one makes the local cursor meaningless even when a
 * stale WAL still matches it, so the DB snapshots on its next sync.
 *
 * @module
 */

import { join } from "node:path";

const IDENTITY_FILE = "db-identity";

/** The identity of a database file as recorded: `<dev>:<ino>`. */
export function fileIdentity(dev?: number | null, ino?: number | null): string {
  return `${dev ?? 0}:${ino ?? 0}`;
}

/**
 * The recorded identity, or undefined when none was recorded yet.
 * @throws every error but `NotFound` from reading the record.
 */
export async function readIdentity(metaDir: string): Promise<string | undefined> {
  return await Deno.readTextFile(join(metaDir, IDENTITY_FILE)).then(
    (text) => text.trim(),
    (err) => {
      if (err instanceof Deno.errors.NotFound) return undefined;
      throw err;
    },
  );
}

/** Records `identity` atomically (a torn record would lie). */
export async function writeIdentity(metaDir: string, identity: string): Promise<void> {
  const path = join(metaDir, IDENTITY_FILE);
  const tmp = `${path}.tmp`;
  await Deno.writeTextFile(tmp, `${identity}\n`);
  await Deno.rename(tmp, path);
}

/**
 * Records an identity that matches no file, so that the next open snapshots: written before a
 * cursor adopted from the replica, a crash before that snapshot cannot leave the cursor trusted.
 */
export async function markIdentityAdopted(metaDir: string): Promise<void> {
  await Deno.writeTextFile(join(metaDir, IDENTITY_FILE), "adopted from the replica\n");
}
