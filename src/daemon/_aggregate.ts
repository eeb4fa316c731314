/**
 * The figures of `/metrics` that do not grow with the number of databases, computed in one pass
 * over the status rows of a scrape: databases by state, the distribution of replication lag,
 * the worst lag and its database, and totals across databases.
 *
 * One pass and a fixed amount of memory (no object per database), so that a scrape of 100,000
 * tenants costs a loop, not 100,000 × 17 series.
 *
 * @module
 */

import type { DatabaseStatus } from "../engine/mod.ts";

/** The states `sluice_databases_by_state` always reports (0 when none). */
export const DATABASE_STATES = ["active", "parked", "opening", "failing"] as const;

/** One of {@linkcode DATABASE_STATES}. */
export type DatabaseState = typeof DATABASE_STATES[number];

/** Upper bounds of the lag histogram's buckets, seconds (`+Inf` is implied). */
export const LAG_BUCKETS: readonly number[] = [
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
  60,
  300,
  900,
  3600,
];

/** Keys of the totals kept across databases (see {@linkcode Aggregate.totals}). */
export const TOTAL_KEYS = [
  "syncs",
  "syncErrors",
  "checkpoints",
  "checkpointErrors",
  "truncationsContinued",
  "truncationsSnapshotted",
  "uploads",
  "uploadErrors",
  "bytesUploaded",
  "compactions",
  "snapshots",
  "compactionErrors",
] as const;

/** One of {@linkcode TOTAL_KEYS}. */
export type TotalKey = typeof TOTAL_KEYS[number];

/** The aggregates of one scrape. */
export interface Aggregate {
  /** Databases in `rows` (`opening` excluded: those have no row yet). */
  databases: number;
  /** Databases per state. */
  byState: Record<DatabaseState, number>;
  /** Databases whose lag is at most `LAG_BUCKETS[i]` (cumulative), then all of them. */
  lagBuckets: Float64Array;
  /** Sum of every database's lag, seconds. */
  lagSum: number;
  /** The largest lag and its database (undefined with no database). */
  maxLag?: { seconds: number; db: string };
  /** Sums of the per-database counters over the databases in `rows`. */
  totals: Record<TotalKey, number>;
}

/** The state a status row is counted under. */
export function stateOf(row: DatabaseStatus): DatabaseState {
  return row.state ?? "active";
}

/**
 * Aggregates `rows` in a single pass. `opening` is the number of databases being opened (they
 * have no status row yet).
 */
export function aggregate(rows: readonly DatabaseStatus[], opening = 0): Aggregate {
  const byState: Record<DatabaseState, number> = { active: 0, parked: 0, opening, failing: 0 };
  const totals = Object.fromEntries(TOTAL_KEYS.map((key) => [key, 0])) as Record<
    TotalKey,
    number
  >;
  const lagBuckets = new Float64Array(LAG_BUCKETS.length + 1);
  let lagSum = 0;
  let maxLag = -1;
  let maxLagDB = "";
  for (const row of rows) {
    byState[stateOf(row)]++;
    const lag = Number.isFinite(row.lagSeconds) ? Math.max(0, row.lagSeconds) : 0;
    lagSum += lag;
    // Non-cumulative here; made cumulative once, after the loop.
    let bucket = 0;
    while (bucket < LAG_BUCKETS.length && lag > LAG_BUCKETS[bucket]) bucket++;
    lagBuckets[bucket]++;
    if (lag > maxLag) {
      maxLag = lag;
      maxLagDB = row.path;
    }
    const stats = row.stats;
    totals.syncs += stats.syncs;
    totals.syncErrors += stats.syncErrors;
    totals.checkpoints += stats.checkpoints;
    totals.checkpointErrors += stats.checkpointErrors;
    totals.truncationsContinued += stats.truncationsContinued;
    totals.truncationsSnapshotted += stats.truncationsSnapshotted;
    totals.uploads += stats.uploads;
    totals.uploadErrors += stats.uploadErrors;
    totals.bytesUploaded += stats.bytesUploaded;
    const compaction = row.compaction;
    if (compaction !== null) {
      totals.compactions += compaction.compactions;
      totals.snapshots += compaction.snapshots;
      totals.compactionErrors += compaction.errors;
    }
  }
  for (let i = 1; i < lagBuckets.length; i++) lagBuckets[i] += lagBuckets[i - 1];
  const result: Aggregate = { databases: rows.length, byState, lagBuckets, lagSum, totals };
  if (maxLag >= 0) result.maxLag = { seconds: maxLag, db: maxLagDB };
  return result;
}

/**
 * Keeps totals across databases monotonic, as Prometheus counters must be: a removed database
 * takes its counts out of the sum, so a drop is carried as an offset instead of being exported
 * (a decrease would read as a counter reset and make `rate()` spike). Growth of other databases
 * in the same scrape interval as a removal may be under-counted by up to the removed totals;
 * the counter never goes down.
 */
export class MonotonicTotals {
  #offset = Object.fromEntries(TOTAL_KEYS.map((key) => [key, 0])) as Record<TotalKey, number>;
  #last = Object.fromEntries(TOTAL_KEYS.map((key) => [key, 0])) as Record<TotalKey, number>;

  /** The exported value of `key` for this scrape's sum `current`. */
  value(key: TotalKey, current: number): number {
    let exported = current + this.#offset[key];
    if (exported < this.#last[key]) {
      this.#offset[key] += this.#last[key] - exported;
      exported = this.#last[key];
    }
    this.#last[key] = exported;
    return exported;
  }
}
