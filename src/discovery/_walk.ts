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
import { readVisibleEntries } from "./_readdir.ts";

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

/**
 * A directory read within this long of its last change is read again at the next refresh even
 * when its stat is unchanged, ms: a file created in the same tick of the file system's coarse
 * clock (or within the 1–2 s granularity of older file systems) would not change the times.
 */
export const RECENT_CHANGE_MS = 5000;

/** One directory of a {@linkcode CandidateListing}, as it was when last read. */
interface ListedDirectory {
  /** Device, inode, modification and change time of the directory, taken before reading it. */
  key: string;
  /** False when it was read too soon after a change to trust `key` (see RECENT_CHANGE_MS). */
  settled: boolean;
  /** Absolute paths of its candidate files. */
  files: string[];
  /** Paths (relative to the root) of its subdirectories that may hold databases. */
  subdirs: string[];
}

/**
 * The candidate files of a tree (those {@linkcode walkCandidates} yields), kept between walks.
 * A {@linkcode refresh} stats every directory of the tree and reads again only those whose stat
 * changed since they were read: creating, removing or renaming an entry changes its directory's
 * modification and change times, so an idle tree of 10,000 databases in one directory costs one
 * stat, not a listing of its 20,000 entries (the databases and their meta directories). Files
 * written in place do not change their directory, and are not what a listing says anyway.
 * Directories are never opened but to be read, and files never.
 */
export class CandidateListing {
  #root: string;
  #options: WalkOptions;
  /** By path relative to the root ("" for the root itself). */
  #dirs = new Map<string, ListedDirectory>();
  /** Every candidate of every listed directory. */
  #files = new Set<string>();
  #refreshing: Promise<unknown> = Promise.resolve();
  #now: () => number;

  /**
   * An empty listing of the tree at `root` (absolute and normalized); see {@linkcode refresh}.
   * `now`: the wall clock file times are compared with (tests move it on).
   */
  constructor(root: string, options: WalkOptions, now: () => number = Date.now) {
    this.#root = root;
    this.#options = options;
    this.#now = now;
  }

  /** The candidate files found by the last {@linkcode refresh}. */
  get paths(): ReadonlySet<string> {
    return this.#files;
  }

  /** Whether the last {@linkcode refresh} found `path`. */
  has(path: string): boolean {
    return this.#files.has(path);
  }

  /**
   * Brings the listing up to date: every directory is stat'ed, and read when it changed since
   * it was read, or was read too soon after a change, or `rereadAll`. Refreshes run one at a
   * time. Resolves to the number of directories read.
   * @throws {Deno.errors.NotFound} when the root does not exist; other errors reading it too
   * (the listing is then empty).
   */
  refresh(rereadAll = false): Promise<number> {
    const run = this.#refreshing.then(() => this.#refresh(rereadAll));
    this.#refreshing = run.catch(() => {});
    return run;
  }

  async #refresh(rereadAll: boolean): Promise<number> {
    const present = new Set<string>();
    const pending = [""];
    let read = 0;
    try {
      while (pending.length > 0) {
        const rel = pending.pop()!;
        const absDir = rel === "" ? this.#root : join(this.#root, rel);
        let listed: ListedDirectory | undefined;
        try {
          const info = Deno.statSync(absDir);
          if (!info.isDirectory) throw new Deno.errors.NotFound(`${absDir} is not a directory`);
          const key = `${info.dev}:${info.ino}:${info.mtime?.getTime()}:${info.ctime?.getTime()}`;
          listed = this.#dirs.get(rel);
          if (rereadAll || !listed || !listed.settled || listed.key !== key) {
            const changedAt = Math.max(info.mtime?.getTime() ?? 0, info.ctime?.getTime() ?? 0);
            const settled = this.#now() - changedAt >= RECENT_CHANGE_MS;
            listed = await this.#read(absDir, rel, key, settled);
            read++;
          }
        } catch (err) {
          if (rel === "") throw err;
          if (!(err instanceof Deno.errors.NotFound)) this.#options.onError?.(absDir, err);
          continue; // forgotten below, with what it held
        }
        present.add(rel);
        this.#set(rel, listed);
        for (const sub of listed.subdirs) pending.push(sub);
      }
    } catch (err) {
      this.#dirs.clear();
      this.#files.clear();
      throw err;
    }
    for (const rel of [...this.#dirs.keys()]) if (!present.has(rel)) this.#set(rel, undefined);
    return read;
  }

  async #read(
    absDir: string,
    rel: string,
    key: string,
    settled: boolean,
  ): Promise<ListedDirectory> {
    const files: string[] = [];
    const subdirs: string[] = [];
    const prefix = absDir.endsWith("/") ? absDir : `${absDir}/`; // join()'s result, faster
    // Hidden entries are never candidates nor walked (sluice's meta directories are hidden).
    const entries = await readVisibleEntries(absDir);
    for (const name of entries.dirs) {
      const relPath = rel === "" ? name : `${rel}/${name}`;
      if (isWalkableDir(relPath, this.#options)) subdirs.push(relPath);
    }
    for (const name of entries.files) {
      if (isCandidatePath(rel === "" ? name : `${rel}/${name}`, this.#options)) {
        files.push(prefix + name);
      }
    }
    return { key, settled, files, subdirs };
  }

  /** Replaces (or, with undefined, forgets) the listing of one directory. */
  #set(rel: string, listed: ListedDirectory | undefined): void {
    const before = this.#dirs.get(rel);
    if (before === listed) return;
    if (before && listed && sameItems(before.files, listed.files)) {
      // Read again, found the same (a WAL came and went): the set stays as it is, and the
      // strings just read die young instead of replacing 10,000 long-lived ones.
      this.#dirs.set(rel, { ...listed, files: before.files });
      return;
    }
    if (before) { for (const file of before.files) this.#files.delete(file); }
    if (listed) {
      this.#dirs.set(rel, listed);
      for (const file of listed.files) this.#files.add(file);
    } else {
      this.#dirs.delete(rel);
    }
  }
}

/** Whether two lists hold the same strings in the same order. */
function sameItems(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
