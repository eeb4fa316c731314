/**
 * Finding databases in a directory tree: which names are candidates, which match a configured
 * pattern, and a scan that yields the files that really are SQLite databases. Shared by
 * `sluice databases` and the directory monitor so both see the same set.
 *
 * Pattern semantics (picomatch globs): a pattern without `/` matches the file name at any
 * depth (`*.db`, as Litestream matches the base name); a pattern with `/` matches the path
 * relative to the directory (`shard-?/*.db`). Hidden files and directories (`.name`),
 * SQLite's side files and temp files are never candidates. Symbolic links are not followed.
 *
 * @module
 */

import picomatch from "picomatch";
import { join } from "node:path";

type Matcher = (path: string) => boolean;
type Picomatch = (pattern: string, options: Record<string, unknown>) => Matcher;

const SQLITE_MAGIC = new TextEncoder().encode("SQLite format 3\0");
const SIDE_FILE = /(-wal|-shm|-journal|\.tmp|\.temp|~)$/i;
const matchers = new Map<string, Matcher>();

/**
 * Whether a file name may be a database: not hidden, not SQLite's `-wal`/`-shm`/`-journal`,
 * not a temp file (`.tmp`, `.temp`, `~`).
 */
export function isCandidateName(name: string): boolean {
  return name !== "" && !name.startsWith(".") && !SIDE_FILE.test(name);
}

/**
 * Why `pattern` is not usable, or undefined when it is. Checked at config load so a typo such
 * as an unclosed `[` or `{` fails loudly instead of silently matching nothing.
 */
export function patternProblem(pattern: string): string | undefined {
  if (pattern.trim() === "") return 'pattern is empty; use e.g. "*.db"';
  if (pattern.startsWith("/")) return "pattern must be relative to dir (no leading /)";
  if (pattern.includes("\\")) return "pattern must not contain backslashes";
  if (pattern.split("/").some((part) => part === ".." || part === ".")) {
    return "pattern must not contain . or .. segments";
  }
  let square = 0, curly = 0;
  for (const ch of pattern) {
    if (ch === "[") square++;
    else if (ch === "]") square = Math.max(0, square - 1);
    else if (ch === "{") curly++;
    else if (ch === "}") curly--;
    if (curly < 0) return "pattern has an unmatched }";
  }
  if (square > 0) return "pattern has an unclosed [";
  if (curly > 0) return "pattern has an unclosed {";
  return undefined;
}

/**
 * Whether the path relative to the scanned directory (`/`-separated) matches `pattern`.
 * Does not apply {@linkcode isCandidateName}; callers check both.
 */
export function matchesPattern(relPath: string, pattern: string): boolean {
  let matcher = matchers.get(pattern);
  if (matcher === undefined) {
    matcher = (picomatch as unknown as Picomatch)(pattern, {
      basename: !pattern.includes("/"),
      dot: false,
    });
    matchers.set(pattern, matcher);
  }
  return matcher(relPath);
}

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
