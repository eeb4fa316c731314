/**
 * The messages between a restore and its direct-restore worker (`_direct_worker.ts`): one
 * request, then headers, progress and one end (done or error) back.
 *
 * @module
 */

import type { Header, Trailer } from "../ltx/mod.ts";

/** One replica file the worker reads from this machine. */
export interface DirectFile {
  /** Its path on this machine. */
  path: string;
  /** Its name in messages (`<min>-<max>.ltx (level N at <location>)`). */
  name: string;
  /** Its listed size: a file that ends before it is reported as truncated. */
  size: number;
}

/** Main thread → worker: restore `files` (plan order) into the existing `outputPath`. */
export interface DirectRequest {
  type: "restore";
  files: DirectFile[];
  outputPath: string;
  /**
   * Device and inode of the file the main thread created at `outputPath`: the worker opens the
   * path again and refuses to write into anything else (a symlink planted there meanwhile).
   */
  output: { dev: number; ino: number };
}

/** An error as it crosses the thread boundary: class name and message. */
export interface DirectWireError {
  name: string;
  message: string;
}

/** Worker → main thread. */
export type DirectReply =
  /** Every file's header, read before any page is written. */
  | { type: "headers"; headers: Header[] }
  /** Bytes of the output written so far. */
  | { type: "progress"; bytes: number }
  /**
   * Every file verified to its end and every page 1…commit written, the file truncated to
   * `commit × pageSize` (not yet synced). `databaseChecksum` is the rolling checksum of the
   * result when some file carries checksums.
   */
  | { type: "done"; trailers: Trailer[]; databaseChecksum?: bigint; bytes: number }
  | { type: "error"; error: DirectWireError };

/**
 * The name the worker gives a planned file that is gone (compaction or retention removed it),
 * which the main thread turns back into the replica's `NotFoundError`: a re-plan may help.
 */
export const NOT_FOUND_ERROR_NAME = "NotFound";

/** `err` (thrown in the worker) as it crosses to the main thread. */
export function toWire(err: unknown): DirectWireError {
  if (err instanceof Deno.errors.NotFound) {
    return { name: NOT_FOUND_ERROR_NAME, message: err.message };
  }
  if (err instanceof Error) return { name: err.name, message: err.message };
  return { name: "Error", message: String(err) };
}
