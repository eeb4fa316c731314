/**
 * The few libc calls behind positional reads and writes, through FFI: `open`, `pread`, `pwrite`,
 * `fsync`, `ftruncate`, `lseek`, `fcntl` (OFD locks, see locked_file.ts), `close`; and
 * `malloc_trim`, which gives freed heap memory back to the system.
 *
 * Why not `node:fs`: Deno's `node:fs` `read(fd, …)` and `fstat(fd, …)` duplicate the descriptor
 * for each call (`fcntl(F_DUPFD_CLOEXEC)`) and close the duplicate afterwards, and closing any
 * descriptor of a file drops every POSIX lock this process holds on it, SQLite's SHARED lock on
 * the database included. A plain `pread(2)` on our one descriptor opens and closes nothing.
 *
 * @module
 */

import { lazyLibC } from "../ffi/mod.ts";

const SYMBOLS = {
  open: { parameters: ["buffer", "i32"], result: "i32" },
  pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize", nonblocking: true },
  /** The same call on this thread, to learn its errno after a failure on the pool. */
  preadHere: { name: "pread", parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  pwrite: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize", nonblocking: true },
  fsync: { parameters: ["i32"], result: "i32", nonblocking: true },
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  lseek: { parameters: ["i32", "i64", "i32"], result: "i64" },
  fcntl: { parameters: ["i32", "i32", "buffer"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  strerror: { parameters: ["i32"], result: "pointer" },
  // On a pool thread: trimming arenas of a hundred MB takes ~130 ms, a frozen event loop here.
  malloc_trim: { parameters: ["usize"], result: "i32", nonblocking: true },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

/** libc's symbols as FFI sees them. */
export type LibC = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** `O_RDONLY | O_CLOEXEC` on Linux: a child process must not inherit (and close) it. */
export const O_RDONLY_CLOEXEC = 0o2000000;
/** `whence` of `lseek(2)` for the end of the file. */
export const SEEK_END = 2;

/** libc through FFI, or null where that is not possible (not Linux, no FFI permission). */
export const loadLibC: () => LibC | null = lazyLibC(SYMBOLS);

/**
 * The error of the last failed call on this thread, as `<strerror> (errno N)`. Only valid right
 * after a synchronous call: a nonblocking call ran on another thread, whose errno is not ours.
 */
export function lastError(c: LibC): { errno: number; message: string } {
  const at = c.__errno_location();
  const errno = at ? new Deno.UnsafePointerView(at).getInt32() : 0;
  const text = c.strerror(errno);
  const message = text ? Deno.UnsafePointerView.getCString(text) : "unknown error";
  return { errno, message: `${message} (errno ${errno})` };
}
