/**
 * Compaction levels, snapshots and retention for one database's replica (FORMAT.md §3.2–§3.4), in
 * Litestream's scheme: level 0 holds one file per sync; level 1 merges level 0 every 30 s,
 * level 2 merges level 1 every 5 min, level 3 merges level 2 every hour (configurable, up to
 * level 8); level 9 holds full snapshots (daily by default). Retention then deletes what no
 * restore inside the retention window needs, so a replica stays bounded and a restore after a
 * week reads about a dozen files.
 *
 * Safety rules, in the order they protect the data:
 * - every compaction output is read back and checked against its inputs' TXID range before
 *   anything may rely on it, and nothing is deleted as part of a compaction;
 * - an L0 file is deleted only once level 1 covers it, and never the newest one (it is the
 *   replica position); the newest file of every level and the newest snapshot always stay;
 * - `retentionEnabled: false` never deletes a remote file (local L0 copies are still cleaned).
 *
 * ```ts
 * const compactor = createCompactor(db, replica, settings, { logger });
 * compactor.start();   // wall-clock aligned ticks per level
 * await compactor.stop();
 * ```
 *
 * @module
 */

import { formatFilename, formatTXID, type PageEncoding } from "../ltx/mod.ts";
import {
  type LTXFileId,
  type LTXFileInfo,
  type ReplicaClient,
  SNAPSHOT_LEVEL,
} from "../replica/mod.ts";
import type { FileReplicaClient } from "../replica/mod.ts";
import { type Logger, silentLogger } from "../log/mod.ts";
import { type CompactionStats, type DB, type Replica, WorkQueue } from "../engine/mod.ts";
import { contiguousRun, mergeStep } from "./_merge.ts";
import { selectL0Deletions, selectLevelDeletions, selectSnapshotDeletions } from "./_retention.ts";
import { nextBoundary, truncateTime } from "./_schedule.ts";
import { countingClient } from "./_progress.ts";

export { CompactionVerifyError } from "./_merge.ts";
export { countingClient } from "./_progress.ts";
export { type PromoteSource, promoteToSnapshot } from "./_promote.ts";
export {
  selectL0Deletions,
  selectLevelDeletions,
  selectSnapshotDeletions,
  type SnapshotRetentionPlan,
} from "./_retention.ts";

/** The highest compaction level below the snapshot level. */
export const MAX_COMPACTION_LEVEL = 8;
/** Default L0 retention check interval (Litestream's). */
export const DEFAULT_L0_RETENTION_CHECK_INTERVAL = 15_000;
/** Most input files merged into one output; a larger backlog becomes several outputs. */
export const DEFAULT_MAX_INPUTS = 256;

/**
 * How a database's replica is compacted and pruned: the config's `levels`, `snapshot`,
 * `l0-retention` and `retention` keys, in milliseconds.
 */
export interface CompactionSettings {
  /** Intervals of levels 1…n (n ≤ 8), ms. Level i merges level i − 1. */
  levels: number[];
  /** How often a level-9 snapshot is taken, ms; 0 disables periodic snapshots. */
  snapshotInterval: number;
  /** How long snapshots are kept, ms (the newest is always kept). */
  snapshotRetention: number;
  /**
   * How long L0 files stay on the replica after level 1 covers them, ms. 0 disables L0
   * retention on the replica (local L0 copies are then removed as soon as level 1 covers them).
   */
  l0Retention: number;
  /** false: never delete anything on the replica (lifecycle rules take over). */
  retentionEnabled: boolean;
  /**
   * How often L0 retention runs, ms. Default 15 s, or half of `l0Retention` when that is
   * shorter (at least 1 s).
   */
  l0RetentionCheckInterval?: number;
}

/** What the snapshot callback may be asked for. */
export interface SnapshotCallOptions {
  /** Called with the bytes written so far while the snapshot streams. */
  onProgress?: (bytesWritten: number) => void;
}

