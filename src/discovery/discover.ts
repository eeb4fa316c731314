/**
 * Finding databases in a directory tree: a scan that yields the files that really are SQLite
 * databases, by the name and pattern rules of src/config/pattern.ts. Shared by
 * `sluice databases`, `sluice snapshot` and the directory monitor so all see the same set.
 * Symbolic links are not followed.
 *
 * @module
 */

import { join } from "node:path";
import { isCandidateName, matchesPattern } from "../config/mod.ts";

const SQLITE_MAGIC = new TextEncoder().encode("SQLite format 3\0");

/** Whether the first 16 bytes of `path` are SQLite's magic string. False for short files. */
export async function hasSQLiteHeader(path: string): Promise<boolean> {
  const file = await Deno.open(path, { read: true });
  try {
    const buffer = new Uint8Array(SQLITE_MAGIC.length);
    let filled = 0;
    while (filled < buffer.length) {
      const n = await file.read(buffer.subarray(filled));
      if (n === null) return false;
      filled += n;
    }
    return buffer.every((byte, i) => byte === SQLITE_MAGIC[i]);
  } finally {
    file.close();
  }
}

/** Options of {@linkcode scanDirectory}. */
export interface ScanOptions {
  /** Glob the relative path must match (see the module docs). */
  pattern: string;
  /** Descend into subdirectories (not hidden ones). Default false. */
  recursive?: boolean;
  /**
   * Paths already known to be databases: yielded without reading their header. A process that
   * holds a SQLite connection to a file must not open and close another descriptor on it
   * (closing drops the connection's POSIX locks), so the monitor passes its open databases here.
   */
  isKnown?: (path: string) => boolean;
  /**
   * Called for a subdirectory or file that cannot be read (other than vanishing mid-scan, which
   * is ignored). Without it the error is thrown and the scan stops.
   */
  onError?: (path: string, error: unknown) => void;
  /** Stops the scan early. */
  signal?: AbortSignal;
}

/**
 * Yields the absolute paths of SQLite databases under `dir`, in name order per directory:
 * candidate names matching the pattern whose file starts with the SQLite header.
 * @throws {Deno.errors.NotFound} when `dir` itself does not exist; other read errors as
 * described for {@linkcode ScanOptions.onError}.
 */
export async function* scanDirectory(dir: string, options: ScanOptions): AsyncIterable<string> {
  const pending: string[] = [""];
  while (pending.length > 0) {
    options.signal?.throwIfAborted();
    const rel = pending.shift()!;
    const absDir = rel === "" ? dir : join(dir, rel);
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(absDir));
    } catch (err) {
      if (rel === "") throw err;
      if (err instanceof Deno.errors.NotFound) continue;
      report(options, absDir, err);
      continue;
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const subdirs: string[] = [];
    for (const entry of entries) {
      if (entry.name.startsWith(".")) continue;
      const relPath = rel === "" ? entry.name : `${rel}/${entry.name}`;
      if (entry.isDirectory) {
        if (options.recursive) subdirs.push(relPath);
        continue;
      }
      if (!entry.isFile || !isCandidateName(entry.name)) continue;
      if (!matchesPattern(relPath, options.pattern)) continue;
      const path = join(dir, relPath);
      if (options.isKnown?.(path)) {
        yield path;
        continue;
      }
      let isDatabase: boolean;
      try {
        isDatabase = await hasSQLiteHeader(path);
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) continue;
        report(options, path, err);
        continue;
      }
      if (isDatabase) yield path;
    }
    pending.unshift(...subdirs);
  }
}

function report(options: ScanOptions, path: string, error: unknown): void {
  if (options.onError === undefined) throw error;
  options.onError(path, error);
}
