/**
 * The directory monitor: keeps the {@linkcode Store} in step with the SQLite databases under a
 * directory tree (a `dbs: - dir:` entry), and wakes a database's sync when its `-wal` changes.
 *
 * One watcher per monitored directory (recursive or not) serves both purposes, so a tree of
 * thousands of databases costs one watcher and no timer per database. The watcher is
 * `Deno.watchFs` run in a child process (`src/watch/mod.ts`): in this process it would drop
 * SQLite's POSIX locks. The first scan starts only once the watch exists, so a database created
 * meanwhile is seen by one or the other. Events are handled
 * as they arrive, with no debounce: a database created on disk reaches the store within
 * milliseconds, and a burst of events for the same file is folded into one look at it.
 *
 * - A created, modified or renamed-in file whose path matches (see `src/discovery/_walk.ts`)
 *   and that starts with a SQLite header is added to the store. A file that is not a database
 *   yet (created empty, header written later) is looked at again on its next event; one that
 *   is still not a database {@linkcode SKIP_GRACE} after it was written (an empty `x.db`, a
 *   text file `junk.db`) is reported once, at info, with the reason.
 * - A removed or renamed-away database is removed from the store: replication stops, its
 *   resources are released, its replica is kept. A removed directory removes every database
 *   below it.
 * - A created or renamed-in directory is scanned at once: `Deno.watchFs` misses files created
 *   right after their directory (docs/FORMAT.md §8).
 * - The whole tree is reconciled periodically, and at once after a watcher error, a queue
 *   overflow, or the monitored directory being replaced; the watcher is then restarted.
 * - Kernel limits: a directory the kernel refuses to watch (`fs.inotify.max_user_watches`
 *   reached), or the whole tree when no watcher can be created (`fs.inotify.max_user_instances`
 *   or the open files limit), is scanned every `scanInterval` instead: databases appearing and
 *   vanishing there are found, and a changed `-wal` (inode, size, mtime) wakes its database's
 *   sync as an event would. One warning per limit names the sysctl to raise; watches are tried
 *   again at each scan and the scanning stops once they succeed.
 *
 * Files the store replicates are never opened here: closing any descriptor on a database file
 * drops the POSIX locks of sluice's own SQLite connections to it. Only files not yet handed to
 * the store are probed (one short open to read the header), and never while the store is
 * still closing a database that was removed or renamed (the probed file may be that inode).
 *
 * @module
 */

import { dirname, resolve } from "node:path";
import { type DatabaseEntry, WorkQueue } from "../engine/mod.ts";
import type { Logger } from "../log/mod.ts";
import {
  CandidateListing,
  isCandidatePath,
  isWalkableDir,
  type PathRules,
  walkCandidates,
} from "./_walk.ts";
import { probe } from "./_probe.ts";
import { type FsWatcher, watchFs, WatchLimitError } from "../watch/mod.ts";

/** What the monitor drives; {@linkcode Store} is one. */
export interface MonitorTarget {
  /** Starts replicating a database; idempotent. */
  add(entry: DatabaseEntry): Promise<boolean>;
  /** Stops replicating a database; its replica is kept. */
  remove(path: string, finalSync?: boolean): Promise<void>;
  /** The database's WAL changed: sync soon. */
  notify(path: string): void;
}

/** Options of {@linkcode DirectoryMonitor}. */
export interface DirectoryMonitorOptions {
  /** Absolute directory to monitor. */
  dir: string;
  /** Glob matched against each file's path relative to `dir` (see `src/discovery/discover.ts`). */
  pattern: string;
  /** Include subdirectories. False ignores them entirely. */
  recursive: boolean;
  /**
   * Keep discovering databases created and removed after start. False: the set found by the
   * initial scan is fixed (and an empty directory is an error); the watcher then only wakes
   * the syncs of those databases.
   */
  watch: boolean;
  /** Period of the full reconcile scan with `watch: true`, ms; 0 disables it. Default 30 s. */
  reconcileInterval?: number;
  /**
   * Period of the scans that replace the watcher where a kernel limit refused it (see the
   * module docs), ms. Default {@linkcode DEFAULT_SCAN_INTERVAL} (`monitor-interval`'s default).
   */
  scanInterval?: number;
  /** Files probed at once (open, read 100 bytes, close). Default 32. */
  probeConcurrency?: number;
  /** Receives the databases found (usually a {@linkcode Store} built with `watchWAL: false`). */
  store: MonitorTarget;
  /** Builds the store entry of a database found at `dbPath` (replica path, meta dir, tunables). */
  entryFor: (dbPath: string) => DatabaseEntry;
  logger: Logger;
}

