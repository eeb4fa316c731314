/**
 * What parking a database leaves behind for its wake-up (see `Store` and `DB.closeIdle`), and
 * how both sides describe a file, so that they compare like with like.
 *
 * @module
 */

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

/** {@linkcode statKey} of `path`. */
export async function statKeyOf(path: string): Promise<string> {
  return statKey(await Deno.stat(path).catch(() => undefined));
}

/**
 * {@linkcode statKey} of `path`, synchronously: a stat is a few microseconds, and the sweep
 * over thousands of parked databases costs several times more in promises than in system calls.
 */
export function statKeyOfSync(path: string): string {
  try {
    return statKey(Deno.statSync(path));
  } catch {
    return "none";
  }
}
