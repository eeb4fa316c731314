/**
 * A database file written by another program than SQLite while SQLite connections in other
 * processes read it: one read-write descriptor with positional I/O, and SQLite's own file locks
 * (the lock bytes at 1 GiB, os_unix.c) taken as Linux open-file-description (OFD) locks.
 *
 * Why OFD locks: SQLite's readers take classic POSIX locks (`F_SETLK`) on the lock bytes. An OFD
 * lock (`F_OFD_SETLK`) conflicts with them across processes exactly as another process's POSIX
 * lock would, and it belongs to this descriptor alone: closing some other descriptor of the file
 * in this process (which drops every classic POSIX lock the process holds) leaves it in place.
 * Reads and writes are `pread`/`pwrite` through FFI on the one descriptor, so no runtime helper
 * duplicates and closes it.
 *
 * Linux only (OFD locks exist since 3.15) and only with FFI permission: see
 * {@linkcode lockedFilesAvailable}.
 *
 * @module
 */

import { lastError, type LibC, loadLibC, O_RDONLY_CLOEXEC } from "./_libc.ts";

/** SQLite's lock byte offsets (os_unix.c): PENDING, RESERVED, and the SHARED range. */
export const PENDING_BYTE = 0x40000000;
/** The RESERVED lock byte: held by a writer from its first change to its commit. */
export const RESERVED_BYTE = PENDING_BYTE + 1;
/** First byte of the SHARED range: readers hold read locks here. */
export const SHARED_FIRST = PENDING_BYTE + 2;
/** Length of the SHARED range. */
export const SHARED_SIZE = 510;

/**
 * A byte of the lock page that SQLite never locks (just past the SHARED range): the follower's
 * "one writer" lock, invisible to SQLite readers.
 */
export const OWNER_BYTE = SHARED_FIRST + SHARED_SIZE;

/** SQLite's lock levels, in order. */
export type LockLevel = "none" | "shared" | "reserved" | "pending" | "exclusive";

const F_OFD_SETLK = 37;
const F_RDLCK = 0;
const F_WRLCK = 1;
const F_UNLCK = 2;
const SEEK_SET = 0;
const O_RDWR_CLOEXEC = 0o2 | O_RDONLY_CLOEXEC;
const EAGAIN = 11;
const EACCES = 13;
const EINTR = 4;

/** Whether {@linkcode LockedFile} can work here: Linux, with FFI permission. */
export function lockedFilesAvailable(): boolean {
  return loadLibC() !== null;
}

/** A lock or I/O call on a {@linkcode LockedFile} failed for another reason than a conflict. */
export class LockedFileError extends Error {
  /** Builds an error naming the file and the call. */
  constructor(message: string) {
    super(message);
    this.name = "LockedFileError";
  }
}

/**
 * One read-write descriptor of a database file with SQLite's locking protocol on it. Every
 * method is non-blocking: a lock that another process holds is reported (`false`), never
 * waited for, so callers retry with timers and the event loop keeps running.
 */
export class LockedFile {
  /** The path the file was opened with. */
  readonly path: string;
  #c: LibC;
  #fd: number | undefined;
  #level: LockLevel = "none";
  #flock = new Uint8Array(32);

  private constructor(c: LibC, path: string, fd: number) {
    this.#c = c;
    this.path = path;
    this.#fd = fd;
  }

  /**
   * Opens an existing file read-write.
   * @throws {Deno.errors.NotFound} when it does not exist.
   * @throws {LockedFileError} when FFI is not available or the open fails otherwise.
   */
  static open(path: string): LockedFile {
    const c = loadLibC();
    if (c === null) {
      throw new LockedFileError(
        `cannot write ${path} under SQLite's locks: needs Linux and --allow-ffi (OFD locks)`,
      );
    }
    const fd = c.open(new TextEncoder().encode(path + "\0"), O_RDWR_CLOEXEC);
    if (fd < 0) {
      const { errno: code, message } = lastError(c);
      if (code === 2) throw new Deno.errors.NotFound(`cannot open ${path}: ${message}`);
      throw new LockedFileError(`cannot open ${path}: ${message}`);
    }
    return new LockedFile(c, path, fd);
  }

  /** The lock this descriptor holds now. */
  get level(): LockLevel {
    return this.#level;
  }

  #descriptor(): number {
    if (this.#fd === undefined) throw new LockedFileError(`${this.path}: file is closed`);
    return this.#fd;
  }

