/**
 * What parking a database leaves behind for its wake-up (see `Store` and `DB.closeIdle`), and
 * how both sides describe a file, so that they compare like with like.
 *
 * @module
 */

import { lazyLibC } from "../ffi/mod.ts";

/** The state a parked database was left in, checked when it opens again. */
export interface ParkedState {
  /** {@linkcode statKey} of the database file after the parking checkpoint. */
  dbState: string;
  /** Inode of the WAL that was synced to its end (null when unknown). */
  walIno: number | null;
  /** Size of that WAL. */
  walSize: number;
}

/**
 * Inode, size, modification and change time of a file, or "none": equal keys mean no write
 * happened in between, as long as the first key was taken after the clock passed its write
 * (`DB.closeIdle` waits for that).
 */
export function statKey(info: Deno.FileInfo | undefined): string {
  return info
    ? `${info.ino}:${info.size}:${info.mtime?.getTime()}:${info.ctime?.getTime()}`
    : "none";
}

/**
 * What the sweep over parked databases compares: for the database and for its WAL, whether the
 * file exists, its inode, size, and modification and change times, as plain numbers (no string,
 * no object per look). Taken with `statx(2)` through FFI where it can be: nanosecond times, and
 * a missing WAL (the usual case for a parked database) costs one system call instead of a
 * thrown `NotFound` (measured: `Deno.statSync` 6.4 µs, 14.4 µs when missing; `statx` 3 µs
 * either way, all of it the system call). Elsewhere from `Deno.statSync`, in milliseconds.
 * One process compares only states it took itself, so the two are never mixed.
 */
export type FileState = number[];

/** Numbers per file in a {@linkcode FileState}. */
const FIELDS_PER_FILE = 8;

/** The {@linkcode FileState} of the database at `path` and its WAL, now. */
export function fileStateOf(path: string): FileState {
  const state = new Array<number>(2 * FIELDS_PER_FILE).fill(0);
  readFile(path, state, 0);
  readFile(path + "-wal", state, FIELDS_PER_FILE);
  return state;
}

/**
 * Whether the database at `path` or its WAL differs from `state` (see {@linkcode fileStateOf}).
 * Allocates nothing on Linux: the sweep calls it for every parked database once a minute.
 */
export function fileStateChanged(path: string, state: FileState): boolean {
  readFile(path, scratchState, 0);
  if (!sameFields(scratchState, state, 0)) return true;
  readFile(path + "-wal", scratchState, FIELDS_PER_FILE);
  return !sameFields(scratchState, state, FIELDS_PER_FILE);
}

const scratchState: FileState = new Array<number>(2 * FIELDS_PER_FILE).fill(0);

function sameFields(a: FileState, b: FileState, from: number): boolean {
  for (let i = from; i < from + FIELDS_PER_FILE; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Writes the fields of `path` into `into` from `at`: all 0 when it does not exist. */
function readFile(path: string, into: FileState, at: number): void {
  const statx = loadStatx();
  if (statx) {
    if (!statx.read(path)) {
      into.fill(0, at, at + FIELDS_PER_FILE);
      return;
    }
    const view = statx.view;
    // Which of the fields asked for the file system filled (all, on local file systems): one it
    // did not is 0 each time, so a change of the mask is a change; never 0, which is "missing".
    into[at] = 0x1_0000 | (view.getUint32(STX_MASK_AT, true) & STATX_MASK);
    into[at + 1] = view.getUint32(STX_INO, true);
    into[at + 2] = view.getUint32(STX_INO + 4, true);
    into[at + 3] = view.getUint32(STX_SIZE, true) + view.getUint32(STX_SIZE + 4, true) * 2 ** 32;
    into[at + 4] = view.getUint32(STX_MTIME, true) + view.getInt32(STX_MTIME + 4, true) * 2 ** 32;
    into[at + 5] = view.getUint32(STX_MTIME + 8, true);
    into[at + 6] = view.getUint32(STX_CTIME, true) + view.getInt32(STX_CTIME + 4, true) * 2 ** 32;
    into[at + 7] = view.getUint32(STX_CTIME + 8, true);
    return;
  }
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch {
    into.fill(0, at, at + FIELDS_PER_FILE);
    return;
  }
  into[at] = 1;
  into[at + 1] = info.ino ?? 0;
  into[at + 2] = 0;
  into[at + 3] = info.size;
  into[at + 4] = info.mtime?.getTime() ?? 0;
  into[at + 5] = 0;
  into[at + 6] = info.ctime?.getTime() ?? 0;
  into[at + 7] = 0;
}

// `struct statx` (linux/stat.h): the same layout on every architecture. Its timestamps are
// `struct statx_timestamp` (s64 tv_sec, u32 tv_nsec, s32 reserved) from offset 64: atime,
// btime, ctime, mtime.
const STX_MASK_AT = 0;
const STX_INO = 32;
const STX_SIZE = 40;
const STX_CTIME = 96;
const STX_MTIME = 112;
const STATX_SIZE = 256;
const AT_FDCWD = -100;
/** `STATX_INO | STATX_SIZE | STATX_MTIME | STATX_CTIME`. */
const STATX_MASK = 0x100 | 0x200 | 0x40 | 0x80;

/** `statx(2)` of a path into one reused buffer. */
interface Statx {
  /** Stats `path` (following symbolic links, as `Deno.stat`); false when it cannot be. */
  read(path: string): boolean;
  /** The `struct statx` of the last successful {@linkcode Statx.read}. */
  view: DataView;
}

const loadStatxSymbol = lazyLibC(
  {
    statx: { parameters: ["i32", "buffer", "i32", "u32", "buffer"], result: "i32" },
  } as const,
);

let statxCall: Statx | null | undefined;

/** `statx` through FFI, or null where that is not possible (not Linux, no FFI, old libc). */
function loadStatx(): Statx | null {
  if (statxCall !== undefined) return statxCall;
  statxCall = null;
  const statx = loadStatxSymbol()?.statx;
  if (!statx) return statxCall;
  const buffer = new Uint8Array(STATX_SIZE);
  const encoder = new TextEncoder();
  let pathBytes = new Uint8Array(4096);
  const call: Statx = {
    view: new DataView(buffer.buffer),
    read(path: string): boolean {
      // Worst case 3 bytes per UTF-16 unit, and the terminating NUL.
      if (path.length * 3 + 1 > pathBytes.length) pathBytes = new Uint8Array(path.length * 3 + 1);
      const { written } = encoder.encodeInto(path, pathBytes);
      pathBytes[written] = 0;
      return statx(AT_FDCWD, pathBytes, 0, STATX_MASK, buffer) === 0;
    },
  };
  // A kernel without statx (before 4.11) fails every call: every file would look missing.
  if (call.read("/")) statxCall = call;
  return statxCall;
}
