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

import { statOrUndefined } from "./_local_stat.ts";
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
import {
  type FileState,
  fileStateChanged,
  fileStateOf,
  type ParkedState,
  statKey,
} from "./_park.ts";
import { WorkQueue } from "./work_queue.ts";
import { TimerWheel } from "./_timer_wheel.ts";
import { releaseFreedMemory, stopIdleCheckpointWorker } from "../sqlite/mod.ts";

/** Default leading-edge sync throttle per backend when `sync-interval` is not set, in ms. */
export const DEFAULT_SYNC_INTERVAL = {
  /** A local directory costs nothing per file: keep the lag in milliseconds. */
  file: 100,
  /** Object storage bills per request: at most one upload batch per second. */
  s3: 1000,
  /** Azure Blob Storage bills per request too. */
  abs: 1000,
  /** A remote server: one batch a second keeps it and the link unburdened, as Litestream. */
  sftp: 1000,
  /** A remote server over HTTP: as sftp. */
  webdav: 1000,
} as const;

/** How far the safety-net poll of an idle, watched database backs off: × `monitor-interval`. */
export const IDLE_POLL_FACTOR = 8;

/** Default `park-after` of directory tenants, ms: a minute without a change. */
export const DEFAULT_PARK_AFTER = 60_000;

/**
 * Default period of the sweep that stats parked databases, ms: a change the watcher missed
 * wakes its database within this long (longer when more than {@linkcode DEFAULT_SWEEP_RATE}
 * × 60 databases are parked).
 */
export const DEFAULT_SWEEP_INTERVAL = 60_000;

/** Default cap of the sweep, parked databases looked at per second (two stats each). */
export const DEFAULT_SWEEP_RATE = 500;

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
  /**
   * Parks the database after this long without a change, ms: its connections, descriptors,
   * timers, replica client and meta dir lock are released until its WAL or file changes.
   * Unset or 0: never parked.
   */
  parkAfter?: number;
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

/**
 * Creates the {@linkcode ReplicaCompactor} of an attached database; its merges and snapshots
 * run in `work`, the store's heavy-work queue.
 */
export type CompactorFactory = (
  db: DB,
  replica: Replica,
  logger: Logger,
  work: WorkQueue,
) => ReplicaCompactor;

/** Options of {@linkcode Store}. */
export interface StoreOptions {
  logger: Logger;
  /**
   * Watch each database's directory for `-wal` changes. Off when a directory monitor already
   * forwards them through {@linkcode Store.notify}.
   */
  watchWAL?: boolean;
  /** Take over object-store replicas' owner leases (`replicate --takeover`). Default false. */
  takeover?: boolean;
  /** Databases opened at once. Default 16. */
  openConcurrency?: number;
  /** Delay before retrying a database that failed to open, ms. Default 5000. */
  openRetryDelay?: number;
  /**
   * Databases open (not parked) at once, at most: beyond it, opening one parks the least
   * recently active first. Default: what the process's descriptor limit (`RLIMIT_NOFILE`) allows
   * at {@linkcode DESCRIPTORS_PER_DATABASE} each, after {@linkcode RESERVED_DESCRIPTORS}.
   */
  maxActive?: number;
  /**
   * This process's control socket (src/daemon/control.ts), recorded in each database's meta dir lock
   * so that `sluice snapshot` can ask this process for a snapshot.
   */
  controlSocket?: string;
  /** Period of the sweep over parked databases, ms. Default {@linkcode DEFAULT_SWEEP_INTERVAL}. */
  sweepInterval?: number;
  /** Parked databases the sweep looks at per second, at most. Default {@linkcode DEFAULT_SWEEP_RATE}. */
  sweepRate?: number;
  /**
   * The heavy-work queue: initial snapshots here, merges and snapshots in the compactors. Pass
   * one queue to every store of a process so that the bound is the process's. Default: a
   * queue of {@linkcode DEFAULT_BACKGROUND_JOBS}.
   */
  work?: WorkQueue;
}

/** Descriptors an open database may hold: its file and WAL twice (ours and SQLite's), the
 * `-shm`, a checkpoint's or writer's connection, and the meta dir lock. */
export const DESCRIPTORS_PER_DATABASE = 8;

/**
 * Period of the sweep over parked databases, ms (shorter when `sweepInterval` is). Each wake-up
 * of an idle process costs about half a millisecond of CPU in Deno's event loop (measured: a
 * 1 s timer alone, 0.07 % of a core), more than the stats of a hundred parked databases.
 */
const SWEEP_TICK_MS = 5000;
/** Parked databases close() opens at once for their final sync (see #finalSyncChangedParked). */
const FINAL_WAKE_BATCH = 8;

/**
 * Longest run of the sweep's synchronous stats before it lets the event loop turn, ms (834
 * parked databases, the batch of one tick with 10,000 parked, take about 5 ms).
 */
const SWEEP_SLICE_MS = 5;

/** A first sync of a database this large goes through the heavy-work queue. */
const HEAVY_SNAPSHOT_BYTES = 16 * 1024 * 1024;

/** Longest delay of a new database's compaction behind other databases' opens, ms. */
const COMPACTOR_DEFER_MS = 10_000;

/** First retry of a failed open, ms; doubled per failure up to `openRetryDelay`. */
const FIRST_OPEN_RETRY_MS = 100;

