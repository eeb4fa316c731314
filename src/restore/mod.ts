/**
 * Restore: rebuild a SQLite database from a replica (FORMAT.md §5). Needs only ltx and replica.
 *
 * @module
 */

export * from "./restore.ts";
/** Whether a path exists (`lstat`, so a dangling link counts); shared with the benchmarks. */
export { pathExists } from "./_fs.ts";
/** One replica file as a byte stream checked against its listed size (restore's reader). */
export { openSized, type SizedStreamOptions } from "./_stream.ts";
