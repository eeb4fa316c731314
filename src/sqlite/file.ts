/**
 * Positional reads on one long-lived file descriptor, without ever closing another one.
 *
 * Closing any descriptor of a file drops every POSIX lock the process holds on it, including
 * those of its own SQLite connections (FORMAT.md §7 item 13). A replicator that loses its
 * SHARED lock on the database lets the next application connection that closes believe it is
 * the last one: it checkpoints the WAL and deletes it under the replicator. So sluice opens each
 * database and WAL file once and reads it with positional reads for as long as it runs.
 *
 * On Linux the reads are `pread(2)` through FFI on the one descriptor, run on FFI's blocking
 * thread pool: no shared file cursor, so concurrent reads need no lock. Deno's `node:fs`
 * `read(fd, …)` and `fstat(fd, …)` are not usable here: they duplicate the descriptor for each
 * call and close the duplicate afterwards (strace: `fcntl(fd, F_DUPFD_CLOEXEC)` … `close`),
 * which is exactly the close that drops the locks. Elsewhere (or without FFI permission) a
 * `Deno.FsFile` is used with seek + read serialised per file; it never duplicates its
 * descriptor either.
 *
 * @module
 */

import { lastError, type LibC, loadLibC, O_RDONLY_CLOEXEC, SEEK_END } from "./_libc.ts";

/** Random-access reads on one long-lived descriptor (never closed and reopened in a loop). */
export interface RandomAccessFile {
  /**
   * Reads `buffer.length` bytes at `position`. Returns fewer only at end of file (0 past it).
   */
  readAt(buffer: Uint8Array, position: number): Promise<number>;
  /**
   * One read of up to `buffer.length` bytes at `position`, where a regular file returns fewer
   * only at its end: a caller that treats a short read as the end (the WAL reader) saves the
   * second read that {@linkcode readAt} needs to learn it. Optional; `readAt` otherwise.
   */
  readOnce?(buffer: Uint8Array, position: number): Promise<number>;
  /** Current size of the file in bytes. */
  size(): Promise<number>;
}

/** A {@linkcode RandomAccessFile} that owns its descriptor. */
export interface RandomAccessFileHandle extends RandomAccessFile {
  /** The path the file was opened with. */
  readonly path: string;
  /**
   * How many names the open file has (0 once it was deleted), or undefined where it cannot be
   * told without another descriptor. A stat of `/proc/self/fd/N` opens nothing, so no lock is
   * disturbed.
   */
  linkCount(): Promise<number | undefined>;
  /**
   * Closes the descriptor. Idempotent. Close it only when this process is done with the file:
   * closing drops this process's POSIX locks on it.
   */
  close(): void;
}

function checkPosition(path: string, position: number): void {
  if (!Number.isSafeInteger(position) || position < 0) {
    throw new RangeError(`${path}: invalid read position ${position}`);
  }
}

/** Reads until the buffer is full or `readOnce` reports end of file (0). */
async function readFully(
  buffer: Uint8Array,
  position: number,
  readOnce: (into: Uint8Array, at: number) => Promise<number>,
): Promise<number> {
  let total = 0;
  // A read may return less than asked for without being at EOF; only 0 means EOF.
  while (total < buffer.length) {
    const n = await readOnce(buffer.subarray(total), position + total);
    if (n === 0) break;
    total += n;
  }
  return total;
}

/** `pread(2)` through FFI on a descriptor this object owns. */
class PreadFile implements RandomAccessFileHandle {
  readonly path: string;
  #c: LibC;
  #fd: number | undefined;

  constructor(c: LibC, path: string, fd: number) {
    this.#c = c;
    this.path = path;
    this.#fd = fd;
  }

  #descriptor(): number {
    if (this.#fd === undefined) throw new Error(`${this.path}: file is closed`);
    return this.#fd;
  }

