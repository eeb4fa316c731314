/**
 * The meta directory lock: only one process may write a database's L0 files.
 *
 * The meta directory's files are the WAL cursor, and two writers would both claim the next TXID.
 * Whoever replicates or snapshots a database holds an exclusive `flock` on `<meta>/lock`
 * (advisory, on a file of its own, so it never touches SQLite's locks; released by the kernel if
 * the process dies). The lock file's content names the holder: its pid, its command, and for a
 * `replicate` process the Unix socket of its control channel (see src/daemon/control.ts).
 *
 * @module
 */

import { join } from "node:path";

/** Name of the lock file inside a meta directory. */
export const LOCK_FILE = "lock";

/** Who holds a meta directory's lock (the lock file's content). */
export interface LockHolder {
  pid: number;
  /** "replicate" or "snapshot". */
  command: string;
  /** The holder's control socket, when it serves one. */
  socket?: string;
  /** When the lock was taken (RFC 3339). */
  since?: string;
}

/** Another process holds the meta directory's lock. */
export class MetaDirLockedError extends Error {
  /** The holder, when its lock file could be read. */
  readonly holder?: LockHolder;
  /** Builds an error naming the meta directory and the holder. */
  constructor(metaDir: string, holder?: LockHolder) {
    super(
      `${metaDir} is in use by ${
        holder ? `sluice ${holder.command} (pid ${holder.pid})` : "another sluice process"
      }; only one process may replicate a database at a time`,
    );
    this.name = "MetaDirLockedError";
    this.holder = holder;
  }
}

/** A held meta directory lock. */
export class MetaLock {
  /** Path of the lock file. */
  readonly path: string;
  #file?: Deno.FsFile;

  /** Wraps an open, locked file. Use {@linkcode tryLockMetaDir} to get one. */
  constructor(path: string, file: Deno.FsFile) {
    this.path = path;
    this.#file = file;
  }

  /** Releases the lock (closing the descriptor releases the flock). Idempotent. */
  release(): void {
    const file = this.#file;
    this.#file = undefined;
    try {
      file?.close();
    } catch { /* already closed */ }
  }
}

/**
 * Takes `<metaDir>/lock` without waiting and records `holder` in it. Creates the directory.
 * @returns the lock, or undefined when another process (or another open of it) holds it.
 */
export async function tryLockMetaDir(
  metaDir: string,
  holder: Omit<LockHolder, "pid" | "since">,
): Promise<MetaLock | undefined> {
  await Deno.mkdir(metaDir, { recursive: true });
  const path = join(metaDir, LOCK_FILE);
  // Never truncate on open: the content belongs to whoever holds the lock.
  const file = await Deno.open(path, { read: true, write: true, create: true, mode: 0o644 });
  let locked = false;
  try {
    locked = await file.tryLock(true);
    if (!locked) {
      file.close();
      return undefined;
    }
    const record: LockHolder = { pid: Deno.pid, ...holder, since: new Date().toISOString() };
    const bytes = new TextEncoder().encode(JSON.stringify(record) + "\n");
    // Written from offset 0: the descriptor was just opened, and truncating does not move it.
    await file.truncate(0);
    for (let written = 0; written < bytes.length;) {
      written += await file.write(bytes.subarray(written));
    }
    return new MetaLock(path, file);
  } catch (err) {
    file.close();
    throw err;
  }
}

/**
 * Takes `<metaDir>/lock` or fails at once.
 * @throws {MetaDirLockedError} naming the holder when another process has it.
 */
export async function lockMetaDir(
  metaDir: string,
  holder: Omit<LockHolder, "pid" | "since">,
): Promise<MetaLock> {
  const lock = await tryLockMetaDir(metaDir, holder);
  if (lock) return lock;
  throw new MetaDirLockedError(metaDir, await readLockHolder(metaDir));
}

/** The holder recorded in `<metaDir>/lock`, or undefined when absent or not yet written. */
export async function readLockHolder(metaDir: string): Promise<LockHolder | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(join(metaDir, LOCK_FILE));
  } catch {
    return undefined;
  }
  try {
    const value = JSON.parse(text) as LockHolder;
    return typeof value?.pid === "number" && typeof value.command === "string" ? value : undefined;
  } catch {
    return undefined; // being written right now
  }
}
