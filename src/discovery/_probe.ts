/**
 * Looks at a file the directory monitor does not replicate yet: is it a SQLite database, not
 * yet one (empty, header not written), a directory, or gone?
 *
 * The probe opens the file, reads its first 100 bytes and closes it again. Closing a
 * descriptor drops every POSIX lock this process holds on that file, including the locks of
 * sluice's own SQLite connections, so the caller must only probe files it does not replicate
 * (see `src/discovery/monitor.ts`).
 *
 * @module
 */

import { DATABASE_HEADER_SIZE, isSQLiteHeader } from "../sqlite/mod.ts";
import { isDescriptorExhaustion } from "../watch/mod.ts";

/** What a probe found. */
export type ProbeResult =
  /** A regular file starting with a whole SQLite header. */
  | { kind: "database" }
  /**
   * A regular file that is not (or not yet) a SQLite database: `reason` says why, for the
   * log; `modifiedAt` is its mtime in ms (a file written just now may still become one).
   */
  | { kind: "other"; reason: string; modifiedAt: number }
  /** A directory. */
  | { kind: "directory" }
  /** Nothing there (removed since the event), or something else (socket, symlink). */
  | { kind: "missing" }
  /**
   * The file could not be opened because the process or the system ran out of descriptors
   * (EMFILE/ENFILE): nothing is known about it; look again later.
   */
  | { kind: "retry"; reason: string };

/**
 * Probes `path`; never throws for a file that vanished or is not readable (reported as
 * "missing" or "other" respectively through `onError`).
 */
export function probe(
  path: string,
  onError: (error: unknown) => void = () => {},
): Promise<ProbeResult> {
  return Promise.resolve(probeNow(path, onError));
}

/**
 * {@linkcode probe}, synchronously: the lstat, open and 100-byte read of a local file take
 * microseconds each, where an async op costs the event loop several times that in thread-pool
 * round trips (a burst of a thousand new tenants paid it three times each). The open follows
 * the lstat that found a regular file with nothing in between, as the engine opens a database
 * file (`openRandomAccess`).
 */
function probeNow(path: string, onError: (error: unknown) => void): ProbeResult {
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) onError(err);
    return { kind: "missing" };
  }
  if (info.isDirectory) return { kind: "directory" };
  if (!info.isFile) return { kind: "missing" };
  const other = (reason: string) =>
    ({ kind: "other", reason, modifiedAt: info.mtime?.getTime() ?? 0 }) as const;
  if (info.size === 0) return other("empty file");
  if (info.size < DATABASE_HEADER_SIZE) {
    return other(`${info.size} bytes, shorter than a SQLite header`);
  }
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(path, { read: true });
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return { kind: "missing" };
    if (isDescriptorExhaustion(err)) return { kind: "retry", reason: (err as Error).message };
    onError(err);
    return other(`unreadable: ${(err as Error).message}`);
  }
  try {
    const head = new Uint8Array(DATABASE_HEADER_SIZE);
    let filled = 0;
    while (filled < head.length) {
      const n = file.readSync(head.subarray(filled));
      if (n === null) return other("shorter than a SQLite header");
      filled += n;
    }
    return isSQLiteHeader(head) ? { kind: "database" } : other("no SQLite header");
  } catch (err) {
    onError(err);
    return other(`unreadable: ${(err as Error).message}`);
  } finally {
    file.close();
  }
}
