/**
 * Which paths under a monitored directory may be databases, and a walk that lists them.
 *
 * The rules are those of `src/discovery/discover.ts` (shared with `sluice databases`): no hidden segment
 * (`.name`, which also keeps sluice's own meta directories out), a candidate file name (not
 * `-wal`/`-shm`/`-journal`/temp), the pattern matched against the path relative to the
 * monitored directory, and with `recursive: false` nothing below the top level. Unlike
 * `scanDirectory`, the walk never opens a file: the monitor decides which files it may probe
 * (never one it already replicates, see `src/discovery/monitor.ts`).
 *
 * @module
 */

import { join } from "node:path";
import { isCandidateName, matchesPattern } from "../config/mod.ts";

/** What decides whether a path under the monitored directory may be a database. */
export interface PathRules {
  /** Glob matched against the `/`-separated path relative to the monitored directory. */
  pattern: string;
  /** Whether files below the top level count. */
  recursive: boolean;
}

/**
 * Whether `relPath` (relative to the monitored directory, `/`-separated) names a file that may
 * be a database under `rules`. Does not look at the file.
 */
export function isCandidatePath(relPath: string, rules: PathRules): boolean {
  const parts = relPath.split("/");
  if (!rules.recursive && parts.length > 1) return false;
  if (parts.some((part) => part.startsWith(".") || part === "")) return false;
  return isCandidateName(parts[parts.length - 1]) && matchesPattern(relPath, rules.pattern);
}

/**
 * Whether `relPath` may be a directory the monitor descends into: recursive mode, no hidden
 * segment.
 */
export function isWalkableDir(relPath: string, rules: PathRules): boolean {
  if (!rules.recursive) return false;
  return !relPath.split("/").some((part) => part.startsWith(".") || part === "");
}

/** Options of {@linkcode walkCandidates}. */
export interface WalkOptions extends PathRules {
  /**
   * Hears about a directory that cannot be read (one that vanished mid-walk is skipped
   * silently). The walk goes on with the others.
   */
  onError?: (path: string, error: unknown) => void;
}

/**
 * Yields the absolute paths of the candidate files (see {@linkcode isCandidatePath}) in the
 * tree below `start`, a directory inside (or equal to) `root`, `start` itself first. Symbolic
 * links are not followed. Files are listed, never opened.
 * @throws {Deno.errors.NotFound} when `start` does not exist; other errors reading `start` too.
 */
export async function* walkCandidates(
  root: string,
  start: string,
  options: WalkOptions,
): AsyncGenerator<string> {
  const startRel = start === root ? "" : start.slice(root.length + 1);
  const pending = [startRel];
  while (pending.length > 0) {
    const rel = pending.pop()!;
    const absDir = rel === "" ? root : join(root, rel);
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(absDir));
    } catch (err) {
      if (rel === startRel) throw err;
      if (!(err instanceof Deno.errors.NotFound)) options.onError?.(absDir, err);
      continue;
    }
    for (const entry of entries) {
      const relPath = rel === "" ? entry.name : `${rel}/${entry.name}`;
      if (entry.isDirectory) {
        if (isWalkableDir(relPath, options)) pending.push(relPath);
      } else if (entry.isFile && isCandidatePath(relPath, options)) {
        yield join(root, relPath);
      }
    }
  }
}