/** Options of {@linkcode Compactor}. */
export interface CompactorOptions extends CompactionSettings {
  /** Local level-0 store (the meta dir): read before the replica, cleaned by L0 retention. */
  local?: FileReplicaClient;
  /** Takes a level-9 snapshot at the database's current position (`DB.snapshot`). */
  snapshot?: (options?: SnapshotCallOptions) => Promise<{ txid: number }>;
  /** The database's current TXID; a snapshot is skipped when level 9 already has it. */
  position?: () => number;
  /** Logger with the database path attached. */
  logger?: Logger;
  /** Page encoding of compaction outputs. Default "frame". */
  encoding?: PageEncoding;
  /** Most input files per output. Default {@linkcode DEFAULT_MAX_INPUTS}. */
  maxInputs?: number;
  /**
   * The heavy-work queue merges and snapshots run in (shared with every other database's, and
   * with initial snapshots, by the engine's Store); default: a queue of its own, one at a time.
   */
  limiter?: WorkQueue;
  /**
   * Called when a listing shows that the replica lost files: a level's newest file went back
   * (retention always keeps it), or level 0 no longer continues level 1 and no snapshot covers
   * the TXIDs in between. The replica then needs a new snapshot (src/engine/shipper.ts). Default: a
   * warning only.
   */
  onReplicaLoss?: (reason: string) => void;
}

/** Outcome of {@linkcode Compactor.compact}. */
export interface CompactResult {
  /**
   * "compacted": new files were written; "too-early": the level already ran in the current
   * interval; "up-to-date": the source level has nothing new.
   */
  outcome: "compacted" | "too-early" | "up-to-date";
  /** The files written, oldest first. */
  files: LTXFileInfo[];
  /** The newest TXID the level holds after the run (0: the level is empty). */
  maxTXID: number;
}

/** Outcome of {@linkcode Compactor.snapshotIfDue}. */
export interface SnapshotResult {
  /**
   * "snapshot": one was written; "too-early": one exists from the current interval;
   * "up-to-date": the newest snapshot already covers the database; "disabled": no snapshot
   * callback or interval.
   */
  outcome: "snapshot" | "too-early" | "up-to-date" | "disabled";
  /** TXID of the snapshot written. */
  txid?: number;
}

/** What snapshot retention deleted. */
export interface SnapshotRetentionResult {
  /** Files deleted, per level (9 first). Empty when retention is disabled. */
  deleted: LTXFileId[];
  /** The TXID floor applied to levels 1…8 (0: none). */
  minSnapshotTXID: number;
  /** Snapshots left on the replica (only the newest: nothing more to delete until a new one). */
  remaining?: number;
}

/** What L0 retention deleted. */
export interface L0RetentionResult {
  /** Level-0 files deleted from the replica. */
  remote: LTXFileId[];
  /** Level-0 files deleted from the local meta directory. */
  local: LTXFileId[];
  /**
   * Files remain that a later run may delete (besides the newest, which always stays): the
   * check must run again even if nothing new arrives.
   */
  pending: boolean;
}

/**
 * Compaction, snapshots and retention for one replica. Every operation, scheduled or called,
 * runs in one queue, so two never touch the replica at once.
 */
export class Compactor {
  /** The replica compacted. */
  readonly client: ReplicaClient;
  /** Counters for metrics and status. */
  readonly stats: CompactionStats = { compactions: 0, snapshots: 0, filesDeleted: 0, errors: 0 };
  #options: CompactorOptions;
  #logger: Logger;
  #limiter: WorkQueue;
  #queue: Promise<unknown> = Promise.resolve();
  #timers = new Map<string, ReturnType<typeof setTimeout>>();
  #pendingTicks = new Set<string>();
  /** The newest maxTXID each level was listed with: it never goes back unless files are lost. */
  #newestSeen = new Map<number, number>();
  #started = false;
  #stopped = false;