/** The monitored directory cannot be used as configured; the message says what is missing. */
export class MonitorError extends Error {
  /** Builds an error; the message names the directory. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "MonitorError";
  }
}

/** Default period of the reconcile scan, ms. */
export const DEFAULT_RECONCILE_INTERVAL = 30_000;
/**
 * The reconcile scan waits at least this many times as long as the last one took, so that a
 * large tree (100,000 databases take seconds to walk) costs at most 0.5 % of the time.
 */
const RECONCILE_IDLE_FACTOR = 200;
/**
 * Every this many periodic reconcile scans, one reads every directory again, whatever their
 * stats say (the others read only the directories that changed; see `CandidateListing`).
 */
const FULL_READ_EVERY = 10;
/** Default period of the scans of directories a kernel limit left unwatched, ms. */
export const DEFAULT_SCAN_INTERVAL = 1000;
/** Shortest time between two watcher restarts, ms (a watcher that keeps failing must not spin). */
const WATCHER_RESTART_DELAY = 1000;
/** SQLite's companions of a database file; their removal says nothing about directories. */
const SIDE_FILE = /-(wal|shm|journal)$/;
/**
 * How long a file that matches the pattern may stay "not a database" before it is reported as
 * skipped, ms. SQLite creates a database empty and writes its header at the first commit, so
 * a file written just now is given this long to become one.
 */
export const SKIP_GRACE = 1000;

/** Keeps a store in step with the databases under one directory. */
export class DirectoryMonitor {
  /** The monitored directory (absolute, normalized). */
  readonly dir: string;

  #options: Required<Omit<DirectoryMonitorOptions, "dir">>;
  #rules: PathRules;
  #prefix: string;
  #logger: Logger;
  /** Paths handed to the store: never probed again until removed. */
  #known = new Set<string>();
  /** Probes in flight, one per path; their promise resolves true when handed to the store. */
  #probing = new Map<string, Promise<boolean>>();
  /** An event arrived during the probe of this path: look again if it was not a database. */
  #recheck = new Set<string>();
  /** The path was removed during its probe: the probe's finding is stale. */
  #cancelled = new Set<string>();
  /** Files matching the pattern that are not databases, reported once each (until removed). */
  #skipped = new Set<string>();
  /**
   * Files found not to be databases but written too recently to say so: when first found, and
   * the timer that looks at them again once {@linkcode SKIP_GRACE} has passed.
   */
  #notYet = new Map<string, { since: number; timer?: ReturnType<typeof setTimeout> }>();
  /** Store removals in flight; probes wait for them (POSIX locks, see the module docs). */
  #removals = new Set<Promise<void>>();
  /** Directory scans in flight, and those asked for again while running. */
  #scans = new Map<string, Promise<void>>();
  #rescan = new Set<string>();
  /** Everything in flight, awaited by {@linkcode close}. */
  #tasks = new Set<Promise<unknown>>();
  /** Probes running at once (`probeConcurrency`). */
  #probeSlots: WorkQueue;
  #watcher?: FsWatcher;
  #rootIno: number | null = null;
  #lastWatcherStart = -Infinity;
  #recovering = false;
  #reconciling?: Promise<number>;
  #reconcileAgain = false;
  /** The next reconcile scan reads every directory (not only those whose stat changed). */
  #rereadAll = false;
  /** Periodic reconcile scans so far (every {@linkcode FULL_READ_EVERY}th reads everything). */
  #periodicScans = 0;
  /** The tree's candidate files as of the last reconcile scan. */
  #listing: CandidateListing;
  #timer?: ReturnType<typeof setTimeout>;
  #sleepers = new Set<() => void>();
  #started = false;
  #closed = false;
  /** Directories inside the tree that a kernel limit left without a watch: scanned instead. */
  #unwatched = new Set<string>();
  /** The watcher could not be created for a kernel limit: the whole tree is scanned. */
  #watcherRefused = false;
  /** Limits already warned about (one warning each until every watch works again). */
  #warnedLimits = new Set<string>();
  /** The last watcher failure logged (the same failure is not logged at every retry). */
  #lastWatcherFailure?: string;
  /** `-wal` identity (ino:size:mtime) of each database the fallback scans look after. */
  #walSeen = new Map<string, string>();
  #scanTimer?: ReturnType<typeof setInterval>;
  #scanning = false;

