/**
 * The set of replicated databases: adds and removes them at runtime, drives each one's
 * sync → upload cycle, and shuts everything down with a final sync.
 *
 * Adding is idempotent and safe under concurrency (the same path added twice at once opens
 * once). A database that fails to open is logged with its path and retried later; it never
 * stops the others.
 *
 * @module
 */

import type { DB, DBOptions } from "./db.ts";
import { formatTXID } from "../ltx/mod.ts";
import type { FinalSyncFailure, Replica } from "./shipper.ts";
import { ThrottledJob } from "./_scheduler.ts";
import { WALWatcher } from "./_wal_watcher.ts";
import type { ReplicaClient } from "../replica/mod.ts";
import type { Logger } from "../log/mod.ts";
import { lockMetaDir, MetaDirLockedError, type MetaLock } from "./meta_lock.ts";
import { ReplicaInUseError } from "./_replica_marker.ts";
import { attachDatabase, type Attachment } from "./attach.ts";

/** Default leading-edge sync throttle per backend when `sync-interval` is not set, in ms. */
export const DEFAULT_SYNC_INTERVAL = {
  /** A local directory costs nothing per file: keep the lag in milliseconds. */
  file: 100,
  /** Object storage bills per request: at most one upload batch per second. */
  s3: 1000,
} as const;

/** How far the safety-net poll of an idle, watched database backs off: × `monitor-interval`. */
export const IDLE_POLL_FACTOR = 8;

/** Everything the store needs to replicate one database. */
export interface DatabaseEntry extends Omit<DBOptions, "logger"> {
  /** Absolute database path. */
  path: string;
  /** Creates the replica client (called once per open). */
  createClient: () => ReplicaClient;
  /** Leading-edge throttle between syncs, ms. */
  syncInterval: number;
  /** Safety-net poll, ms. */
  monitorInterval: number;
  /** Local L0 files already on the replica are deleted after this long, ms. */
  l0Retention?: number;
  /**
   * Creates the database's compaction, snapshots and retention (the compaction package's
   * `compactorFactory`, injected so that the engine does not depend on it); unset: none.
   */
  createCompactor?: CompactorFactory;
}

/**
 * Compaction, snapshots and retention of one database's replica, running on its own schedule.
 * Implemented above the engine (src/compaction/) and injected through
 * {@linkcode DatabaseEntry.createCompactor}.
 */
export interface ReplicaCompactor {
  /** Running totals, for `/status` and metrics. */
  readonly stats: CompactionStats;
  /** Starts the schedule. */
  start(): void;
  /** Stops the schedule; resolves once a running compaction or snapshot has finished. */
  stop(): Promise<void>;
  /** Takes a snapshot now, through the same queue as the scheduled work. */
  snapshotNow(options: { onProgress?: (bytes: number) => void }): Promise<{ txid: number }>;
}

/** Totals of a {@linkcode ReplicaCompactor}: what it did and how often it failed. */
export interface CompactionStats {
  /** Level-1+ files written. */
  compactions: number;
  /** Snapshots written. */
  snapshots: number;
  /** Replica files removed by retention. */
  filesDeleted: number;
  /** Compactions, snapshots or retention runs that failed (each is retried at the next tick). */
  errors: number;
  /** The last failure's message. */
  lastError?: string;
}

/** Creates the {@linkcode ReplicaCompactor} of an attached database. */
export type CompactorFactory = (db: DB, replica: Replica, logger: Logger) => ReplicaCompactor;

/** Options of {@linkcode Store}. */
export interface StoreOptions {
  logger: Logger;
  /**
   * Watch each database's directory for `-wal` changes. Off when a directory monitor already
   * forwards them through {@linkcode Store.notify}.
   */
  watchWAL?: boolean;
  /** Databases opened at once. Default 16. */
  openConcurrency?: number;
  /** Delay before retrying a database that failed to open, ms. Default 5000. */
  openRetryDelay?: number;
  /**
   * This process's control socket (src/daemon/control.ts), recorded in each database's meta dir lock
   * so that `sluice snapshot` can ask this process for a snapshot.
   */
  controlSocket?: string;
}