  /**
   * Creates a compactor; nothing runs until a method or {@linkcode start} is called.
   * @throws {RangeError} for more than 8 levels or a non-positive level interval.
   */
  constructor(client: ReplicaClient, options: CompactorOptions) {
    if (options.levels.length > MAX_COMPACTION_LEVEL) {
      throw new RangeError(
        `at most ${MAX_COMPACTION_LEVEL} compaction levels, got ${options.levels.length}`,
      );
    }
    options.levels.forEach((interval, i) => {
      if (!(interval > 0)) {
        throw new RangeError(`level ${i + 1} needs a positive interval, got ${interval}`);
      }
    });
    this.client = client;
    this.#options = options;
    this.#logger = options.logger ?? silentLogger;
    this.#limiter = options.limiter ?? new WorkQueue(1);
  }

  /** The compaction levels configured (1…n). */
  get levels(): number {
    return this.#options.levels.length;
  }

  /**
   * Merges new files of level `dstLevel − 1` into `dstLevel` (FORMAT.md §3.2): not when the newest
   * `dstLevel` file was created after `now` truncated to the level's interval ("too-early"),
   * nor when the source level has nothing past it ("up-to-date"). Otherwise every source file
   * starting after the newest destination file is merged (local L0 copies preferred) into
   * `<dstLevel>/<min>-<max>.ltx`, verified after writing.
   * @throws {RangeError} for a level that is not configured.
   * @throws {CompactionVerifyError} / {LTXError} / {ReplicaError} when the merge fails.
   */
  compact(dstLevel: number, now: number = Date.now()): Promise<CompactResult> {
    return this.#enqueue(() => this.#compact(dstLevel, now));
  }

  /**
   * Takes a level-9 snapshot when due (FORMAT.md §3.3): not when the newest snapshot was created
   * after `now` truncated to the snapshot interval, nor when it already covers the database's
   * position.
   */
  snapshotIfDue(now: number = Date.now()): Promise<SnapshotResult> {
    return this.#enqueue(() => this.#snapshotIfDue(now));
  }