  /** Prepares a monitor; nothing happens until {@linkcode start}. */
  constructor(options: DirectoryMonitorOptions) {
    this.dir = resolve(options.dir);
    this.#prefix = this.dir.endsWith("/") ? this.dir : `${this.dir}/`;
    this.#options = {
      reconcileInterval: DEFAULT_RECONCILE_INTERVAL,
      scanInterval: DEFAULT_SCAN_INTERVAL,
      probeConcurrency: 32,
      ...options,
    };
    this.#rules = { pattern: options.pattern, recursive: options.recursive };
    this.#probeSlots = new WorkQueue(Math.max(1, this.#options.probeConcurrency));
    this.#logger = options.logger.child({ dir: this.dir });
    this.#listing = new CandidateListing(this.dir, {
      ...this.#rules,
      onError: (path, err) =>
        this.#logger.warn("cannot scan directory", { path, error: (err as Error).message }),
    });
  }

  /** Paths of the databases handed to the store and not removed since. */
  get databases(): string[] {
    return [...this.#known];
  }

  /**
   * Entries of the per-path bookkeeping, all kinds together: the databases handed to the
   * store, probes and scans in flight, files reported as skipped. Once the databases and files
   * are gone and the work has settled it is 0: nothing is kept for a removed tenant.
   */
  get trackedPaths(): number {
    return this.#known.size + this.#probing.size + this.#recheck.size + this.#cancelled.size +
      this.#scans.size + this.#rescan.size + this.#skipped.size + this.#notYet.size +
      this.#walSeen.size;
  }

  /**
   * Directories scanned instead of watched because of a kernel limit: every directory of the
   * tree's own when no watcher could be created (`[dir]`), else those refused a watch.
   */
  get unwatchedDirectories(): string[] {
    return this.#watcherRefused ? [this.dir] : [...this.#unwatched];
  }

  /**
   * Scans the directory, hands every database found to the store (waiting until each is
   * opened or scheduled for a retry by the store), then watches for changes. Resolves to the
   * number of databases found.
   * @throws {MonitorError} when the directory does not exist or is not a directory, or when
   * `watch` is false and no database was found.
   */
  async start(): Promise<number> {
    if (this.#started) throw new Error(`monitor of ${this.dir} already started`);
    this.#started = true;
    const info = await Deno.stat(this.dir).catch((err) => {
      if (err instanceof Deno.errors.NotFound) {
        throw new MonitorError(
          `directory ${this.dir} (dbs entry with dir:) does not exist; create it or fix the path`,
        );
      }
      throw new MonitorError(`cannot read directory ${this.dir}: ${(err as Error).message}`, {
        cause: err,
      });
    });
    if (!info.isDirectory) {
      throw new MonitorError(`${this.dir} (dbs entry with dir:) is not a directory`);
    }
    // Watch first, then scan: a database created during the scan is seen by one or the other.
    if (this.#startWatcher(info.ino)) await this.#watcher?.ready;
    const found = await this.#track(this.#reconcileOnce(true));
    if (!this.#options.watch && found === 0) {
      await this.close();
      const where = this.#rules.recursive
        ? `${this.dir} or its subdirectories`
        : `${this.dir} (subdirectories are not searched: recursive is false)`;
      throw new MonitorError(
        `no SQLite database matching pattern "${this.#rules.pattern}" in ${where}; with ` +
          `watch: false the databases are found once at start, so create them first, fix the ` +
          `pattern, or set watch: true`,
      );
    }
    if (this.#options.watch && this.#options.reconcileInterval > 0) this.#scheduleReconcile(0);
    this.#updateScanTimer();
    this.#logger.info(this.#options.watch ? "watching directory" : "scanned directory", {
      pattern: this.#rules.pattern,
      recursive: this.#rules.recursive,
      databases: found,
    });
    return found;
  }

  /**
   * Arms the next periodic reconcile: `reconcileInterval` after the last one, or longer when
   * the last walk took long ({@linkcode RECONCILE_IDLE_FACTOR}). It reads only the directories
   * whose stat changed since they were read, and every one each {@linkcode FULL_READ_EVERY}th
   * time.
   */
  #scheduleReconcile(lastMs: number): void {
    if (this.#closed) return;
    const delay = Math.max(this.#options.reconcileInterval, lastMs * RECONCILE_IDLE_FACTOR);
    this.#timer = setTimeout(async () => {
      const started = performance.now();
      await this.#requestReconcile(++this.#periodicScans % FULL_READ_EVERY === 0);
      this.#scheduleReconcile(performance.now() - started);
    }, delay);
    Deno.unrefTimer(this.#timer);
  }

  /**
   * Scans the whole tree now, every directory read: adds the databases the watcher missed,
   * removes the ones that vanished, and restarts the watcher if the directory was replaced.
   * Concurrent calls share one scan (and one more runs after it when asked for during it).
   * Resolves to the number of databases found.
   */
  reconcile(): Promise<number> {
    return this.#requestReconcile(true);
  }

  /** {@linkcode reconcile}; `rereadAll` false reads only the directories that changed. */
  #requestReconcile(rereadAll: boolean): Promise<number> {
    if (this.#closed) return Promise.resolve(this.#known.size);
    if (rereadAll) this.#rereadAll = true;
    if (this.#reconciling) {
      this.#reconcileAgain = true;
      return this.#reconciling;
    }
    this.#reconciling = this.#track(this.#reconcileLoop());
    return this.#reconciling;
  }

  async #reconcileLoop(): Promise<number> {
    await Promise.resolve(); // let reconcile() register this run first
    try {
      let found = 0;
      do {
        this.#reconcileAgain = false;
        const rereadAll = this.#rereadAll;
        this.#rereadAll = false;
        found = await this.#reconcileOnce(rereadAll);
      } while (this.#reconcileAgain && !this.#closed);
      return found;
    } catch (err) {
      this.#logger.error("reconcile scan failed", { error: (err as Error).message });
      return this.#known.size;
    } finally {
      this.#reconciling = undefined;
    }
  }

  /**
   * Stops watching and scanning and waits for the work in flight. The databases stay in the
   * store (whose `close()` does their final sync).
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    if (this.#scanTimer !== undefined) clearInterval(this.#scanTimer);
    for (const { timer } of this.#notYet.values()) clearTimeout(timer);
    this.#notYet.clear();
    for (const wake of this.#sleepers) wake();
    this.#closeWatcher();
    while (this.#tasks.size > 0) await Promise.allSettled([...this.#tasks]);
  }

  // ---------------------------------------------------------------- watcher and events

  #startWatcher(rootIno: number | null): boolean {
    this.#lastWatcherStart = performance.now();
    let watcher: FsWatcher;
    const unwatched = new Set<string>();
    try {
      // Never Deno.watchFs in this process: it would drop SQLite's locks (see fs_watch.ts).
      watcher = watchFs(this.dir, {
        recursive: this.#rules.recursive,
        // Only where databases may be: not the hidden meta directories (3 watches a database).
        descend: (dir) => {
          const rel = this.#relative(dir);
          return rel !== undefined && isWalkableDir(rel, this.#rules);
        },
        onUnwatched: (err) => {
          // Reported while the new watcher walks the tree: it replaces the old watcher's set.
          unwatched.add(err.dir);
          if (this.#watcher === watcher) this.#unwatched.add(err.dir);
          this.#warnLimit(err);
          this.#updateScanTimer();
        },
      });
    } catch (err) {
      if (err instanceof WatchLimitError) {
        this.#watcherRefused = true;
        this.#warnLimit(err);
        this.#updateScanTimer();
      } else if ((err as Error).message !== this.#lastWatcherFailure) {
        this.#lastWatcherFailure = (err as Error).message;
        this.#logger.warn("cannot watch directory; relying on periodic scans", {
          error: (err as Error).message,
        });
      }
      return false;
    }
    if (this.#watcherRefused) {
      this.#logger.info("directory watched again; periodic scans stopped");
    }
    this.#watcherRefused = false;
    this.#lastWatcherFailure = undefined;
    this.#unwatched = unwatched;
    this.#watcher = watcher;
    this.#rootIno = rootIno;
    this.#track(this.#pump(watcher));
    return true;
  }

  #closeWatcher(): void {
    const watcher = this.#watcher;
    this.#watcher = undefined;
    try {
      watcher?.close();
    } catch { /* already closed */ }
  }

  async #pump(watcher: FsWatcher): Promise<void> {
    let failure: unknown;
    try {
      for await (const event of watcher) {
        if (this.#watcher !== watcher) return;
        this.#onEvent(event);
      }
    } catch (err) {
      failure = err;
    }
    if (this.#watcher !== watcher || this.#closed) return;
    this.#logger.warn("directory watcher stopped; restarting it and rescanning", {
      error: failure === undefined ? "event stream ended" : (failure as Error).message,
    });
    this.#recoverWatcher();
  }

  /** Restarts the watcher (at most once per second) and reconciles. */
  async #recoverWatcher(): Promise<void> {
    if (this.#recovering || this.#closed) return;
    this.#recovering = true;
    try {
      await this.#sleep(this.#lastWatcherStart + WATCHER_RESTART_DELAY - performance.now());
      this.#closeWatcher();
      if (this.#closed) return;
      const info = await Deno.stat(this.dir).catch(() => undefined);
      if (info?.isDirectory && this.#startWatcher(info.ino)) await this.#watcher?.ready;
      await this.reconcile();
    } finally {
      this.#recovering = false;
    }
  }

  #onEvent(event: Deno.FsEvent): void {
    if (event.flag === "rescan") {
      this.#logger.warn("watcher lost events (queue overflow); rescanning");
      this.reconcile();
    }
    if (event.kind === "access") return;
    const paths = event.paths;
    if (!this.#options.watch) {
      // The set of databases is fixed; the watcher only wakes their syncs.
      if (event.kind === "modify" || event.kind === "create") {
        for (const path of paths) this.#walChanged(path);
      }
      return;
    }
    // A rename inside the tree arrives as remove(old), rename(new), rename(old, new).
    if (event.kind === "rename" && paths.length === 2) {
      this.#gone(paths[0]);
      this.#appeared(paths[1]);
      return;
    }
    for (const path of paths) {
      switch (event.kind) {
        case "remove":
          this.#gone(path);
          break;
        case "create":
          this.#appeared(path);
          break;
        case "rename":
          // One path: the destination of a rename (or, to be safe, its source). Whatever was
          // replicated under that name is gone; whatever is there now is looked at afresh.
          this.#gone(path);
          this.#appeared(path);
          break;
        default:
          if (!this.#walChanged(path)) this.#modified(path);
      }
    }
  }

  /** Forwards a `-wal` change of a known database to the store; true when it was one. */
  #walChanged(path: string): boolean {
    if (!path.endsWith("-wal")) return false;
    const dbPath = path.slice(0, -4);
    if (!this.#known.has(dbPath)) return false;
    this.#options.store.notify(dbPath);
    return true;
  }

  #relative(path: string): string | undefined {
    return path.startsWith(this.#prefix) ? path.slice(this.#prefix.length) : undefined;
  }

  /** A file was written: an unknown candidate may have just become a database. */
  #modified(path: string): void {
    if (this.#known.has(path)) return;
    const rel = this.#relative(path);
    if (rel !== undefined && isCandidatePath(rel, this.#rules)) this.#consider(path);
  }

  /** Something appeared at `path` (created or renamed in): a database, or a directory. */
  #appeared(path: string): void {
    // A database replaced in place is the store's business (its poll compares inodes).
    if (this.#known.has(path)) return;
    const rel = this.#relative(path);
    if (rel === undefined) return;
    if (isCandidatePath(rel, this.#rules)) this.#consider(path);
    else if (isWalkableDir(rel, this.#rules)) this.#scanIfDirectory(path);
  }

  /** `path` was removed or renamed away: a database, or a directory of them. */
  #gone(path: string): void {
    if (path === this.dir) {
      this.#rootGone();
      return;
    }
    const rel = this.#relative(path);
    if (rel === undefined) return;
    this.#unskip(path);
    if (this.#known.has(path) || this.#probing.has(path)) {
      this.#forget(path, "removed");
      return;
    }
    // Not a database we know: maybe a directory holding some.
    if (SIDE_FILE.test(path) || !isWalkableDir(rel, this.#rules)) return;
    const under = `${path}/`;
    for (const known of this.#known) {
      if (known.startsWith(under)) this.#forget(known, "directory removed");
    }
    for (const probing of this.#probing.keys()) {
      if (probing.startsWith(under)) this.#cancelled.add(probing);
    }
    for (const skipped of [...this.#skipped, ...this.#notYet.keys()]) {
      if (skipped.startsWith(under)) this.#unskip(skipped);
    }
  }

  #rootGone(): void {
    this.#logger.warn("monitored directory was removed; waiting for it to come back", {
      databases: this.#known.size,
    });
    for (const path of [...this.#known]) this.#forget(path, "directory removed");
    for (const path of this.#probing.keys()) this.#cancelled.add(path);
    for (const path of [...this.#skipped, ...this.#notYet.keys()]) this.#unskip(path);
    // The watch died with the directory's inode; the reconcile scan restarts it once the
    // directory exists again.
    this.#closeWatcher();
  }

  /** Stops replicating `path` (if it was) and voids a probe of it in flight. */
  #forget(path: string, reason: string): void {
    if (this.#probing.has(path)) this.#cancelled.add(path);
    this.#walSeen.delete(path);
    if (!this.#known.delete(path)) return;
    this.#logger.info("database gone; replication stopped, replica kept", { db: path, reason });
    const removal: Promise<void> = this.#options.store.remove(path, false)
      .catch((err) =>
        this.#logger.error("cannot stop replicating", {
          db: path,
          error: (err as Error).message,
        })
      )
      .finally(() => this.#removals.delete(removal));
    this.#removals.add(removal);
    this.#track(removal);
  }

  // ---------------------------------------------------------------- probing and adding

  /**
   * Looks at `path` (not known yet) and hands it to the store when it is a database. One probe
   * per path at a time; an event during the probe makes it look once more if needed. Resolves
   * true when the path is (now) handed to the store.
   */
  #consider(path: string): Promise<boolean> {
    if (this.#closed) return Promise.resolve(false);
    if (this.#known.has(path)) return Promise.resolve(true);
    const inFlight = this.#probing.get(path);
    if (inFlight) {
      this.#recheck.add(path);
      return inFlight;
    }
    const probing = this.#track(this.#probeAndAdd(path));
    this.#probing.set(path, probing);
    return probing;
  }

  async #probeAndAdd(path: string): Promise<boolean> {
    // Let #consider register this probe before anything below can end it.
    await Promise.resolve();
    try {
      while (!this.#closed) {
        this.#recheck.delete(path);
        this.#cancelled.delete(path);
        // The file may be the inode of a database the store is still closing (renamed):
        // closing our probe's descriptor would drop that connection's locks. Let them finish.
        while (this.#removals.size > 0) await Promise.allSettled([...this.#removals]);
        const found = await this.#probeSlots.run(() =>
          this.#closed
            ? Promise.resolve({ kind: "missing" } as const)
            : probe(path, (err) =>
              this.#logger.warn("cannot read file", { path, error: (err as Error).message }))
        );
        if (this.#closed) return false;
        if (found.kind === "directory") {
          const rel = this.#relative(path);
          if (rel !== undefined && isWalkableDir(rel, this.#rules)) this.#scan(path);
          return false;
        }
        if (found.kind === "missing") this.#unskip(path);
        if (found.kind === "retry") {
          this.#retryLater(path, found.reason);
          return false;
        }
        if (found.kind === "database" && !this.#cancelled.has(path)) {
          this.#unskip(path);
          return await this.#add(path);
        }
        // Not a database (yet): look again only if the file changed while we looked.
        if (!this.#recheck.has(path)) {
          if (found.kind === "other" && !this.#cancelled.has(path)) this.#notDatabase(path, found);
          return false;
        }
      }
      return false;
    } catch (err) {
      this.#logger.error("cannot add database", { db: path, error: (err as Error).message });
      return false;
    } finally {
      // Synchronous with the last check above: an event arriving later starts a new probe.
      this.#probing.delete(path);
      this.#recheck.delete(path);
      this.#cancelled.delete(path);
    }
  }

  /**
   * `path` matches the pattern but is not a SQLite database: say so once, at info, unless it
   * was written so recently that it may still become one (then look again after the grace).
   */
  #notDatabase(path: string, found: { reason: string; modifiedAt: number }): void {
    if (this.#skipped.has(path) || this.#closed) return;
    const now = Date.now();
    const pending = this.#notYet.get(path);
    if (pending?.timer !== undefined) return; // its timer looks again
    const since = pending?.since ?? now;
    if (now - found.modifiedAt < SKIP_GRACE && now - since < SKIP_GRACE) {
      const entry: { since: number; timer?: ReturnType<typeof setTimeout> } = { since };
      entry.timer = setTimeout(() => {
        entry.timer = undefined;
        if (!this.#known.has(path)) this.#consider(path);
      }, SKIP_GRACE - (now - since));
      Deno.unrefTimer(entry.timer);
      this.#notYet.set(path, entry);
      return;
    }
    this.#unskip(path);
    this.#skipped.add(path);
    this.#logger.info("file matches the pattern but is not a SQLite database; skipped", {
      path,
      reason: found.reason,
    });
  }

  /**
   * `path` could not be probed for want of file descriptors: warn once (until descriptors are
   * available again) and look again after a scan interval. Never fatal: the process goes on.
   */
  #retryLater(path: string, reason: string): void {
    if (this.#closed || this.#notYet.get(path)?.timer !== undefined) return;
    if (!this.#warnedLimits.has("descriptors")) {
      this.#warnedLimits.add("descriptors");
      this.#logger.warn(
        "out of file descriptors; databases are probed again later (raise the open files " +
          "limit: ulimit -n, LimitNOFILE= under systemd, or the sysctl fs.file-max)",
        { path, error: reason },
      );
    }
    const entry: { since: number; timer?: ReturnType<typeof setTimeout> } = { since: Date.now() };
    entry.timer = setTimeout(() => {
      entry.timer = undefined;
      this.#notYet.delete(path);
      if (!this.#known.has(path)) this.#consider(path);
    }, this.#options.scanInterval);
    Deno.unrefTimer(entry.timer);
    this.#notYet.set(path, entry);
  }

  /** Forgets that `path` was skipped (removed, or a database now). */
  #unskip(path: string): void {
    this.#skipped.delete(path);
    const pending = this.#notYet.get(path);
    if (pending) {
      clearTimeout(pending.timer);
      this.#notYet.delete(path);
    }
  }

  async #add(path: string): Promise<boolean> {
    let entry: DatabaseEntry;
    try {
      entry = this.#options.entryFor(path);
    } catch (err) {
      this.#logger.error("cannot replicate database", { db: path, error: (err as Error).message });
      return false;
    }
    this.#known.add(path);
    // A database the store cannot open yet is retried by the store; it stays known here.
    await this.#options.store.add(entry);
    return true;
  }

  // ---------------------------------------------------------------- scanning

  async #scanIfDirectory(path: string): Promise<void> {
    const info = await this.#track(Deno.lstat(path).catch(() => undefined));
    if (info?.isDirectory && !this.#closed) this.#scan(path);
  }

  /**
   * Scans the subtree at `dir` (just created or renamed in: the watcher may have missed what
   * was created in it before its watch existed). One scan per directory at a time.
   */
  #scan(dir: string): Promise<void> {
    const running = this.#scans.get(dir);
    if (running) {
      this.#rescan.add(dir);
      return running;
    }
    const scan = this.#track(this.#scanLoop(dir));
    this.#scans.set(dir, scan);
    return scan;
  }

  async #scanLoop(dir: string): Promise<void> {
    await Promise.resolve(); // let #scan register this scan first
    try {
      do {
        this.#rescan.delete(dir);
        const pending: Promise<boolean>[] = [];
        try {
          for await (const path of this.#walk(dir)) {
            if (this.#closed) break;
            if (!this.#known.has(path)) pending.push(this.#consider(path));
          }
        } catch (err) {
          if (!(err instanceof Deno.errors.NotFound)) {
            this.#logger.warn("cannot scan directory", {
              path: dir,
              error: (err as Error).message,
            });
          }
        }
        await Promise.all(pending);
      } while (this.#rescan.has(dir) && !this.#closed);
    } finally {
      this.#scans.delete(dir);
      this.#rescan.delete(dir);
    }
  }

  #walk(start: string): AsyncGenerator<string> {
    return walkCandidates(this.dir, start, {
      ...this.#rules,
      onError: (path, err) =>
        this.#logger.warn("cannot scan directory", { path, error: (err as Error).message }),
    });
  }

  /** One scan of the tree; see {@linkcode reconcile} and `CandidateListing.refresh`. */
  async #reconcileOnce(rereadAll: boolean): Promise<number> {
    let info: Deno.FileInfo | undefined;
    try {
      info = await Deno.stat(this.dir);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) {
        this.#logger.warn("cannot read monitored directory", { error: (err as Error).message });
        return this.#known.size;
      }
      if (this.#known.size > 0 || this.#watcher) this.#rootGone();
      return 0;
    }
    if (!info.isDirectory) return 0;
    // A replaced directory (removed and created again) needs a new watch.
    if (!this.#watcher || info.ino !== this.#rootIno) {
      if (this.#started && !this.#closed && this.#watcher) {
        this.#logger.warn("monitored directory was replaced; watching the new one");
      }
      if (this.#watcher || performance.now() - this.#lastWatcherStart >= WATCHER_RESTART_DELAY) {
        this.#closeWatcher();
        if (!this.#closed && this.#startWatcher(info.ino)) await this.#watcher?.ready;
      }
    }
    const listing = this.#listing;
    const pending: Promise<boolean>[] = [];
    try {
      await listing.refresh(rereadAll);
    } catch (err) {
      this.#logger.warn("cannot scan monitored directory", { error: (err as Error).message });
      return this.#known.size;
    }
    // Files not handed to the store are looked at again (one written into a database in place
    // changes no directory); known ones cost a set lookup each.
    for (const path of listing.paths) {
      if (this.#closed) break;
      if (!this.#known.has(path)) pending.push(this.#consider(path));
    }
    // A skipped file removed without an event (a lost one) is forgotten here.
    for (const path of [...this.#skipped, ...this.#notYet.keys()]) {
      if (!listing.has(path)) this.#unskip(path);
    }
    if (this.#options.watch && this.#started) {
      const unlisted: string[] = [];
      for (const path of this.#known) if (!listing.has(path)) unlisted.push(path);
      for (const path of unlisted) {
        // Created after the walk passed its directory, or really gone? Ask the file system.
        const exists = await Deno.lstat(path).then(() => true, () => false);
        if (!exists) this.#forget(path, "vanished (found by the reconcile scan)");
      }
    }
    await Promise.all(pending);
    let found = 0;
    for (const path of listing.paths) if (this.#known.has(path)) found++;
    return found;
  }

  // ---------------------------------------------------------------- kernel limits

  /** Logs once per limit (until every watch works again) which sysctl to raise. */
  #warnLimit(err: WatchLimitError): void {
    if (this.#warnedLimits.has(err.limit)) return;
    this.#warnedLimits.add(err.limit);
    this.#logger.warn(
      `kernel limit reached; scanning every ${this.#options.scanInterval} ms instead of ` +
        `watching (raise ${err.sysctl})`,
      { path: err.dir, sysctl: err.sysctl, error: err.message },
    );
  }

  /** Starts the fallback scans while something is unwatched, stops them once all is watched. */
  #updateScanTimer(): void {
    const needed = this.#started && !this.#closed &&
      (this.#watcherRefused || this.#unwatched.size > 0);
    if (needed && this.#scanTimer === undefined) {
      const timer = setInterval(() => void this.#fallbackScan(), this.#options.scanInterval);
      Deno.unrefTimer(timer);
      this.#scanTimer = timer;
    } else if (!needed && this.#scanTimer !== undefined) {
      clearInterval(this.#scanTimer);
      this.#scanTimer = undefined;
      this.#walSeen.clear();
      if (!this.#closed && this.#warnedLimits.size > 0) {
        this.#warnedLimits.clear();
        this.#logger.info("every directory is watched again; periodic scans stopped");
      }
    }
  }

  /**
   * One fallback scan: tries the watches again, then looks at what is still unwatched as the
   * watcher would have (new and vanished databases, changed `-wal` files).
   */
  async #fallbackScan(): Promise<void> {
    if (this.#scanning || this.#closed) return;
    this.#scanning = true;
    try {
      await this.#track(this.#fallbackScanOnce());
    } catch (err) {
      this.#logger.warn("periodic scan failed; trying again", { error: (err as Error).message });
    } finally {
      this.#scanning = false;
      this.#updateScanTimer();
    }
  }

  async #fallbackScanOnce(): Promise<void> {
    let roots: string[];
    if (this.#watcherRefused || !this.#watcher) {
      // No watcher at all: try to create one, and scan the whole tree either way (whatever
      // changed before the new watch existed must be caught).
      const info = await Deno.stat(this.dir).catch(() => undefined);
      if (info?.isDirectory && this.#startWatcher(info.ino)) await this.#watcher?.ready;
      if (this.#options.watch) await this.reconcile();
      roots = [this.dir];
    } else {
      const watcher = this.#watcher;
      roots = [];
      for (const dir of this.#unwatched) {
        if (watcher.rewatch(dir)) this.#unwatched.delete(dir); // scanned once more below
        roots.push(dir);
      }
      if (this.#options.watch) {
        for (const dir of roots) await this.#scanUnwatched(dir);
      }
    }
    if (this.#closed) return;
    await this.#checkWALs(roots);
  }

  /**
   * Finds the databases created in, and removed from, an unwatched directory (and below it)
   * since the last scan.
   */
  async #scanUnwatched(dir: string): Promise<void> {
    const seen = new Set<string>();
    const pending: Promise<boolean>[] = [];
    try {
      for await (const path of this.#walk(dir)) {
        if (this.#closed) return;
        seen.add(path);
        if (!this.#known.has(path)) pending.push(this.#consider(path));
      }
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) {
        this.#logger.warn("cannot scan directory", { path: dir, error: (err as Error).message });
        return;
      }
    }
    const under = dir === this.dir ? this.#prefix : `${dir}/`;
    for (const path of [...this.#known]) {
      if (!path.startsWith(under) || seen.has(path)) continue;
      const exists = await Deno.lstat(path).then(() => true, () => false);
      if (!exists) this.#forget(path, "vanished (found by the periodic scan)");
    }
    await Promise.all(pending);
  }

  /**
   * Wakes the sync of each known database below `roots` whose `-wal` changed since the last
   * scan (inode, size or mtime), as the watcher's event would have.
   */
  async #checkWALs(roots: string[]): Promise<void> {
    const all = roots.includes(this.dir);
    const rootSet = new Set(roots);
    const seen = new Map<string, string>();
    for (const path of this.#known) {
      if (!all && !this.#isBelow(path, rootSet)) continue;
      let identity = "none";
      try {
        const info = await Deno.lstat(`${path}-wal`);
        identity = `${info.ino}:${info.size}:${info.mtime?.getTime()}`;
      } catch { /* no WAL (yet): "none" */ }
      if (this.#closed) return;
      const before = this.#walSeen.get(path);
      if (before !== undefined && before !== identity) this.#options.store.notify(path);
      seen.set(path, identity);
    }
    this.#walSeen = seen;
  }

  /** Whether `path` lies in (or below) one of `dirs`. */
  #isBelow(path: string, dirs: ReadonlySet<string>): boolean {
    for (let dir = dirname(path); dir.length >= this.dir.length; dir = dirname(dir)) {
      if (dirs.has(dir)) return true;
      if (dir === "/") break;
    }
    return false;
  }

  // ---------------------------------------------------------------- helpers

  #track<T>(promise: Promise<T>): Promise<T> {
    this.#tasks.add(promise);
    promise.then(
      () => this.#tasks.delete(promise),
      () => this.#tasks.delete(promise),
    );
    return promise;
  }

  /** Waits `ms`, or less when the monitor closes. */
  #sleep(ms: number): Promise<void> {
    if (ms <= 0 || this.#closed) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.#sleepers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.#sleepers.add(wake);
    });
  }
}