/** A database the store is replicating, with its schedule. */
export interface Managed {
  entry: DatabaseEntry;
  db: DB;
  replica: Replica;
  job: ThrottledJob;
  /** The next safety-net poll. */
  poll?: ReturnType<typeof setTimeout>;
  /** Delay before the next poll, ms: grows while the database is idle and watched. */
  pollDelay: number;
  /** When the pending poll fires (`performance.now()` time); meaningful while `poll` is set. */
  pollDueAt?: number;
  unwatch?: () => void;
  lastWALStat?: string;
  /** Compaction, snapshots and retention; runs on its own schedule. */
  compactor?: ReplicaCompactor;
  /** The meta dir lock: this process alone writes the database's L0 files. */
  lock?: MetaLock;
}

/** Live figures for status output and metrics. */
export interface DatabaseStatus {
  path: string;
  replica: string;
  localTXID: string;
  replicaTXID: string | null;
  lagSeconds: number;
  walBytes: number;
  lastSyncAt: string | null;
  lastError: string | null;
  /** When `lastError` happened (RFC 3339); errors are kept after recovery, this dates them. */
  lastErrorAt: string | null;
  /** The meta directory ran out of space lately; local L0 copies are dropped once shipped. */
  metaDiskFull?: boolean;
  /** Seconds since a WAL change that no sync has picked up (0 when healthy; see DB.observeWAL). */
  stalledSeconds: number;
  stats: DB["stats"] & { uploads: number; uploadErrors: number; bytesUploaded: number };
  /** The compactor's totals; null when the database has no compactor. */
  compaction: CompactionStats | null;
}

/** The set of databases under replication. */
export class Store {
  #options: Required<Omit<StoreOptions, "controlSocket">> & StoreOptions;
  #managed = new Map<string, Managed>();
  #opening = new Map<string, Promise<Managed | undefined>>();
  #retryTimers = new Map<string, ReturnType<typeof setTimeout>>();
  #watcher: WALWatcher;
  #slots: number;
  #queue: Array<() => void> = [];
  #closed = false;
  #refused = new Map<string, MetaDirLockedError | ReplicaInUseError>();
  /** Databases removed and still closing (their connections, descriptors and meta dir lock). */
  #closing = new Map<string, Promise<void>>();
  /** The database each closing in `#closing` is closing (a moved file is found by inode). */
  #closingDBs = new Map<Promise<void>, DB>();
  /** Paths being restarted after their file was replaced: true once removed meanwhile. */
  #restarting = new Map<string, boolean>();