  /**
   * Takes a level-9 snapshot now, whatever the schedule, then applies snapshot retention.
   * @throws {Error} when no snapshot callback was given, or whatever the snapshot threw.
   */
  snapshotNow(options: SnapshotCallOptions = {}): Promise<{ txid: number }> {
    return this.#enqueue(async () => {
      const result = await this.#takeSnapshot(options);
      await this.#enforceSnapshotRetention(Date.now());
      return result;
    });
  }

  /**
   * Takes a level-9 snapshot now because the replica lost files, then applies snapshot
   * retention. The newest TXIDs seen per level are forgotten: the loss made them meaningless,
   * and the levels start again from what is listed next.
   * @throws {Error} when no snapshot callback was given, or whatever the snapshot threw.
   */
  snapshotAfterLoss(): Promise<{ txid: number }> {
    return this.#enqueue(async () => {
      const result = await this.#takeSnapshot({});
      this.#newestSeen.clear();
      await this.#enforceSnapshotRetention(Date.now());
      return result;
    });
  }

  /**
   * Snapshot retention (FORMAT.md §3.4): deletes snapshots created before `now − snapshotRetention`
   * except the newest, then in levels 1…8 the files ending below the TXID of the newest deleted
   * snapshot, keeping each level's newest file. Level 0 is left to
   * {@linkcode enforceL0Retention}. Deletes nothing when retention is disabled.
   */
  enforceSnapshotRetention(now: number = Date.now()): Promise<SnapshotRetentionResult> {
    return this.#enqueue(() => this.#enforceSnapshotRetention(now));
  }

  /**
   * L0 retention (FORMAT.md §3.4): level-0 files covered by level 1 and older than `l0Retention`
   * are deleted from the replica (unless retention is disabled or `l0Retention` is 0) and from
   * the local meta directory; the newest file of each stays.
   */
  enforceL0Retention(now: number = Date.now()): Promise<L0RetentionResult> {
    return this.#enqueue(() => this.#enforceL0Retention(now));
  }

  /**
   * Starts the schedule: each level and the snapshot run at once (the too-early rule skips
   * what already ran) and then at every wall-clock multiple of their interval; L0 retention
   * runs every check interval. Failures are logged and retried at the next tick.
   */
  start(): void {
    if (this.#started || this.#stopped) return;
    this.#started = true;
    const { levels, snapshotInterval } = this.#options;
    levels.forEach((interval, i) => {
      const level = i + 1;
      this.#every(`level ${level}`, interval, true, async (now, position) => {
        const result = await this.#compact(level, now);
        // Level 1 just grew: the L0 files it now covers may go.
        if (level === 1 && result.outcome === "compacted") await this.#enforceL0Retention(now);
        return result.maxTXID >= position; // the level holds everything: settled
      });
    });
    if (snapshotInterval > 0 && this.#options.snapshot) {
      this.#every("snapshot", snapshotInterval, true, async (now) => {
        // Retention runs even when the snapshot failed.
        const snapshot = await this.#snapshotIfDue(now).catch((err: unknown) => err);
        const retention = await this.#enforceSnapshotRetention(now);
        if (snapshot instanceof Error) throw snapshot;
        // Settled: the database is covered and only the newest snapshot is left to keep.
        return (snapshot as SnapshotResult).outcome === "up-to-date" &&
          (retention.remaining ?? 0) <= 1;
      });
    }
    this.#every(
      "L0 retention",
      this.#l0CheckInterval(),
      false,
      async (now) => !(await this.#enforceL0Retention(now)).pending,
    );
  }

  /** Stops the schedule and waits for the running job (a queued scheduled job is skipped). */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const timer of this.#timers.values()) clearTimeout(timer);
    this.#timers.clear();
    await this.#queue.catch(() => {});
  }

  #l0CheckInterval(): number {
    const { l0RetentionCheckInterval, l0Retention } = this.#options;
    if (l0RetentionCheckInterval !== undefined && l0RetentionCheckInterval > 0) {
      return l0RetentionCheckInterval;
    }
    if (l0Retention > 0 && l0Retention < 2 * DEFAULT_L0_RETENTION_CHECK_INTERVAL) {
      return Math.max(1000, l0Retention / 2);
    }
    return DEFAULT_L0_RETENTION_CHECK_INTERVAL;
  }

  /** Runs `fn` after everything queued before it; the queue survives failures. */
  #enqueue<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => {});
    return run;
  }

  /**
   * A job at every multiple of `interval` (and at once when `immediate`). A tick whose
   * previous run has not finished is skipped rather than piled up.
   *
   * An idle database must cost no replica requests (an S3 LIST per level per tick adds up
   * over thousands of tenants): a job that reports itself settled, with nothing left to do at
   * the database's position, is skipped at later ticks until that position moves.
   */
  #every(
    key: string,
    interval: number,
    immediate: boolean,
    job: (now: number, position: number) => Promise<boolean>,
  ) {
    let settledAt: number | undefined;
    const fire = (scheduled: number) => {
      if (this.#stopped) return;
      // A timer may fire a hair early; the job must see the boundary it was meant for.
      const now = Math.max(Date.now(), scheduled);
      const next = nextBoundary(now, interval);
      this.#timers.set(key, setTimeout(() => fire(next), Math.max(0, next - Date.now())));
      if (this.#pendingTicks.has(key)) return;
      this.#pendingTicks.add(key);
      this.#enqueue(async () => {
        if (this.#stopped) return;
        const position = this.#options.position?.() ?? 0;
        if (settledAt !== undefined && settledAt === position) return;
        settledAt = undefined;
        if (await job(now, position)) settledAt = position;
      }).catch((err) => this.#failed(key, err))
        .finally(() => this.#pendingTicks.delete(key));
    };
    if (immediate) {
      this.#timers.set(key, setTimeout(() => fire(Date.now()), 0));
    } else {
      const first = nextBoundary(Date.now(), interval);
      this.#timers.set(key, setTimeout(() => fire(first), Math.max(0, first - Date.now())));
    }
  }

  #failed(what: string, err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    this.stats.errors++;
    this.stats.lastError = message;
    this.#logger.error(`${what} failed; retrying at the next tick`, { error: message });
  }

  async #compact(dstLevel: number, now: number): Promise<CompactResult> {
    const { levels } = this.#options;
    if (!Number.isInteger(dstLevel) || dstLevel < 1 || dstLevel > levels.length) {
      throw new RangeError(
        `level ${dstLevel} is not a compaction level (configured: 1…${levels.length})`,
      );
    }
    const dstMax = await this.#newest(dstLevel);
    if (dstMax && dstMax.createdAt.getTime() > truncateTime(now, levels[dstLevel - 1])) {
      return { outcome: "too-early", files: [], maxTXID: dstMax.maxTXID };
    }
    const seekTXID = (dstMax?.maxTXID ?? 0) + 1;
    const listed: LTXFileInfo[] = [];
    for await (const file of this.client.ltxFiles(dstLevel - 1, { seekTXID })) listed.push(file);
    const sources = contiguousRun(listed);
    if (sources.length === 0) return { outcome: "up-to-date", files: [], maxTXID: seekTXID - 1 };
    if (sources.length < listed.length) {
      const hole = listed[sources.length];
      this.#logger.warn("level has a hole; compacting up to it", {
        level: dstLevel - 1,
        after: formatFilename(sources[sources.length - 1].minTXID, sources.at(-1)!.maxTXID),
        next: formatFilename(hole.minTXID, hole.maxTXID),
      });
    }
    if (dstLevel === 1 && sources[0].minTXID !== seekTXID) {
      // The shipper uploads level 0 in order, one file at a time, and retention deletes only
      // what level 1 covers: level 0 always continues level 1. A gap means files were lost
      // (an emptied replica, files deleted behind sluice's back) unless a snapshot covers it
      // (the replica was started again from one).
      const snapshot = await this.#newest(SNAPSHOT_LEVEL);
      if (!snapshot || snapshot.maxTXID < sources[0].minTXID - 1) {
        this.#lost(
          `level 0 continues from ${formatFilename(sources[0].minTXID, sources[0].maxTXID)} ` +
            `but level 1 ends at TXID ${formatTXID(seekTXID - 1)} and no snapshot covers the ` +
            `TXIDs in between`,
        );
        return { outcome: "up-to-date", files: [], maxTXID: seekTXID - 1 };
      }
    } else if (dstMax && sources[0].minTXID !== dstMax.maxTXID + 1) {
      // Possible when retention removed source files before this level took them.
      this.#logger.warn("compaction output does not follow the level's newest file", {
        level: dstLevel,
        newest: formatFilename(dstMax.minTXID, dstMax.maxTXID),
        next: formatFilename(sources[0].minTXID, sources[0].maxTXID),
      });
    }

    const maxInputs = Math.max(1, this.#options.maxInputs ?? DEFAULT_MAX_INPUTS);
    const files: LTXFileInfo[] = [];
    for (let i = 0; i < sources.length; i += maxInputs) {
      const batch = sources.slice(i, i + maxInputs);
      const info = await this.#limiter.run(() =>
        mergeStep(dstLevel, batch, {
          client: this.client,
          local: this.#options.local,
          encoding: this.#options.encoding,
        })
      );
      files.push(info);
      this.stats.compactions++;
      this.#logger.info("compacted", {
        level: dstLevel,
        file: formatFilename(info.minTXID, info.maxTXID),
        inputs: batch.length,
        bytes: info.size,
      });
    }
    return { outcome: "compacted", files, maxTXID: files.at(-1)!.maxTXID };
  }

  async #snapshotIfDue(now: number): Promise<SnapshotResult> {
    const { snapshot, snapshotInterval, position } = this.#options;
    if (!snapshot || !(snapshotInterval > 0)) return { outcome: "disabled" };
    const newest = await this.#newest(SNAPSHOT_LEVEL);
    if (newest && newest.createdAt.getTime() > truncateTime(now, snapshotInterval)) {
      return { outcome: "too-early" };
    }
    // Position 0 means "not synced yet": the snapshot callback syncs first, so let it decide.
    const txid = position?.() ?? 0;
    if (newest && txid > 0 && txid <= newest.maxTXID) return { outcome: "up-to-date" };
    const result = await this.#takeSnapshot({});
    return result.txid > 0 ? { outcome: "snapshot", txid: result.txid } : { outcome: "up-to-date" };
  }

  async #takeSnapshot(options: SnapshotCallOptions): Promise<{ txid: number }> {
    const snapshot = this.#options.snapshot;
    if (!snapshot) {
      throw new Error(`no snapshot function configured for ${this.client.location}`);
    }
    const result = await this.#limiter.run(() => snapshot(options));
    if (result.txid > 0) {
      this.stats.snapshots++;
      this.#logger.info("snapshot written", { txid: formatFilename(1, result.txid) });
    }
    return result;
  }

  async #enforceSnapshotRetention(now: number): Promise<SnapshotRetentionResult> {
    if (!this.#options.retentionEnabled) return { deleted: [], minSnapshotTXID: 0 };
    const snapshots = await this.#list(SNAPSHOT_LEVEL);
    const plan = selectSnapshotDeletions(snapshots, now - this.#options.snapshotRetention);
    const deleted: LTXFileId[] = [];
    await this.#delete(SNAPSHOT_LEVEL, plan.doomed, deleted);
    if (plan.minSnapshotTXID > 0) {
      for (let level = 1; level <= this.#options.levels.length; level++) {
        const doomed = selectLevelDeletions(await this.#list(level), plan.minSnapshotTXID);
        await this.#delete(level, doomed, deleted);
      }
    }
    return {
      deleted,
      minSnapshotTXID: plan.minSnapshotTXID,
      remaining: snapshots.length - plan.doomed.length,
    };
  }

  async #enforceL0Retention(now: number): Promise<L0RetentionResult> {
    const result: L0RetentionResult = { remote: [], local: [], pending: false };
    if (this.#options.levels.length === 0) return result;
    const maxL1 = (await this.#newest(1))?.maxTXID ?? 0;
    if (maxL1 === 0) {
      // No level 1 yet: nothing may go, but once the first compaction made one, the files it
      // covers must age out of l0-retention here, with no new write to wake this check.
      result.pending = (this.#options.position?.() ?? 0) > 0;
      return result;
    }
    const { l0Retention, retentionEnabled, local } = this.#options;
    const cutoff = now - Math.max(0, l0Retention);
    if (retentionEnabled && l0Retention > 0) {
      const listed = await this.#list(0);
      const doomed = selectL0Deletions(listed, maxL1, cutoff);
      await this.#delete(0, doomed, result.remote);
      result.pending ||= listed.length - doomed.length > 1;
    }
    if (local) {
      // Covered by level 1 means uploaded: level 1 is built from the replica's own L0 listing.
      const listed = await listLevel(local, 0);
      const doomed = selectL0Deletions(listed, maxL1, cutoff);
      result.pending ||= listed.length - doomed.length > 1;
      if (doomed.length > 0) {
        await local.deleteLTXFiles(doomed);
        result.local.push(...doomed.map(idOf));
        this.#logger.debug("local L0 files removed", { count: doomed.length });
      }
    }
    return result;
  }

  /** The newest file of a replica level, checked against the newest seen before. */
  async #newest(level: number): Promise<LTXFileInfo | undefined> {
    const newest = await newestFile(this.client, level);
    this.#observe(level, newest?.maxTXID ?? 0);
    return newest;
  }

  /** A replica level's files, its newest checked against the newest seen before. */
  async #list(level: number): Promise<LTXFileInfo[]> {
    const files = await listLevel(this.client, level);
    this.#observe(level, files.reduce((max, file) => Math.max(max, file.maxTXID), 0));
    return files;
  }

  /**
   * Retention never deletes a level's newest file and compactions only add newer ones, so a
   * level's newest TXID never goes back unless something else deleted files.
   */
  #observe(level: number, newestTXID: number): void {
    const seen = this.#newestSeen.get(level);
    if (seen !== undefined && newestTXID < seen) {
      this.#lost(
        `level ${level}'s newest file went back from TXID ${formatTXID(seen)} to ` +
          (newestTXID === 0 ? "nothing" : `TXID ${formatTXID(newestTXID)}`),
      );
      return;
    }
    this.#newestSeen.set(level, newestTXID);
  }

  /** The replica lost files: start observing afresh and have it snapshotted. */
  #lost(reason: string): void {
    this.#newestSeen.clear();
    if (this.#options.onReplicaLoss) this.#options.onReplicaLoss(reason);
    else this.#logger.warn("the replica lost files", { replica: this.client.location, reason });
  }

  async #delete(level: number, doomed: LTXFileInfo[], into: LTXFileId[]): Promise<void> {
    if (doomed.length === 0) return;
    await this.client.deleteLTXFiles(doomed);
    into.push(...doomed.map(idOf));
    this.stats.filesDeleted += doomed.length;
    this.#logger.info("retention deleted files", {
      level,
      count: doomed.length,
      upTo: formatFilename(doomed[doomed.length - 1].minTXID, doomed[doomed.length - 1].maxTXID),
    });
  }
}