/** Delays between the trims of freed memory after the last park, ms (see `#scheduleMemoryRelease`). */
const MEMORY_RELEASE_DELAYS = [2000, 13_000, 45_000];

/** Longest wait for a database to become parkable when the descriptor budget is full, ms. */
const MAKE_ROOM_WAIT_MS = 5000;

/** Descriptors kept for everything else: watchers, workers, sockets, replica clients. */
export const RESERVED_DESCRIPTORS = 512;

/**
 * How many databases fit in this process's descriptor limit (the soft `RLIMIT_NOFILE`, read from
 * /proc/self/limits); unbounded where it cannot be read. Running out of descriptors must
 * degrade (more databases parked), never fail opens at random or crash the process.
 */
export function activeDatabaseLimit(): number {
  return Math.max(16, Math.floor(descriptorBudget() / DESCRIPTORS_PER_DATABASE));
}

/** The soft `RLIMIT_NOFILE` less {@linkcode RESERVED_DESCRIPTORS}; Infinity where unknown. */
function descriptorBudget(): number {
  try {
    const limits = Deno.readTextFileSync("/proc/self/limits");
    const soft = limits.match(/^Max open files\s+(\d+|unlimited)/m)?.[1];
    if (soft === undefined || soft === "unlimited") return Infinity;
    return Number(soft) - RESERVED_DESCRIPTORS;
  } catch {
    return Infinity;
  }
}

/** Default of `background-jobs`: heavy jobs (snapshots, compactions) running at once. */
export const DEFAULT_BACKGROUND_JOBS = 2;

/** A database the store is replicating, with its schedule. */
export interface Managed {
  entry: DatabaseEntry;
  db: DB;
  replica: Replica;
  job: ThrottledJob;
  /** Delay before the next poll, ms: grows while the database is idle and watched. */
  pollDelay: number;
  /**
   * When the next safety-net poll is due (`performance.now()` time), on the store's one
   * {@linkcode TimerWheel}; unset while a poll runs or when none is scheduled.
   */
  pollDueAt?: number;
  unwatch?: () => void;
  lastWALStat?: string;
  /** Compaction, snapshots and retention; runs on its own schedule. */
  compactor?: ReplicaCompactor;
  /** The meta dir lock: this process alone writes the database's L0 files. */
  lock?: MetaLock;
  /** When the database last changed or synced (`performance.now()` time); parking counts from it. */
  lastActivity: number;
}

/**
 * A parked database: everything released, what remains is this record (the cursor is on disk
 * in its meta directory) and the directory watch that already covers it.
 */
interface ParkedDatabase {
  entry: DatabaseEntry;
  /** Stat of the database and its WAL right after parking; any difference wakes it. */
  fileState: FileState;
  /** How the database was left, for its next open. */
  state: ParkedState;
  /** Its status when parked, shown while parked; its counters carry over to the next open. */
  figures: DatabaseStatus;
  /** Stops the WAL watch kept while parked (stores that watch WALs themselves). */
  unwatch?: () => void;
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
  /** Lifecycle state for metrics (`sluice_databases_by_state`); unset counts as "active". */
  state?: "active" | "parked" | "failing";
}

/** The set of databases under replication. */
export class Store {
  #options: Required<Omit<StoreOptions, "controlSocket" | "work" | "maxActive">> & StoreOptions;
  #maxActive: number;
  #managed = new Map<string, Managed>();
  #opening = new Map<string, Promise<Managed | undefined>>();
  #retryTimers = new Map<string, ReturnType<typeof setTimeout>>();
  /** Consecutive failed opens per path, for the growing delay of `#scheduleRetry`. */
  #openFailures = new Map<string, number>();
  #watcher: WALWatcher;
  /** Databases being opened at once (`openConcurrency`). */
  #openSlots: WorkQueue;
  #closed = false;
  #closePromise?: Promise<FinalSyncFailure[]>;
  /** Parked databases close() opens for their final sync (see #finalSyncChangedParked). */
  #finalWakes = new Set<string>();
  /** Parked databases woken by a change whose open the stop dropped (see #open). */
  #droppedWakes: Omit<ParkedDatabase, "fileState">[] = [];
  #refused = new Map<string, MetaDirLockedError | ReplicaInUseError>();
  /** Databases removed and still closing (their connections, descriptors and meta dir lock). */
  #closing = new Map<string, Promise<void>>();
  /** The database each closing in `#closing` is closing (a moved file is found by inode). */
  #closingDBs = new Map<Promise<void>, DB>();
  /** Paths being restarted after their file was replaced: true once removed meanwhile. */
  #restarting = new Map<string, boolean>();
  /** Parked databases (see {@linkcode DatabaseEntry.parkAfter}). */
  #parked = new Map<string, ParkedDatabase>();
  /** Databases being parked: true once a change arrived meanwhile (they wake at once). */
  #parking = new Map<string, boolean>();
  #sweepTimer?: ReturnType<typeof setTimeout>;
  /** The safety-net polls of all open databases, on one timer. */
  #polls = new TimerWheel<Managed>();
  #work: WorkQueue;
  #budgetWarned = false;
  /** Descriptors this process may use for databases (measured against); see `#descriptorsFull`. */
  #fdBudget: number;
  #fdCount = 0;
  #trimTimer?: ReturnType<typeof setTimeout>;
  #fdCountAt = -Infinity;
  /** Opens past `#makeRoom` and not yet in `#managed`: they count against the budget. */
  #reserved = 0;
  /** Resolved after the next sync cycle of any database (see `#makeRoom`). */
  #cycleWaiters: Array<() => void> = [];
  #sweepCursor?: Iterator<ParkedDatabase>;
  /** The managed databases by `device:inode` of their file (see `DB.fileKey`), and back. */
  #byFile = new Map<string, Managed>();
  #fileKeys = new WeakMap<Managed, string>();
  /** Opened databases whose compactor waits for the opens in flight (see `#startCompactor`). */
  #deferredCompactors = new Set<Managed>();
  #compactorTimer?: ReturnType<typeof setTimeout>;

