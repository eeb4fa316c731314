/**
 * Synchronous stats of the database's own files.
 *
 * @module
 */

/**
 * The stat of a file of the database's directory, undefined when it is missing or unreadable.
 * Synchronous on purpose, and only for those files: SQLite's WAL mode needs them on a local
 * file system, where a stat takes microseconds, and an async op costs the event loop several
 * times that in thread-pool round trips (every sync; the polls of a thousand databases; a
 * burst of new tenants). Never for replica paths, which may be on a network file system.
 */
export function statOrUndefined(path: string): Deno.FileInfo | undefined {
  try {
    return Deno.statSync(path);
  } catch {
    return undefined;
  }
}