/** Options of {@linkcode createCompactor}. */
export interface CreateCompactorOptions {
  logger?: Logger;
  /** Page encoding of compaction outputs (the database's). */
  encoding?: PageEncoding;
  /** The heavy-work queue shared across databases (see {@linkcode CompactorOptions.limiter}). */
  limiter?: WorkQueue;
}

/**
 * The compactor of a database under replication: reads its local L0 files, snapshots it with
 * `DB.snapshot` into the replica, and skips snapshots when the replica already has its TXID.
 * It also watches the replica for lost files for `replica`, which then takes its new snapshot
 * through this compactor's queue (so it never races a compaction).
 */
export function createCompactor(
  db: DB,
  replica: Replica,
  settings: CompactionSettings,
  options: CreateCompactorOptions = {},
): Compactor {
  const client = replica.client;
  const compactor = new Compactor(client, {
    ...settings,
    local: db.local,
    position: () => db.txid,
    snapshot: (call) =>
      db.snapshot(call?.onProgress ? countingClient(client, call.onProgress) : client),
    logger: options.logger,
    encoding: options.encoding,
    limiter: options.limiter,
    onReplicaLoss: (reason) => replica.reportLoss(reason),
  });
  replica.setLossSnapshot(() => compactor.snapshotAfterLoss());
  return compactor;
}

