/**
 * The write of a small L0 file, kept off the commit-to-replica path as far as it safely can:
 * the file is encoded in memory, written once, fsynced and renamed into place, and the fsync
 * of its directory (which makes the rename itself durable) runs while the file is shipped.
 *
 * Why the directory fsync may wait: until it completes, a crash can only lose the rename of
 * the newest L0 file, never leave a torn one (the file's own data was fsynced before its
 * rename). The local cursor is then one file behind; if the lost file had reached the
 * replica meanwhile, the next start finds the replica ahead and continues it with a snapshot
 * (see `DB.adoptReplicaPosition`), and otherwise it is simply written again. The next sync
 * waits for the pending directory fsync before it writes, so at most one file is ever in
 * that state.
 *
 * Measured on ext4 shared with other jobs: each fsync on the path to the replica costs 1–5 ms
 * typically and up to 90 ms when the disk is busy; this takes one of three off that path.
 *
 * @module
 */

import { dirname } from "node:path";
import { syncDirectory, writeAll } from "../replica/mod.ts";

/**
 * A {@linkcode WritableStream} that collects what an encoder writes, for
 * {@linkcode collected}.
 */
export class ByteCollector {
  #chunks: Uint8Array[] = [];
  #size = 0;
  /** The sink to hand to the encoder. */
  readonly writable: WritableStream<Uint8Array> = new WritableStream({
    write: (chunk) => {
      // Copied: an encoder may reuse its buffer once the write resolves.
      this.#chunks.push(chunk.slice());
      this.#size += chunk.length;
    },
  });

  /** Everything written so far, as one array. */
  collected(): Uint8Array {
    if (this.#chunks.length === 1) return this.#chunks[0];
    const all = new Uint8Array(this.#size);
    let at = 0;
    for (const chunk of this.#chunks) {
      all.set(chunk, at);
      at += chunk.length;
    }
    return all;
  }
}

/**
 * Writes `bytes` as `path` atomically: `<path>.tmp`, written, its mtime set to `timestamp`
 * (the file's `createdAt` in listings), fsynced, renamed into place. Resolves once the file
 * is visible and its data durable; the returned `dirSynced` settles once the rename is
 * durable too (see the module documentation).
 * @throws the file system's error (the temp file is removed); ENOSPC keeps its `code`.
 */
export async function writeL0File(
  path: string,
  bytes: Uint8Array,
  timestamp: number,
): Promise<{ dirSynced: Promise<void> }> {
  const tmpPath = `${path}.tmp`;
  const open = () => Deno.open(tmpPath, { write: true, create: true, truncate: true, mode: 0o644 });
  let file: Deno.FsFile | undefined;
  try {
    file = await open().catch(async (err) => {
      // The level directory went away (meta dir removed by hand): create it, as the client does.
      if (!(err instanceof Deno.errors.NotFound)) throw err;
      await Deno.mkdir(dirname(path), { recursive: true, mode: 0o755 });
      return await open();
    });
    await writeAll(file, bytes);
    const createdAt = new Date(timestamp);
    await file.utime(createdAt, createdAt);
    await file.sync();
    file.close();
    file = undefined;
    await Deno.rename(tmpPath, path);
  } catch (err) {
    file?.close();
    await Deno.remove(tmpPath).catch(() => {});
    throw err;
  }
  const dirSynced = syncDirectory(dirname(path));
  // Awaited by the next write; must not count as unhandled before that.
  dirSynced.catch(() => {});
  return { dirSynced };
}