  /** Creates an empty store. */
  constructor(options: StoreOptions) {
    this.#options = {
      watchWAL: true,
      takeover: false,
      openConcurrency: 16,
      openRetryDelay: 5000,
      sweepInterval: DEFAULT_SWEEP_INTERVAL,
      sweepRate: DEFAULT_SWEEP_RATE,
      ...options,
    };
    this.#openSlots = new WorkQueue(this.#options.openConcurrency);
    this.#work = options.work ?? new WorkQueue(DEFAULT_BACKGROUND_JOBS);
    this.#maxActive = options.maxActive ?? activeDatabaseLimit();
    this.#fdBudget = options.maxActive === undefined ? descriptorBudget() : Infinity;
    this.#watcher = new WALWatcher((dir, err) =>
      this.#options.logger.warn("watcher failed; relying on polling", {
        dir,
        error: String(err),
      })
    );
  }

  /** Paths of the databases being replicated, parked ones included. */
  get paths(): string[] {
    return [...this.#managed.keys(), ...this.#parked.keys()];
  }

  /** Databases being opened (or waiting for a slot to open). */
  get openingCount(): number {
    return this.#opening.size;
  }

  /** Databases that cannot be opened: waiting for a retry, or refused (see {@linkcode refusal}). */
  get unopenedPaths(): string[] {
    return [...this.#retryTimers.keys(), ...this.#refused.keys()];
  }

  /** Paths of the parked databases. */
  get parkedPaths(): string[] {
    return [...this.#parked.keys()];
  }

  /**
   * Entries of the per-path bookkeeping, all kinds together: databases replicated, opening,
   * waiting for a retry, or refused. 0 once every database was removed: nothing is kept for a
   * removed tenant.
   */
  get trackedPaths(): number {
    return this.#managed.size + this.#opening.size + this.#retryTimers.size + this.#refused.size +
      this.#closing.size + this.#restarting.size + this.#parked.size + this.#parking.size +
      this.#openFailures.size;
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
    // Parked (or being parked) is replicated: a change wakes it, adding again does not.
    if (existing || this.#parked.has(entry.path) || this.#parking.has(entry.path)) {
      return Promise.resolve(true);
    }
    return this.#add(entry);
  }

  #add(entry: DatabaseEntry, carried?: DatabaseStatus, parked?: ParkedState): Promise<boolean> {
    this.#refused.delete(entry.path);
    let opening = this.#opening.get(entry.path);
    if (!opening) {
      // A database at this path still being closed (deleted and re-created at once) holds its
      // meta dir lock until it is done: open the new one after it.
      const closing = this.#closing.get(entry.path);
      const open = () => this.#openSlots.run(() => this.#open(entry, carried, parked));
      opening = (closing ? closing.then(open) : open()).finally(() => {
        this.#opening.delete(entry.path);
        if (this.#opening.size === 0) this.#startDeferredCompactors();
      });
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
    if (this.#parking.has(path)) await this.#closing.get(path);
    const parked = this.#parked.get(path);
    if (parked) {
      // Released when it was parked, its last changes on the replica: only the record goes.
      this.#parked.delete(path);
      parked.unwatch?.();
      return;
    }
    await this.#opening.get(path)?.catch(() => {});
    this.#cancelRetry(path); // an open that failed meanwhile scheduled one
    const managed = this.#managed.get(path);
    if (!managed) {
      // Being closed by an earlier call: done only once that is (its locks are released).
      await this.#closing.get(path);
      return;
    }
    this.#managed.delete(path);
    this.#unindex(managed);
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

  /** A change was seen on `path` or its WAL: sync soon (a parked database wakes). */
  notify(path: string): void {
    const managed = this.#managed.get(path);
    if (!managed) {
      if (this.#parking.has(path)) this.#parking.set(path, true);
      else if (this.#parked.has(path)) this.#checkParked(path);
      return;
    }
    managed.lastActivity = performance.now();
    const base = managed.entry.monitorInterval;
    managed.pollDelay = base; // active again: poll at the base rate
    // A long idle wait is cut short: a replaced file is then noticed within one interval.
    if (managed.pollDueAt !== undefined && managed.pollDueAt - performance.now() > base) {
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
  close(): Promise<FinalSyncFailure[]> {
    return this.#closePromise ??= this.#close();
  }

  async #close(): Promise<FinalSyncFailure[]> {
    this.#closed = true;
    for (const timer of this.#retryTimers.values()) clearTimeout(timer);
    this.#retryTimers.clear();
    clearTimeout(this.#sweepTimer);
    clearTimeout(this.#trimTimer);
    clearTimeout(this.#compactorTimer);
    this.#deferredCompactors.clear();
    this.#polls.close();
    await Promise.all([...this.#opening.values()].map((p) => p.catch(() => {})));
    await Promise.all(this.#closing.values());
    const parkedFailures = await this.#finalSyncChangedParked();
    this.#parked.clear();
    this.#watcher.close();
    const all = [...this.#managed.values()];
    this.#managed.clear();
    await Promise.all(this.#closing.values());
    const failures = await Promise.all(all.map((m) => this.#shutdown(m, true)));
    return [...parkedFailures, ...failures.filter((failure) => failure !== undefined)];
  }

  /** Per-database status for `sluice status` and metrics, parked databases included. */
  status(): DatabaseStatus[] {
    const now = Date.now();
    const all = [...this.#managed.values()].map((managed) => this.#statusOf(managed, now));
    for (const parked of this.#parked.values()) all.push(parked.figures);
    return all;
  }

  #statusOf(managed: Managed, now: number): DatabaseStatus {
    const { entry, db, replica, compactor, job } = managed;
    {
      const position = replica.lastConfirmedPosition;
      // The newer of the database's and the replica's last error.
      const [lastError, lastErrorAt] =
        (replica.stats.lastErrorAt?.getTime() ?? -1) >= (db.stats.lastErrorAt?.getTime() ?? -1)
          ? [replica.stats.lastError, replica.stats.lastErrorAt]
          : [db.stats.lastError, db.stats.lastErrorAt];
      return {
        state: job.failures > 0 || db.stats.stalledSince ? "failing" : "active",
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
    }
  }

  async #open(
    entry: DatabaseEntry,
    carried?: DatabaseStatus,
    parked?: ParkedState,
  ): Promise<Managed | undefined> {
    // Shutting down: an open still queued behind others (a burst of thousands of tenants) is
    // dropped, not carried out only to be closed again (but for a final wake-up).
    const finalWake = this.#finalWakes.has(entry.path);
    if (this.#closed && !finalWake) {
      // A parked database woken by a change has that change to upload: close() opens it.
      if (parked && carried) this.#droppedWakes.push({ entry, figures: carried, state: parked });
      return undefined;
    }
    const logger = this.#options.logger.child({ db: entry.path });
    let attached: Attachment | undefined;
    let reserved = false;
    try {
      await this.#closeMovedFrom(entry.path);
      await this.#makeRoom();
      reserved = true;
      attached = await attachDatabase(parked ? { ...entry, parked } : entry, {
        logger,
        lock: () => this.#lock(entry),
        takeover: this.#options.takeover,
      });
      const { db, replica, lock } = attached;
      const client = replica.client;
      const job = new ThrottledJob(() => this.#cycle(managed), {
        interval: entry.syncInterval,
        onError: (err, attempt) =>
          logger.error("sync failed", { error: (err as Error).message, attempt }),
        onQuietEnded: () => this.#watcher.resume(entry.path),
      });
      const managed: Managed = {
        entry,
        db,
        replica,
        job,
        pollDelay: entry.monitorInterval,
        compactor: entry.createCompactor?.(db, replica, logger, this.#work),
        lock,
        lastActivity: performance.now(),
      };
      if (carried) carryCounters(managed, carried);
      if (this.#closed && (finalWake || parked)) {
        // Only for close()'s final sync: no watch, poll, sync or compaction of its own. A
        // wake-up (`parked`) that the stop overtook has a change to upload (CI saw one
        // closed unsynced here, RELIABILITY F13).
        this.#managed.set(entry.path, managed);
        return managed;
      }
      if (this.#closed) {
        await db.close();
        await client.close();
        lock.release();
        return undefined;
      }
      if (this.#options.watchWAL) {
        try {
          managed.unwatch = this.#watcher.watch(
            entry.path,
            () => this.notify(entry.path),
            () => this.#managed.get(entry.path)?.job.quietUntil() ?? 0,
          );
        } catch (err) {
          logger.warn("cannot watch; relying on polling", { error: (err as Error).message });
        }
      }
      this.#managed.set(entry.path, managed);
      this.#openFailures.delete(entry.path);
      const fileKey = db.fileKey;
      if (fileKey) {
        this.#byFile.set(fileKey, managed);
        this.#fileKeys.set(managed, fileKey);
      }
      // What the first sync, requested below, starts from at the earliest: the first poll asks
      // for another only if the WAL changed since (without this, every database opened got a
      // second, idle sync a second later: a burst of new tenants paid for each twice).
      managed.lastWALStat = walStatKey(statOrUndefined(entry.path + "-wal"));
      this.#schedulePoll(managed);
      logger.info("replicating", { replica: client.location, txid: formatTXID(db.txid) });
      job.request();
      this.#startCompactor(managed);
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
    } finally {
      if (reserved) this.#reserved--;
    }
  }

  /**
   * Starts the compactor of a database just opened, or, while other databases are still
   * opening (a burst of new tenants), once they are (at most {@linkcode COMPACTOR_DEFER_MS}
   * later): its first ticks (listings of every level, a snapshot) would otherwise compete with
   * the first syncs of the tenants behind it for the event loop. Their L0 files reach the
   * replica first; compaction and snapshots only follow them.
   */
  #startCompactor(managed: Managed): void {
    if (!managed.compactor) return;
    if (this.#opening.size <= 1) { // only this one (it leaves the map once this returns)
      managed.compactor.start();
      return;
    }
    this.#deferredCompactors.add(managed);
    this.#compactorTimer ??= setTimeout(() => this.#startDeferredCompactors(), COMPACTOR_DEFER_MS);
  }

  /** Starts the compactors deferred by {@linkcode Store.#startCompactor} (of open databases). */
  #startDeferredCompactors(): void {
    clearTimeout(this.#compactorTimer);
    this.#compactorTimer = undefined;
    const deferred = [...this.#deferredCompactors];
    this.#deferredCompactors.clear();
    if (this.#closed) return;
    for (const managed of deferred) {
      if (this.#managed.get(managed.entry.path) === managed) managed.compactor?.start();
    }
  }

  /** Drops `managed` from the by-file index (if it is still the entry there). */
  #unindex(managed: Managed): void {
    const fileKey = this.#fileKeys.get(managed);
    if (fileKey && this.#byFile.get(fileKey) === managed) this.#byFile.delete(fileKey);
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
    // Asynchronous on purpose: a database woken from parking to make room for this one must
    // not take the freed slot before this open does (a synchronous stat here let it, and
    // opens beyond the descriptor budget starved; tests/park_test.ts).
    const info = await Deno.stat(path).catch(() => undefined);
    if (!info) return;
    // By file, not by a walk over every open database: a burst of 1,000 new tenants would
    // otherwise cost a million comparisons.
    const managed = this.#byFile.get(`${info.dev}:${info.ino}`);
    const oldPath = managed?.entry.path;
    if (
      managed && oldPath !== undefined && oldPath !== path &&
      this.#managed.get(oldPath) === managed && managed.db.isFile(info)
    ) {
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

  /** Cancels a scheduled retry of `path` and forgets its failures (it is being removed). */
  #cancelRetry(path: string): void {
    clearTimeout(this.#retryTimers.get(path));
    this.#retryTimers.delete(path);
    this.#openFailures.delete(path);
  }

  /**
   * Retries a failed open: after {@linkcode FIRST_OPEN_RETRY_MS}, doubling to `openRetryDelay`.
   * A wake-up that raced the application's own close (its WAL deleted under the open: one in
   * fifty wake-ups of the parked bench) then costs a tenth of a second, not five.
   */
  #scheduleRetry(entry: DatabaseEntry): void {
    if (this.#closed || this.#retryTimers.has(entry.path)) return;
    const failures = (this.#openFailures.get(entry.path) ?? 0) + 1;
    this.#openFailures.set(entry.path, failures);
    const delay = Math.min(
      this.#options.openRetryDelay,
      FIRST_OPEN_RETRY_MS * 2 ** Math.min(failures - 1, 16),
    );
    this.#retryTimers.set(
      entry.path,
      setTimeout(() => {
        this.#retryTimers.delete(entry.path);
        this.add(entry);
      }, delay),
    );
  }

  /**
   * One sync → upload cycle. Returns true when more WAL is waiting, "idle" when it found
   * nothing to write or ship (it then opens no throttle window, see {@linkcode ThrottledJob}).
   */
  async #cycle(managed: Managed): Promise<boolean | "idle"> {
    try {
      return await this.#syncAndUpload(managed);
    } finally {
      for (const resolve of this.#cycleWaiters.splice(0)) resolve();
    }
  }

  async #syncAndUpload(managed: Managed): Promise<boolean | "idle"> {
    const { db, replica, entry } = managed;
    // A full meta directory: drop the local copies of files already shipped, and sync again.
    // A large full image (a new tenant's first sync) waits its turn in the heavy-work queue;
    // a small one costs less than the wait, and a burst of new tenants must not queue up.
    const heavy = db.needsSnapshot && (await db.fileSize()) >= HEAVY_SNAPSHOT_BYTES;
    // The checkpoint runs once the file is shipped (below): it can wait for the application's
    // write lock, and the upload must not wait with it.
    const sync = () =>
      heavy ? this.#work.run(() => db.sync({ checkpoint: false })) : db.sync({ checkpoint: false });
    const result = await sync().catch(async (err) => {
      if (!await replica.relieveFullMetaDir(err, db.txid)) throw err;
      return await sync();
    });
    if (result.txid !== undefined) {
      replica.noteLocalWrite(Date.now());
      managed.lastActivity = performance.now();
    }
    /** Ships the local files the replica lacks; false when it lacked none. */
    const ship = async () => {
      if (replica.knownPosition !== undefined && replica.knownPosition >= db.txid) return false;
      await replica.upload(db.txid, db.newestL0File);
      // With a compactor, its L0 retention removes local L0 files (once level 1 covers them).
      if (!managed.compactor && entry.l0Retention !== undefined) {
        await replica.cleanupLocal(entry.l0Retention);
      }
      return true;
    };
    let shipped: boolean;
    try {
      shipped = await ship();
    } catch (err) {
      // The checkpoint needs only the local L0 files: an outage of the replica must not let
      // the WAL grow without bound.
      await db.checkpointIfDue().catch(() => {});
      throw err;
    }
    // A checkpoint syncs too (to the WAL's end before it locks, and under the lock): what it
    // wrote before it waits for the lock is shipped meanwhile (a failure there is reported by
    // the upload after it), the rest right after it. Not awaited inside the checkpoint: a
    // replica that lost files is snapshotted, which queues behind the checkpoint.
    let early: Promise<unknown> | undefined;
    await db.checkpointIfDue(() => early ??= ship().catch(() => {}));
    await early;
    shipped = await ship() || shipped;
    if (result.more === true) return true;
    return result.idle === true && !shipped ? "idle" : false;
  }

  /**
   * Schedules the next safety-net poll. While a watcher covers the database and nothing
   * changes, the delay doubles up to {@linkcode IDLE_POLL_FACTOR} × `monitor-interval`: a
   * thousand idle tenants then cost a few hundred stat calls a second instead of two thousand.
   * Without a watcher the poll is the only trigger and keeps its interval.
   */
  #schedulePoll(managed: Managed): void {
    if (this.#managed.get(managed.entry.path) !== managed) return;
    managed.pollDueAt = performance.now() + managed.pollDelay;
    this.#polls.schedule(managed, managed.pollDelay, async () => {
      managed.pollDueAt = undefined; // running: notify() leaves the rescheduling to us
      const changed = await this.#poll(managed);
      if (!changed && this.#idleLongEnough(managed)) return this.#park(managed);
      const watched = !this.#options.watchWAL || managed.unwatch !== undefined;
      const base = managed.entry.monitorInterval;
      managed.pollDelay = changed || !watched
        ? base
        : Math.min(managed.pollDelay * 2, base * IDLE_POLL_FACTOR);
      this.#schedulePoll(managed);
    });
  }

  #stopPolling(managed: Managed): void {
    this.#polls.cancel(managed);
    managed.pollDueAt = undefined;
  }

  /**
   * The safety-net poll: a stat of the database (replaced?) and of its WAL; a sync only when
   * the WAL changed or the replica is behind. Resolves true when something changed.
   */
  async #poll(managed: Managed): Promise<boolean> {
    try {
      if (managed.db.replaced()) {
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
      const stat = statOrUndefined(managed.entry.path + "-wal");
      managed.db.observeWAL(stat);
      const key = walStatKey(stat);
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
    this.#stopPolling(managed);
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
      if ((await this.#cycle(managed)) !== true) return;
    }
  }

  /**
   * Parks the least recently active databases while the open ones fill the descriptor budget
   * ({@linkcode StoreOptions.maxActive}). Only healthy, caught-up ones are parked; when none is
   * for a while, the open fails and is retried like any other.
   */
  async #makeRoom(): Promise<void> {
    let warned = false;
    const deadline = performance.now() + MAKE_ROOM_WAIT_MS;
    while (!this.#closed && this.#descriptorsFull()) {
      let victim: Managed | undefined;
      for (const managed of this.#managed.values()) {
        const known = managed.replica.knownPosition;
        if (managed.job.failures > 0 || known === undefined || known < managed.db.txid) continue;
        if (!victim || managed.lastActivity < victim.lastActivity) victim = managed;
      }
      if (!victim) {
        // All busy (first syncs, uploads): wait for one to finish, within reason, then give up
        // for now (retried later) rather than open into a crash.
        const wait = deadline - performance.now();
        if (wait <= 0) {
          throw new Error(
            `no file descriptors to spare for another database (${this.#managed.size} open, ` +
              `budget ${this.#maxActive}); will retry (raise LimitNOFILE / ulimit -n)`,
          );
        }
        const { promise, resolve } = Promise.withResolvers<void>();
        this.#cycleWaiters.push(resolve);
        const timer = setTimeout(resolve, wait);
        await promise;
        clearTimeout(timer);
        continue;
      }
      if (!warned && !this.#budgetWarned) {
        this.#options.logger.warn(
          "open databases fill the descriptor limit; parking the least recently active early " +
            "(raise LimitNOFILE / ulimit -n to keep more open)",
          { maxOpen: this.#maxActive },
        );
        this.#budgetWarned = warned = true;
      }
      await this.#park(victim);
    }
    this.#reserved++; // released by #open once the database is in #managed (or failed)
  }

  /**
   * Whether one more open database would overrun the descriptor budget: counted (open, opening,
   * being parked or closed, each at {@linkcode DESCRIPTORS_PER_DATABASE}), and, near the limit,
   * measured (/proc/self/fd, at most every 100 ms), since running out is a crash in Deno (a
   * worker thread that cannot get descriptors panics) rather than an error.
   */
  #descriptorsFull(): boolean {
    const holding = this.#managed.size + this.#reserved + this.#parking.size + this.#closing.size;
    if (holding >= this.#maxActive) return true;
    if (holding < this.#maxActive * 0.75 || this.#fdBudget === Infinity) return false;
    const now = performance.now();
    if (now - this.#fdCountAt > 100) {
      this.#fdCountAt = now;
      try {
        let count = 0;
        for (const _ of Deno.readDirSync("/proc/self/fd")) count++;
        this.#fdCount = count;
      } catch {
        this.#fdCount = Infinity; // no descriptor left to look: certainly full
      }
    }
    return this.#fdCount + DESCRIPTORS_PER_DATABASE >= this.#fdBudget;
  }

  /** Whether `managed` has been idle long enough to park: caught up, healthy, unchanged. */
  #idleLongEnough(managed: Managed): boolean {
    const parkAfter = managed.entry.parkAfter ?? 0;
    if (parkAfter <= 0 || this.#closed || managed.job.failures > 0) return false;
    if (performance.now() - managed.lastActivity < parkAfter) return false;
    const known = managed.replica.knownPosition;
    return known !== undefined && known >= managed.db.txid;
  }

  /**
   * Parks an idle database: its schedule stops, what is left is uploaded, and it closes through
   * {@linkcode DB.closeIdle}, which leaves the WAL exactly as synced; its replica client and
   * meta dir lock go too. What remains is a {@linkcode ParkedDatabase} record. A WAL found
   * different from what was synced, or a change seen while parking, wakes it at once.
   */
  async #park(managed: Managed): Promise<void> {
    const { entry, db } = managed;
    const path = entry.path;
    if (this.#managed.get(path) !== managed) return;
    this.#managed.delete(path);
    this.#unindex(managed);
    this.#parking.set(path, false);
    const logger = this.#options.logger;
    const parking = (async () => {
      // The WAL watch stays: it wakes the database (notify() knows parked paths).
      const unwatch = managed.unwatch;
      managed.unwatch = undefined;
      this.#stopPolling(managed);
      const jobStopped = managed.job.stop();
      await managed.compactor?.stop();
      await jobStopped;
      let synced: Awaited<ReturnType<DB["closeIdle"]>>;
      let figures: DatabaseStatus | undefined;
      try {
        await this.#cycleUntilDone(managed);
        figures = this.#statusOf(managed, Date.now());
        synced = await db.closeIdle();
      } catch (err) {
        logger.warn("cannot park database; keeps replicating", {
          db: path,
          error: (err as Error).message,
        });
      }
      if (!synced || !figures) {
        // Busy after all: start over with a fresh schedule, its counters carried over.
        unwatch?.();
        await this.#shutdown(managed, true);
        return { reopen: true, figures };
      }
      await managed.replica.client.close().catch(() => {});
      managed.lock?.release();
      // What the sweep compares with, taken before the stats below: a write between the two
      // shows in those (it wakes the database at once), a write after both in the sweep's.
      const fileState = fileStateOf(path);
      const [dbInfo, walInfo] = await Promise.all(
        [path, path + "-wal"].map((p) => Deno.stat(p).catch(() => undefined)),
      );
      const record: ParkedDatabase = {
        entry,
        fileState,
        state: synced,
        figures: { ...figures, state: "parked", lagSeconds: 0 },
        unwatch,
      };
      // Written since the parking checkpoint, or WAL frames past the synced end (the WAL
      // itself is gone when our close was the last: SQLite deleted it, all of it synced).
      const changed = statKey(dbInfo) !== synced.dbState ||
        (walInfo !== undefined &&
          (walInfo.ino !== synced.walIno || walInfo.size !== synced.walSize));
      return { reopen: false, record, changed };
    })();
    const closing: Promise<void> = parking.then((outcome) => {
      const woken = this.#parking.get(path) === true;
      this.#parking.delete(path);
      if (this.#closing.get(path) === closing) this.#closing.delete(path);
      if (this.#closed) {
        // close() looks at it once more (#finalSyncChangedParked): written since, it is opened for
        // the final sync.
        if (outcome.record && !outcome.reopen) this.#parked.set(path, outcome.record);
        return outcome.record?.unwatch?.();
      }
      if (outcome.reopen || !outcome.record) {
        this.#add(entry, outcome.figures);
        return;
      }
      this.#parked.set(path, outcome.record);
      this.#scheduleMemoryRelease();
      logger.debug("parked", { db: path, txid: outcome.record.figures.localTXID });
      if (woken || outcome.changed) this.#wake(path);
      else this.#scheduleSweep();
    }, (err) => {
      this.#parking.delete(path);
      if (this.#closing.get(path) === closing) this.#closing.delete(path);
      logger.error("cannot park database", { db: path, error: `${err}` });
      if (!this.#closed) this.#add(entry);
    });
    this.#closing.set(path, closing);
    await closing;
  }

  /**
   * Once parking settles, gives the memory the closed connections freed back to the system:
   * without it the process keeps its high-water mark. Done 2, 15 and 60 s after the last park
   * ({@linkcode MEMORY_RELEASE_DELAYS}): V8 frees the buffers of closed databases only when it
   * next collects garbage, and what is freed after the last trim stays resident (1,000 parked:
   * 131 MB with one trim, 102 MB with trims until V8 has collected).
   */
  #scheduleMemoryRelease(delays: readonly number[] = MEMORY_RELEASE_DELAYS): void {
    clearTimeout(this.#trimTimer);
    const [delay, ...later] = delays;
    if (delay === undefined) return;
    this.#trimTimer = setTimeout(() => {
      this.#trimTimer = undefined;
      // Nothing open, nothing will checkpoint before a wake-up: the worker's isolate goes.
      if (this.#managed.size === 0 && this.#parking.size === 0 && this.#opening.size === 0) {
        stopIdleCheckpointWorker();
      }
      releaseFreedMemory().finally(() => {
        // Unless a park meanwhile started the sequence over, or the store closed.
        if (this.#trimTimer === undefined && !this.#closed) this.#scheduleMemoryRelease(later);
      });
    }, delay);
    Deno.unrefTimer(this.#trimTimer as unknown as number);
  }

  /**
   * At close, opens for the final sync every parked database whose files changed since it
   * parked and whose change was not acted on yet (its inotify event still queued behind the
   * stop, the sweep not there yet): stopping leaves every committed transaction on the
   * replica. So is every parked database woken before the stop whose open the stop dropped.
   * One statx per parked database; a deleted one has nothing left to upload.
   */
  async #finalSyncChangedParked(): Promise<FinalSyncFailure[]> {
    const exists = (path: string) => statOrUndefined(path)?.isFile === true;
    const changed: Omit<ParkedDatabase, "fileState">[] = [...this.#parked.values()].filter(
      (parked) =>
        fileStateChanged(parked.entry.path, parked.fileState) && exists(parked.entry.path),
    );
    // Woken before the stop, their opens dropped by it.
    changed.push(...this.#droppedWakes.filter((woken) => exists(woken.entry.path)));
    this.#droppedWakes = [];
    const failures: FinalSyncFailure[] = [];
    // A few at a time, each closed again after its sync: thousands of them must not open
    // at once past the descriptor budget.
    for (let i = 0; i < changed.length; i += FINAL_WAKE_BATCH) {
      await Promise.all(
        changed.slice(i, i + FINAL_WAKE_BATCH).map(async (parked) => {
          const path = parked.entry.path;
          this.#parked.delete(path);
          parked.unwatch?.();
          this.#finalWakes.add(path);
          this.#options.logger.debug("waking parked database for the final sync", { db: path });
          let managed: Managed | undefined;
          try {
            managed = await this.#open(parked.entry, parked.figures, parked.state);
          } finally {
            this.#finalWakes.delete(path);
          }
          if (!managed) return;
          this.#managed.delete(path);
          const failure = await this.#shutdown(managed, true);
          if (failure) failures.push(failure);
        }),
      );
    }
    return failures;
  }

  /** A change was seen on a parked database: wakes it when its files differ from when parked. */
  #checkParked(path: string): void {
    const parked = this.#parked.get(path);
    if (parked && fileStateChanged(path, parked.fileState)) this.#wake(path);
  }

  /** Opens a parked database again; its next sync continues from its cursor or snapshots. */
  #wake(path: string): void {
    const parked = this.#parked.get(path);
    if (!parked || this.#closed) return;
    this.#parked.delete(path);
    parked.unwatch?.();
    this.#options.logger.debug("waking parked database", { db: path });
    this.#add(parked.entry, parked.figures, parked.state);
  }

  /**
   * The slow sweep over parked databases, one timer for all of them: every
   * {@linkcode SWEEP_TICK_MS} it stats the next batch, so that every parked database is looked
   * at once per `sweepInterval` (or per parked count ÷ `sweepRate` seconds, when that is
   * longer). It catches what a watcher missed.
   */
  #scheduleSweep(): void {
    if (this.#sweepTimer !== undefined || this.#closed || this.#parked.size === 0) return;
    const { sweepInterval, sweepRate } = this.#options;
    const tick = Math.min(SWEEP_TICK_MS, sweepInterval);
    this.#sweepTimer = setTimeout(async () => {
      const batch = Math.min(
        Math.ceil(sweepRate * tick / 1000),
        Math.ceil(this.#parked.size * tick / sweepInterval),
      );
      // Synchronous stats (microseconds each, no promise or string per database), yielding to
      // the event loop only when a batch runs long.
      let sliceStart = performance.now();
      for (let i = 0; i < batch && i < this.#parked.size && !this.#closed; i++) {
        let next = this.#sweepCursor?.next();
        if (!next || next.done) {
          this.#sweepCursor = this.#parked.values();
          next = this.#sweepCursor.next();
          if (next.done) break;
        }
        const parked = next.value;
        const path = parked.entry.path;
        if (this.#parked.get(path) === parked && fileStateChanged(path, parked.fileState)) {
          this.#wake(path);
        }
        if (performance.now() - sliceStart >= SWEEP_SLICE_MS) {
          await new Promise((resolve) => setTimeout(resolve, 0));
          sliceStart = performance.now();
        }
      }
      this.#sweepTimer = undefined;
      this.#scheduleSweep();
    }, tick);
    Deno.unrefTimer(this.#sweepTimer as unknown as number);
  }
}

/** What the safety-net poll compares a `-wal` by: size, mtime and inode ("none": missing). */
function walStatKey(stat: Deno.FileInfo | undefined): string {
  return stat ? `${stat.size}:${stat.mtime?.getTime()}:${stat.ino}` : "none";
}

/** Adds a parked database's counters to those of its new attachment (metrics never go back). */
function carryCounters(managed: Managed, carried: DatabaseStatus): void {
  const add = (target: object, saved: object | null) => {
    if (!saved) return;
    const into = target as Record<string, unknown>;
    for (const [key, value] of Object.entries(saved)) {
      if (typeof value === "number") into[key] = ((into[key] as number | undefined) ?? 0) + value;
      else if (into[key] === undefined) into[key] = value;
    }
  };
  // A stall is about the WAL of the moment, not carried.
  const { uploads, uploadErrors, bytesUploaded, lossSnapshots, metaFilesDropped, ...dbStats } = {
    ...carried.stats,
    stalledSince: undefined,
  } as DatabaseStatus["stats"] & Record<string, unknown>;
  add(managed.db.stats, dbStats);
  add(managed.replica.stats, {
    uploads,
    uploadErrors,
    bytesUploaded,
    lossSnapshots,
    metaFilesDropped,
  });
  if (managed.compactor) add(managed.compactor.stats, carried.compaction);
}