/**
 * The factory the engine's Store takes (`DatabaseEntry.createCompactor`): a
 * {@linkcode createCompactor} with `settings` for each attached database. Injected from the layer
 * above so that the engine never imports compaction.
 */
export function compactorFactory(
  settings: CompactionSettings,
  options: Omit<CreateCompactorOptions, "logger"> = {},
): (db: DB, replica: Replica, logger: Logger, work: WorkQueue) => Compactor {
  return (db, replica, logger, work) =>
    createCompactor(db, replica, settings, { ...options, logger, limiter: work });
}

async function listLevel(client: ReplicaClient, level: number): Promise<LTXFileInfo[]> {
  const files: LTXFileInfo[] = [];
  for await (const file of client.ltxFiles(level)) files.push(file);
  return files;
}

/** The file of `level` with the largest MaxTXID (Litestream's MaxLTXFileInfo). */
async function newestFile(client: ReplicaClient, level: number): Promise<LTXFileInfo | undefined> {
  let newest: LTXFileInfo | undefined;
  for await (const file of client.ltxFiles(level)) {
    if (!newest || file.maxTXID > newest.maxTXID) newest = file;
  }
  return newest;
}

function idOf(file: LTXFileId): LTXFileId {
  return { level: file.level, minTXID: file.minTXID, maxTXID: file.maxTXID };
}