  /** One OFD lock call; false on a conflict with another holder. */
  #setLock(type: number, start: number, length: number): boolean {
    const view = new DataView(this.#flock.buffer);
    this.#flock.fill(0);
    view.setInt16(0, type, true);
    view.setInt16(2, SEEK_SET, true);
    view.setBigInt64(8, BigInt(start), true);
    view.setBigInt64(16, BigInt(length), true);
    for (;;) {
      if (this.#c.fcntl(this.#descriptor(), F_OFD_SETLK, this.#flock) === 0) return true;
      const { errno: code, message } = lastError(this.#c);
      if (code === EINTR) continue;
      if (code === EAGAIN || code === EACCES) return false;
      throw new LockedFileError(`${this.path}: fcntl(F_OFD_SETLK) failed: ${message}`);
    }
  }

  /**
   * Moves up to `level` one step at a time as SQLite does (SHARED → RESERVED → PENDING →
   * EXCLUSIVE). False when another process's lock is in the way; the locks already held stay.
   * @throws {LockedFileError} when the kernel refuses the lock for another reason.
   */
  tryLock(level: LockLevel): boolean {
    const order: LockLevel[] = ["none", "shared", "reserved", "pending", "exclusive"];
    while (order.indexOf(this.#level) < order.indexOf(level)) {
      switch (this.#level) {
        case "none": {
          // os_unix.c: a read lock on PENDING guards the acquisition of SHARED, so that a
          // writer holding PENDING keeps new readers out.
          if (!this.#setLock(F_RDLCK, PENDING_BYTE, 1)) return false;
          const shared = this.#setLock(F_RDLCK, SHARED_FIRST, SHARED_SIZE);
          this.#setLock(F_UNLCK, PENDING_BYTE, 1);
          if (!shared) return false;
          this.#level = "shared";
          break;
        }
        case "shared":
          if (!this.#setLock(F_WRLCK, RESERVED_BYTE, 1)) return false;
          this.#level = "reserved";
          break;
        case "reserved":
          if (!this.#setLock(F_WRLCK, PENDING_BYTE, 1)) return false;
          this.#level = "pending";
          break;
        case "pending":
          if (!this.#setLock(F_WRLCK, SHARED_FIRST, SHARED_SIZE)) return false;
          this.#level = "exclusive";
          break;
        case "exclusive":
          break;
      }
    }
    return true;
  }

  /**
   * Steps back from PENDING to RESERVED (lets new readers in again while a long reader keeps
   * EXCLUSIVE out). A no-op below PENDING.
   */
  releasePending(): void {
    if (this.#level !== "pending") return;
    this.#setLock(F_UNLCK, PENDING_BYTE, 1);
    this.#level = "reserved";
  }

  /**
   * Takes a write lock on one byte outside SQLite's lock bytes (e.g. {@linkcode OWNER_BYTE}),
   * held until {@linkcode LockedFile.close}: one writer per file among cooperating programs.
   * False when another descriptor holds it.
   */
  tryLockOwner(offset: number = OWNER_BYTE): boolean {
    return this.#setLock(F_WRLCK, offset, 1);
  }

  /** Drops SQLite's locks of this descriptor (not the owner lock). */
  unlock(): void {
    if (this.#level === "none" || this.#fd === undefined) return;
    this.#setLock(F_UNLCK, PENDING_BYTE, SHARED_SIZE + 2);
    this.#level = "none";
  }

  /** Reads `buffer.length` bytes at `position`; fewer only at the end of the file. */
  async readAt(buffer: Uint8Array, position: number): Promise<number> {
    const fd = this.#descriptor();
    let total = 0;
    while (total < buffer.length) {
      const into = buffer.subarray(total);
      const n = Number(
        await this.#c.pread(fd, into, BigInt(into.length), BigInt(position + total)),
      );
      if (n < 0) throw this.#ioError("read", into.length, position + total);
      if (n === 0) break;
      total += n;
    }
    return total;
  }

  /** Writes all of `bytes` at `position`. */
  async writeAt(bytes: Uint8Array, position: number): Promise<void> {
    const fd = this.#descriptor();
    let total = 0;
    while (total < bytes.length) {
      const from = bytes.subarray(total);
      const n = Number(
        await this.#c.pwrite(fd, from, BigInt(from.length), BigInt(position + total)),
      );
      if (n <= 0) throw this.#ioError("write", from.length, position + total);
      total += n;
    }
  }

  #ioError(what: string, length: number, position: number): LockedFileError {
    // errno belongs to the pool thread that ran the call; the message says where, not why.
    return new LockedFileError(
      `${this.path}: ${what} of ${length} bytes at ${position} failed (disk full or I/O error?)`,
    );
  }

  /** `fsync(2)`: everything written is on disk. */
  async sync(): Promise<void> {
    if (await this.#c.fsync(this.#descriptor()) !== 0) {
      throw new LockedFileError(`${this.path}: fsync failed`);
    }
  }

  /** Cuts (or extends) the file to `size` bytes. */
  truncate(size: number): void {
    if (this.#c.ftruncate(this.#descriptor(), BigInt(size)) !== 0) {
      throw new LockedFileError(`${this.path}: ftruncate failed: ${lastError(this.#c).message}`);
    }
  }

  /** The file's size in bytes. */
  size(): number {
    const end = Number(this.#c.lseek(this.#descriptor(), 0n, 2));
    if (end < 0) {
      throw new LockedFileError(`${this.path}: lseek failed: ${lastError(this.#c).message}`);
    }
    return end;
  }

  /** Drops every lock (the owner lock too) and closes the descriptor. Idempotent. */
  close(): void {
    if (this.#fd === undefined) return;
    this.unlock();
    this.#c.close(this.#fd);
    this.#fd = undefined;
  }
}