  async readAt(buffer: Uint8Array, position: number): Promise<number> {
    checkPosition(this.path, position);
    return await readFully(buffer, position, (into, at) => this.#pread(into, at));
  }

  async readOnce(buffer: Uint8Array, position: number): Promise<number> {
    checkPosition(this.path, position);
    return await this.#pread(buffer, position);
  }

  async #pread(into: Uint8Array, at: number): Promise<number> {
    const fd = this.#descriptor();
    const n = Number(await this.#c.pread(fd, into, BigInt(into.length), BigInt(at)));
    if (n < 0) {
      // errno belongs to the pool thread that ran it: ask once more here to learn why.
      const again = Number(this.#c.preadHere(fd, into, BigInt(into.length), BigInt(at)));
      if (again >= 0) return again;
      const why = lastError(this.#c).message;
      throw new Error(`${this.path}: read of ${into.length} bytes at ${at} failed: ${why}`);
    }
    return n;
  }

  async size(): Promise<number> {
    // lseek to the end is fstat's size without a stat struct; reads are positional, so moving
    // the descriptor's offset affects nobody.
    const end = Number(this.#c.lseek(this.#descriptor(), 0n, SEEK_END));
    if (end < 0) {
      throw new Error(`${this.path}: cannot read its size: ${lastError(this.#c).message}`);
    }
    return await Promise.resolve(end);
  }

  async linkCount(): Promise<number | undefined> {
    const info = await Deno.stat(`/proc/self/fd/${this.#descriptor()}`).catch(() => undefined);
    return info?.nlink ?? undefined;
  }

  close(): void {
    if (this.#fd === undefined) return;
    const fd = this.#fd;
    this.#fd = undefined;
    this.#c.close(fd);
  }
}

/** Seek + read on a `Deno.FsFile`, one call at a time (the cursor is shared). */
class SeekReadFile implements RandomAccessFileHandle {
  readonly path: string;
  #file: Deno.FsFile | undefined;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(path: string, file: Deno.FsFile) {
    this.path = path;
    this.#file = file;
  }

  #handle(): Deno.FsFile {
    if (this.#file === undefined) throw new Error(`${this.path}: file is closed`);
    return this.#file;
  }

  #serialised<T>(fn: (file: Deno.FsFile) => Promise<T>): Promise<T> {
    const file = this.#handle();
    const next = this.#queue.catch(() => {}).then(() => fn(file));
    this.#queue = next;
    return next;
  }

  async readAt(buffer: Uint8Array, position: number): Promise<number> {
    checkPosition(this.path, position);
    return await this.#serialised((file) =>
      readFully(buffer, position, async (into, at) => {
        await file.seek(at, Deno.SeekMode.Start);
        return (await file.read(into)) ?? 0;
      })
    );
  }

  async size(): Promise<number> {
    return await this.#serialised(async (file) => (await file.stat()).size);
  }

  async linkCount(): Promise<number | undefined> {
    return await this.#serialised(async (file) => (await file.stat()).nlink ?? undefined);
  }

  close(): void {
    const file = this.#file;
    this.#file = undefined;
    file?.close();
  }
}

/** errno values whose meaning callers act on, as Deno's error classes. */
function openError(path: string, errno: number, message: string): Error {
  const text = `cannot open ${path}: ${message}`;
  switch (errno) {
    case 2: // ENOENT
      return new Deno.errors.NotFound(`${text} [ENOENT]`);
    case 13: // EACCES
    case 1: // EPERM
      return new Deno.errors.PermissionDenied(text);
    case 23: // ENFILE
    case 24: // EMFILE
      return new Error(`${text}: raise the descriptor limit (LimitNOFILE, ulimit -n)`);
    default:
      return new Error(text);
  }
}

/**
 * Opens `path` read-only for positional reads.
 *
 * @throws {Deno.errors.NotFound} (message contains `ENOENT`) when the file does not exist.
 * @throws {Deno.errors.PermissionDenied} when it may not be read.
 * @throws Error naming the path and the reason (such as no descriptors left) otherwise.
 */
export async function openRandomAccess(path: string): Promise<RandomAccessFileHandle> {
  const c = loadLibC();
  if (c === null) {
    try {
      return new SeekReadFile(path, await Deno.open(path, { read: true }));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) {
        throw new Deno.errors.NotFound(`cannot open ${path}: not found [ENOENT]`);
      }
      throw err;
    }
  }
  // open(2) of a local file takes microseconds; run it here so that errno is ours to read.
  const fd = c.open(new TextEncoder().encode(path + "\0"), O_RDONLY_CLOEXEC);
  if (fd < 0) {
    const { errno, message } = lastError(c);
    throw openError(path, errno, message);
  }
  return new PreadFile(c, path, fd);
}