  /** Creates an empty store. */
  constructor(options: StoreOptions) {
    this.#options = { watchWAL: true, openConcurrency: 16, openRetryDelay: 5000, ...options };
    this.#slots = this.#options.openConcurrency;
    this.#watcher = new WALWatcher((dir, err) =>
      this.#options.logger.warn("watcher failed; relying on polling", {
        dir,
        error: String(err),
      })
    );
  }

  /** Paths of the databases being replicated. */
  get paths(): string[] {
    return [...this.#managed.keys()];
  }

  /**
   * Entries of the per-path bookkeeping, all kinds together: databases replicated, opening,
   * waiting for a retry, or refused. 0 once every database was removed: nothing is kept for a
   * removed tenant.
   */
  get trackedPaths(): number {
    return this.#managed.size + this.#opening.size + this.#retryTimers.size + this.#refused.size +
      this.#closing.size + this.#restarting.size;
  }

  /**
   * Why the store refused `path` for good (another `sluice replicate` holds its meta dir, or
   * its replica belongs to another database), or undefined. A refused database is not retried;
   * adding it again tries once more.
   */
  refusal(path: string): MetaDirLockedError | ReplicaInUseError | undefined {
    return this.#refused.get(path);
  }

  /** The managed database at `path`, if open. */
  get(path: string): Managed | undefined {
    return this.#managed.get(path);
  }

  /**
   * Starts replicating a database. Idempotent: adding a path that is open or opening returns
   * the same outcome. Resolves false (and schedules a retry) when the database cannot be
   * opened yet.
   */
  add(entry: DatabaseEntry): Promise<boolean> {
    if (this.#closed) return Promise.resolve(false);
    const existing = this.#managed.get(entry.path);
    if (existing) return Promise.resolve(true);
    this.#refused.delete(entry.path);
    let opening = this.#opening.get(entry.path);
    if (!opening) {
      // A database at this path still being closed (deleted and re-created at once) holds its
      // meta dir lock until it is done: open the new one after it.
      const closing = this.#closing.get(entry.path);
      opening = (closing ? closing.then(() => this.#withSlot(() => this.#open(entry))) : this
        .#withSlot(() => this.#open(entry))).finally(() => this.#opening.delete(entry.path));
      this.#opening.set(entry.path, opening);
    }
    return opening.then((m) => m !== undefined);
  }

  /**
   * Stops replicating a database and releases its resources; its replica is kept.
   * `finalSync` syncs and uploads once more first (false when the file is already gone).
   */
  remove(path: string, finalSync = false): Promise<void> {
    // A restart of this path in flight (its file was replaced) must not re-add it now.
    if (this.#restarting.has(path)) this.#restarting.set(path, true);
    return this.#remove(path, finalSync);
  }

  async #remove(path: string, finalSync: boolean): Promise<void> {
    this.#cancelRetry(path);
    await this.#opening.get(path)?.catch(() => {});
    this.#cancelRetry(path); // an open that failed meanwhile scheduled one
    const managed = this.#managed.get(path);
    if (!managed) {
      // Being closed by an earlier call: done only once that is (its locks are released).
      await this.#closing.get(path);
      return;
    }
    this.#managed.delete(path);
    const closing: Promise<void> = this.#shutdown(managed, finalSync).then(
      () => {},
      (err) => this.#options.logger.error("cannot close database", { db: path, error: `${err}` }),
    ).finally(() => {
      if (this.#closing.get(path) === closing) this.#closing.delete(path);
    });
    this.#closing.set(path, closing);
    this.#closingDBs.set(closing, managed.db);
    closing.finally(() => this.#closingDBs.delete(closing));
    await closing;
  }

  /** A change was seen on `path` or its WAL: sync soon. */
  notify(path: string): void {
    const managed = this.#managed.get(path);
    if (!managed) return;
    const base = managed.entry.monitorInterval;
    managed.pollDelay = base; // active again: poll at the base rate
    // A long idle wait is cut short: a replaced file is then noticed within one interval.
    if (managed.poll !== undefined && (managed.pollDueAt ?? 0) - performance.now() > base) {
      this.#schedulePoll(managed);
    }
    managed.job.request();
  }

  /** Runs a sync and upload of every database now, waiting for them (tests, shutdown). */
  async syncAll(): Promise<void> {
    await Promise.all([...this.#managed.values()].map((m) => m.job.runNow()));
  }

  /**
   * Final sync and upload of every database, then closes everything.
   * @returns the databases whose final sync failed, with how far behind their replicas are.
   */
  async close(): Promise<FinalSyncFailure[]> {
    if (this.#closed) return [];
    this.#closed = true;
    for (const timer of this.#retryTimers.values()) clearTimeout(timer);
    this.#retryTimers.clear();
    await Promise.all([...this.#opening.values()].map((p) => p.catch(() => {})));
    this.#watcher.close();
    const all = [...this.#managed.values()];
    this.#managed.clear();
    await Promise.all(this.#closing.values());
    const failures = await Promise.all(all.map((m) => this.#shutdown(m, true)));
    return failures.filter((failure) => failure !== undefined);
  }

  /** Per-database status for `sluice status` and metrics. */
  status(): DatabaseStatus[] {
    const now = Date.now();
    return [...this.#managed.values()].map(({ entry, db, replica, compactor }) => {
      const position = replica.lastConfirmedPosition;
      // The newer of the database's and the replica's last error.
      const [lastError, lastErrorAt] =
        (replica.stats.lastErrorAt?.getTime() ?? -1) >= (db.stats.lastErrorAt?.getTime() ?? -1)
          ? [replica.stats.lastError, replica.stats.lastErrorAt]
          : [db.stats.lastError, db.stats.lastErrorAt];
      return {
        path: entry.path,
        replica: replica.client.location,
        localTXID: formatTXID(db.txid),
        replicaTXID: position === undefined ? null : formatTXID(position),
        lagSeconds: replica.lag(db.txid, now) / 1000,
        walBytes: db.walBytesSynced,
        lastSyncAt: db.stats.lastSyncAt?.toISOString() ?? null,
        lastError: lastError ?? db.stats.lastError ?? null,
        lastErrorAt: lastErrorAt?.toISOString() ?? null,
        metaDiskFull: replica.metaDiskFull(now),
        stalledSeconds: db.stats.stalledSince ? (now - db.stats.stalledSince.getTime()) / 1000 : 0,
        stats: { ...db.stats, ...replica.stats },
        compaction: compactor ? { ...compactor.stats } : null,
      };
    });
  }

  async #open(entry: DatabaseEntry): Promise<Managed | undefined> {
    const logger = this.#options.logger.child({ db: entry.path });
    let attached: Attachment | undefined;
    try {
      await this.#closeMovedFrom(entry.path);
      attached = await attachDatabase(entry, { logger, lock: () => this.#lock(entry) });
      const { db, replica, lock } = attached;
      const client = replica.client;
      const job = new ThrottledJob(() => this.#cycle(managed), {
        interval: entry.syncInterval,
        onError: (err, attempt) =>
          logger.error("sync failed", { error: (err as Error).message, attempt }),
      });
      const managed: Managed = {
        entry,
        db,
        replica,
        job,
        pollDelay: entry.monitorInterval,
        compactor: entry.createCompactor?.(db, replica, logger),
        lock,
      };
      if (this.#closed) {
        await db.close();
        await client.close();
        lock.release();
        return undefined;
      }
      if (this.#options.watchWAL) {
        try {
          managed.unwatch = this.#watcher.watch(entry.path, () => this.notify(entry.path));
        } catch (err) {
          logger.warn("cannot watch; relying on polling", { error: (err as Error).message });
        }
      }
      this.#managed.set(entry.path, managed);
      this.#schedulePoll(managed);
      logger.info("replicating", { replica: client.location, txid: formatTXID(db.txid) });
      job.request();
      managed.compactor?.start();
      return managed;
    } catch (err) {
      if (attached) {
        await attached.db.close().catch(() => {});
        await attached.replica.client.close().catch(() => {});
        attached.lock.release();
      }
      // Another `sluice replicate` owns this database: refused, not retried (a `sluice
      // snapshot` holds the lock only for a moment, so that one is waited out).
      if (
        err instanceof ReplicaInUseError ||
        (err instanceof MetaDirLockedError && err.holder?.command !== "snapshot" &&
          err.holder?.pid !== Deno.pid)
      ) {
        this.#refused.set(entry.path, err);
        logger.error("refusing to replicate", { error: err.message });
        return undefined;
      }
      logger.error("cannot open database; will retry", { error: (err as Error).message });
      this.#scheduleRetry(entry);
      return undefined;
    }
  }

  /**
   * A database renamed within the watched tree arrives here under its new name while it may
   * still be open under the old one. Its WAL stays at the old path (SQLite names it after the
   * path), so the old attachment is closed first: its connection, then the last one on the
   * file, checkpoints that WAL into the database on close. Opening the new name first would
   * make the old connection not the last, and the moved database would lose every commit
   * still in that WAL.
   */
  async #closeMovedFrom(path: string): Promise<void> {
    const info = await Deno.stat(path).catch(() => undefined);
    if (!info) return;
    for (const [oldPath, managed] of this.#managed) {
      if (oldPath === path || !managed.db.isFile(info)) continue;
      this.#options.logger.info("database moved; closing it under its old name first", {
        from: oldPath,
        to: path,
      });
      await this.remove(oldPath, true);
    }
    // Or already being closed (the rename's first half arrived first): wait for it.
    for (const [closing, db] of this.#closingDBs) if (db.isFile(info)) await closing;
  }

  /** The meta dir lock, naming this process and its control socket. */
  #lock(entry: DatabaseEntry): Promise<MetaLock> {
    return lockMetaDir(entry.metaDir, {
      command: "replicate",
      ...(this.#options.controlSocket ? { socket: this.#options.controlSocket } : {}),
    });
  }

  #cancelRetry(path: string): void {
    clearTimeout(this.#retryTimers.get(path));
    this.#retryTimers.delete(path);
  }

  #scheduleRetry(entry: DatabaseEntry): void {
    if (this.#closed || this.#retryTimers.has(entry.path)) return;
    this.#retryTimers.set(
      entry.path,
      setTimeout(() => {
        this.#retryTimers.delete(entry.path);
        this.add(entry);
      }, this.#options.openRetryDelay),
    );
  }

  /** One sync → upload cycle. Returns true when more WAL is waiting. */
  async #cycle(managed: Managed): Promise<boolean> {
    const { db, replica, entry } = managed;
    // A full meta directory: drop the local copies of files already shipped, and sync again.
    const result = await db.sync().catch(async (err) => {
      if (!await replica.relieveFullMetaDir(err, db.txid)) throw err;
      return await db.sync();
    });
    if (result.txid !== undefined) replica.noteLocalWrite(Date.now());
    if (replica.knownPosition === undefined || replica.knownPosition < db.txid) {
      await replica.upload(db.txid);
      // With a compactor, its L0 retention removes local L0 files (once level 1 covers them).
      if (!managed.compactor && entry.l0Retention !== undefined) {
        await replica.cleanupLocal(entry.l0Retention);
      }
    }
    return result.more === true;
  }

  /**
   * Schedules the next safety-net poll. While a watcher covers the database and nothing
   * changes, the delay doubles up to {@linkcode IDLE_POLL_FACTOR} × `monitor-interval`: a
   * thousand idle tenants then cost a few hundred stat calls a second instead of two thousand.
   * Without a watcher the poll is the only trigger and keeps its interval.
   */
  #schedulePoll(managed: Managed): void {
    if (this.#managed.get(managed.entry.path) !== managed) return;
    clearTimeout(managed.poll);
    managed.pollDueAt = performance.now() + managed.pollDelay;
    managed.poll = setTimeout(async () => {
      managed.poll = undefined; // running: notify() leaves the rescheduling to us
      const changed = await this.#poll(managed);
      const watched = !this.#options.watchWAL || managed.unwatch !== undefined;
      const base = managed.entry.monitorInterval;
      managed.pollDelay = changed || !watched
        ? base
        : Math.min(managed.pollDelay * 2, base * IDLE_POLL_FACTOR);
      this.#schedulePoll(managed);
    }, managed.pollDelay);
  }

  /**
   * The safety-net poll: a stat of the database (replaced?) and of its WAL; a sync only when
   * the WAL changed or the replica is behind. Resolves true when something changed.
   */
  async #poll(managed: Managed): Promise<boolean> {
    try {
      if (await managed.db.replaced()) {
        // Removed while we looked (a directory monitor saw the file go): re-adding it would
        // leave a retry loop behind for a database nobody replicates any more.
        if (this.#managed.get(managed.entry.path) !== managed) return false;
        const path = managed.entry.path;
        this.#options.logger.warn("database file was replaced; starting over", { db: path });
        this.#restarting.set(path, false);
        try {
          await this.#remove(path, false);
          // Removed meanwhile (a directory monitor saw the file go): re-adding it would leave a
          // retry loop behind for a database nobody replicates any more.
          if (this.#restarting.get(path) === false) await this.add(managed.entry);
        } finally {
          this.#restarting.delete(path);
        }
        return true;
      }
      const stat = await Deno.stat(managed.entry.path + "-wal").catch(() => undefined);
      managed.db.observeWAL(stat);
      const key = stat ? `${stat.size}:${stat.mtime?.getTime()}:${stat.ino}` : "none";
      const behind = managed.replica.knownPosition === undefined ||
        managed.replica.knownPosition < managed.db.txid;
      if (key !== managed.lastWALStat || behind) {
        managed.lastWALStat = key;
        managed.job.request();
        return true;
      }
      return false;
    } catch (err) {
      this.#options.logger.warn("poll failed", {
        db: managed.entry.path,
        error: (err as Error).message,
      });
      return true;
    }
  }

  async #shutdown(managed: Managed, finalSync: boolean): Promise<FinalSyncFailure | undefined> {
    // No new sync from here on: a database removed with its directory must not have its meta
    // dir re-created while the compactor finishes.
    clearTimeout(managed.poll);
    managed.unwatch?.();
    const jobStopped = managed.job.stop();
    await managed.compactor?.stop(); // waits for a running compaction or snapshot
    await jobStopped;
    let failure: FinalSyncFailure | undefined;
    if (finalSync) {
      try {
        await this.#cycleUntilDone(managed);
      } catch (err) {
        // Logged with how far behind the replica stays.
        failure = await managed.replica.finalSyncFailed(managed.entry.path, err, managed.db.txid);
      }
    }
    await managed.db.close();
    await managed.replica.client.close();
    managed.lock?.release();
    return failure;
  }

  async #cycleUntilDone(managed: Managed): Promise<void> {
    for (let i = 0; i < 1000; i++) {
      if (!(await this.#cycle(managed))) return;
    }
  }

  async #withSlot<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#slots === 0) await new Promise<void>((resolve) => this.#queue.push(resolve));
    else this.#slots--;
    try {
      return await fn();
    } finally {
      const next = this.#queue.shift();
      if (next) next();
      else this.#slots++;
    }
  }
}
