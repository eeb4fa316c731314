/**
 * Positional reads on one long-lived file descriptor.
 *
 * Closing any descriptor on a SQLite file drops every POSIX lock the process holds on it,
 * including those of its own SQLite connections (spec §7 item 13). So sluice opens each
 * database and WAL file once and reads it with positional reads for as long as it runs.
 *
 * `node:fs` `read(fd, buffer, offset, length, position)` is used rather than `Deno.FsFile`:
 * in Deno 2.9 it is a real `pread(2)` run on the blocking pool (checked with strace), so reads
 * at different positions need no shared file cursor, can run concurrently, and cannot
 * interleave a seek with another caller's read. `Deno.FsFile` has no positional read; emulating
 * it with seek + read needs a lock around every read and measured 2.5× slower for 4 KiB reads.
 *
 * @module
 */

import { closeSync, fstat, open, read } from "node:fs";

/** Random-access reads on one long-lived descriptor (never closed and reopened in a loop). */
export interface RandomAccessFile {
  /**
   * Reads `buffer.length` bytes at `position`. Returns fewer only at end of file (0 past it).
   */
  readAt(buffer: Uint8Array, position: number): Promise<number>;
  /** Current size of the file in bytes. */
  size(): Promise<number>;
}

/** A {@linkcode RandomAccessFile} that owns its descriptor. */
export interface RandomAccessFileHandle extends RandomAccessFile {
  /** The path the file was opened with. */
  readonly path: string;
  /**
   * Closes the descriptor. Idempotent. Close it only when this process is done with the file:
   * closing drops this process's POSIX locks on it.
   */
  close(): void;
}

function pread(fd: number, buffer: Uint8Array, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    read(fd, buffer, 0, buffer.length, position, (err, bytesRead) => {
      if (err) reject(err);
      else resolve(bytesRead);
    });
  });
}

class NodeRandomAccessFile implements RandomAccessFileHandle {
  readonly path: string;
  #fd: number | undefined;

  constructor(path: string, fd: number) {
    this.path = path;
    this.#fd = fd;
  }

  #descriptor(): number {
    if (this.#fd === undefined) throw new Error(`${this.path}: file is closed`);
    return this.#fd;
  }

  async readAt(buffer: Uint8Array, position: number): Promise<number> {
    if (!Number.isSafeInteger(position) || position < 0) {
      throw new RangeError(`${this.path}: invalid read position ${position}`);
    }
    const fd = this.#descriptor();
    let total = 0;
    // pread may return less than asked for without being at EOF; only 0 means EOF.
    while (total < buffer.length) {
      const n = await pread(fd, buffer.subarray(total), position + total);
      if (n === 0) break;
      total += n;
    }
    return total;
  }

  size(): Promise<number> {
    const fd = this.#descriptor();
    return new Promise((resolve, reject) => {
      fstat(fd, (err, stats) => {
        if (err) reject(err);
        else resolve(stats.size);
      });
    });
  }

  close(): void {
    if (this.#fd === undefined) return;
    const fd = this.#fd;
    this.#fd = undefined;
    closeSync(fd);
  }
}

/**
 * Opens `path` read-only for positional reads.
 *
 * @throws Error (from `node:fs`, with the path and errno code such as ENOENT) when it cannot
 * be opened.
 */
export function openRandomAccess(path: string): Promise<RandomAccessFileHandle> {
  return new Promise((resolve, reject) => {
    open(path, "r", (err, fd) => {
      if (err) reject(err);
      else resolve(new NodeRandomAccessFile(path, fd));
    });
  });
}
