/**
 * Prometheus metrics of a running `sluice replicate`, in a private registry (never prom-client's
 * global one, so that embedding sluice or running two instances in one test never mixes series).
 *
 * Every figure is read at scrape time from the stores' {@linkcode DatabaseStatus} through
 * `collect()` callbacks instead of being pushed from each call site: the engine keeps plain
 * counters (src/engine/db.ts, src/engine/shipper.ts) and knows nothing about Prometheus, and a database that is
 * removed (a tenant deleted) simply disappears from the next scrape instead of leaving stale
 * series behind.
 *
 * Per-database series (label `db` = absolute database path, the `sluice_db_` ones) are exported
 * only while at most `perDatabaseLimit` databases are replicated (default 100; none with
 * `perDatabase: false`): 100,000 tenants would otherwise be 1.7 million series. The aggregates
 * (`sluice_databases_by_state`, the lag histogram, the worst lag, totals) are always there, and
 * are computed in one pass per scrape without an object per database (src/daemon/_aggregate.ts).
 *
 * Series:
 *
 * | name | type | what |
 * |---|---|---|
 * | `sluice_db_txid` | gauge | newest local TXID (last L0 file written) |
 * | `sluice_db_replica_txid` | gauge | newest TXID known to be on the replica (absent until known) |
 * | `sluice_db_replication_lag_seconds` | gauge | age of the oldest change not yet on the replica |
 * | `sluice_db_wal_bytes` | gauge | WAL bytes synced so far (end of the last synced frame) |
 * | `sluice_db_last_sync_timestamp_seconds` | gauge | time of the last successful sync |
 * | `sluice_db_meta_disk_full` | gauge | 1 when the meta directory ran out of space lately |
 * | `sluice_db_syncs_total`, `…_sync_errors_total` | counter | WAL → L0 syncs |
 * | `sluice_db_checkpoints_total`, `…_checkpoint_errors_total` | counter | sluice's checkpoints |
 * | `sluice_db_uploads_total`, `…_upload_errors_total` | counter | L0 files shipped |
 * | `sluice_db_uploaded_bytes_total` | counter | bytes of L0 files shipped |
 * | `sluice_db_compactions_total`, `…_snapshots_total` | counter | level-1+ files and snapshots written |
 * | `sluice_db_compaction_errors_total` | counter | compactions, snapshots, retention runs that failed |
 * | `sluice_databases` | gauge | databases being replicated |
 * | `sluice_databases_by_state` | gauge | databases per `state`: active, parked, opening, failing |
 * | `sluice_replication_lag_seconds` | histogram | every database's current lag (a snapshot) |
 * | `sluice_replication_lag_max_seconds` | gauge | the largest lag, labelled with its `db` |
 * | `sluice_syncs_total`, `sluice_uploads_total`, … | counter | the `sluice_db_*_total` summed |
 * | `sluice_event_loop_delay_seconds` | gauge | latest event-loop delay sample |
 * | `sluice_event_loop_delay_max_seconds` | gauge | largest delay over the last minute or two |
 * | `sluice_build_info` | gauge | 1, labelled with the sluice and deno versions |
 * | `sluice_process_resident_memory_bytes` | gauge | resident set size |
 * | `sluice_process_start_time_seconds` | gauge | when this process started |
 *
 * @module
 */

import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { DatabaseStatus } from "../engine/mod.ts";
import type { Logger } from "../log/mod.ts";
import { LoopDelayMonitor } from "./_loop_delay.ts";
import {
  type Aggregate,
  aggregate,
  DATABASE_STATES,
  LAG_BUCKETS,
  MonotonicTotals,
  type TotalKey,
} from "./_aggregate.ts";

/** Default of {@linkcode MetricsOptions.perDatabaseLimit} (the config's `per-database-limit`). */
export const DEFAULT_PER_DATABASE_LIMIT = 100;

/** Where the per-database figures come from: typically every store's `status()`, concatenated. */
export type StatusSource = () => DatabaseStatus[];

/** Options of {@linkcode Metrics}. */
export interface MetricsOptions {
  /** Per-database figures at this moment. */
  status: StatusSource;
  /** sluice's version, for `sluice_build_info`. */
  version: string;
  /**
   * Event-loop delay meter. Default: a new one (started by the constructor, stopped by
   * {@linkcode Metrics.close}).
   */
  loopDelay?: LoopDelayMonitor;
  /** Export the per-database (`sluice_db_*`) series at all. Default true. */
  perDatabase?: boolean;
  /**
   * Above this many databases the per-database series are left out (aggregates only).
   * Default {@linkcode DEFAULT_PER_DATABASE_LIMIT}.
   */
  perDatabaseLimit?: number;
  /** Databases being opened right now (they have no status row yet). Default: none counted. */
  opening?: () => number;
  /** Hears, once, that the per-database series were turned off by the limit. */
  logger?: Logger;
}

/** A per-database counter: its total, read from the status row (undefined: no series). */
interface DBCounter {
  name: string;
  help: string;
  total: (row: DatabaseStatus) => number | undefined;
  /** The key of the same figure summed over every database (`sluice_<name without db_>`). */
  sum: TotalKey;
}

type StatsKey =
  | "syncs"
  | "syncErrors"
  | "checkpoints"
  | "checkpointErrors"
  | "truncationsContinued"
  | "truncationsSnapshotted"
  | "uploads"
  | "uploadErrors"
  | "bytesUploaded";

/** A counter of the engine's per-database totals. */
function stats(name: string, help: string, key: StatsKey): DBCounter {
  return { name, help, total: (row) => row.stats[key], sum: key };
}

/** A counter of the compactor's totals (no series for a database without a compactor). */
function compaction(
  name: string,
  help: string,
  key: "compactions" | "snapshots" | "errors",
): DBCounter {
  return {
    name,
    help,
    total: (row) => row.compaction?.[key],
    sum: key === "errors" ? "compactionErrors" : key,
  };
}

const DB_COUNTERS: readonly DBCounter[] = [
  stats("sluice_db_syncs_total", "Successful WAL to L0 syncs.", "syncs"),
  stats("sluice_db_sync_errors_total", "Failed WAL to L0 syncs.", "syncErrors"),
  stats("sluice_db_checkpoints_total", "Checkpoints run by sluice.", "checkpoints"),
  stats(
    "sluice_db_checkpoint_errors_total",
    "Checkpoints that failed (a busy database included).",
    "checkpointErrors",
  ),
  stats(
    "sluice_db_truncate_continued_total",
    "TRUNCATE checkpoints after which the syncs continued incrementally.",
    "truncationsContinued",
  ),
  stats(
    "sluice_db_truncate_snapshots_total",
    "TRUNCATE checkpoints followed by a full snapshot (a commit slipped in, or unknown).",
    "truncationsSnapshotted",
  ),
  stats("sluice_db_uploads_total", "L0 files uploaded to the replica.", "uploads"),
  stats(
    "sluice_db_upload_errors_total",
    "Upload attempts that failed (listing or writing the replica).",
    "uploadErrors",
  ),
  stats(
    "sluice_db_uploaded_bytes_total",
    "Bytes of L0 files uploaded to the replica.",
    "bytesUploaded",
  ),
  compaction("sluice_db_compactions_total", "Level-1+ files written by compaction.", "compactions"),
  compaction("sluice_db_snapshots_total", "Snapshots written.", "snapshots"),
  compaction(
    "sluice_db_compaction_errors_total",
    "Compactions, snapshots or retention runs that failed (retried at the next tick).",
    "errors",
  ),
];

/** The Prometheus registry of one `sluice replicate` process. */
export class Metrics {
  /** The private registry; {@linkcode Metrics.text} renders it. */
  readonly registry: Registry = new Registry();
  #status: StatusSource;
  #loopDelay: LoopDelayMonitor;
  #ownsLoopDelay: boolean;
  /** One status snapshot per scrape, shared by every metric's collect(). */
  #snapshot?: DatabaseStatus[];
  /** The aggregates of the current scrape, computed once from `#snapshot`. */
  #aggregate?: Aggregate;
  #perDatabase: boolean;
  #perDatabaseLimit: number;
  #opening: () => number;
  #logger?: Logger;
  #limitLogged = false;

  /** Registers every series; starts the event-loop delay meter. */
  constructor(options: MetricsOptions) {
    this.#status = options.status;
    this.#ownsLoopDelay = options.loopDelay === undefined;
    this.#loopDelay = options.loopDelay ?? new LoopDelayMonitor();
    this.#loopDelay.start();
    this.#perDatabase = options.perDatabase ?? true;
    this.#perDatabaseLimit = options.perDatabaseLimit ?? DEFAULT_PER_DATABASE_LIMIT;
    this.#opening = options.opening ?? (() => 0);
    this.#logger = options.logger;
    const registers = [this.registry];
    const rows = () => this.#perDatabaseRows();
    const totals = () => this.#aggregated();
    const labelNames = ["db"] as const;

    const perDB = (
      name: string,
      help: string,
      value: (row: DatabaseStatus) => number | undefined,
    ) =>
      new Gauge({
        name,
        help,
        labelNames,
        registers,
        collect() {
          this.reset();
          for (const row of rows()) {
            const v = value(row);
            if (v !== undefined && Number.isFinite(v)) this.set({ db: row.path }, v);
          }
        },
      });
    perDB(
      "sluice_db_txid",
      "Newest local TXID (the last L0 file written).",
      (row) => parseHex(row.localTXID),
    );
    perDB(
      "sluice_db_replica_txid",
      "Newest TXID known to be on the replica.",
      (row) => row.replicaTXID === null ? undefined : parseHex(row.replicaTXID),
    );
    perDB(
      "sluice_db_replication_lag_seconds",
      "Age of the oldest local change not yet on the replica (0 when caught up).",
      (row) => row.lagSeconds,
    );
    perDB(
      "sluice_db_wal_bytes",
      "WAL bytes synced so far (end of the last synced frame).",
      (row) => row.walBytes,
    );
    perDB(
      "sluice_db_last_sync_timestamp_seconds",
      "Unix time of the last successful sync.",
      (row) => row.lastSyncAt === null ? undefined : Date.parse(row.lastSyncAt) / 1000,
    );
    perDB(
      "sluice_db_meta_disk_full",
      "1 when the meta directory ran out of space in the last 10 minutes (local L0 copies are " +
        "then dropped as soon as they are on the replica).",
      (row) => row.metaDiskFull === undefined ? undefined : row.metaDiskFull ? 1 : 0,
    );
    perDB(
      "sluice_db_stalled_seconds",
      "Seconds since the WAL changed without any sync picking the change up, once that lasts " +
        "30 s (0 when healthy): commits are not reaching the replica.",
      (row) => row.stalledSeconds,
    );
    for (const { name, help, total } of DB_COUNTERS) {
      new Counter({
        name,
        help,
        labelNames,
        registers,
        // Totals live in the engine; each scrape copies them (reset + inc is how prom-client
        // sets a counter to an absolute value).
        collect() {
          this.reset();
          for (const row of rows()) {
            const value = total(row);
            if (value !== undefined) this.inc({ db: row.path }, Math.max(0, value));
          }
        },
      });
    }

    new Gauge({
      name: "sluice_databases",
      help: "Databases being replicated.",
      registers,
      collect() {
        this.set(totals().databases);
      },
    });
    new Gauge({
      name: "sluice_databases_by_state",
      help: "Databases per state: active (connection open), parked (idle, connection given " +
        "back), opening, failing.",
      labelNames: ["state"] as const,
      registers,
      collect() {
        const { byState } = totals();
        for (const state of DATABASE_STATES) this.set({ state }, byState[state]);
      },
    });
    new LagHistogram({
      name: "sluice_replication_lag_seconds",
      help: "Replication lag of every database at scrape time (a snapshot of the distribution: " +
        "use histogram_quantile on the buckets directly, not on their rate).",
      registers,
      buckets: [...LAG_BUCKETS],
    }, totals);
    new Gauge({
      name: "sluice_replication_lag_max_seconds",
      help: "The largest replication lag of any database, labelled with that database.",
      labelNames: ["db"] as const,
      registers,
      collect() {
        this.reset();
        const max = totals().maxLag;
        if (max !== undefined) this.set({ db: max.db }, max.seconds);
      },
    });
    const monotonic = new MonotonicTotals();
    for (const { name, help, sum } of DB_COUNTERS) {
      new Counter({
        name: name.replace(/^sluice_db_/, "sluice_"),
        help: `${help} Summed over every database (removed ones keep counting).`,
        registers,
        collect() {
          this.reset();
          this.inc(monotonic.value(sum, totals().totals[sum]));
        },
      });
    }
    const loopDelay = this.#loopDelay;
    new Gauge({
      name: "sluice_event_loop_delay_seconds",
      help: "Latest event-loop delay sample (a blocked loop delays every database).",
      registers,
      collect() {
        this.set(loopDelay.lastSeconds);
      },
    });
    new Gauge({
      name: "sluice_event_loop_delay_max_seconds",
      help: "Largest event-loop delay over the last one to two minutes.",
      registers,
      collect() {
        this.set(loopDelay.maxSeconds);
      },
    });
    new Gauge({
      name: "sluice_build_info",
      help: "Always 1; labelled with the sluice and Deno versions.",
      labelNames: ["version", "deno"] as const,
      registers,
    }).set({ version: options.version, deno: Deno.version.deno }, 1);
    new Gauge({
      name: "sluice_process_resident_memory_bytes",
      help: "Resident set size of this process.",
      registers,
      collect() {
        this.set(Deno.memoryUsage().rss);
      },
    });
    new Gauge({
      name: "sluice_process_start_time_seconds",
      help: "Unix time this process started.",
      registers,
    }).set(Math.round(Date.now() - performance.now()) / 1000);
  }

  /** The Content-Type of {@linkcode Metrics.text}. */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** Every series in the Prometheus text exposition format. */
  async text(): Promise<string> {
    this.#snapshot = undefined;
    this.#aggregate = undefined;
    try {
      return await this.registry.metrics();
    } finally {
      this.#snapshot = undefined;
      this.#aggregate = undefined;
    }
  }

  /** Stops the event-loop delay meter when this instance started it. */
  close(): void {
    if (this.#ownsLoopDelay) this.#loopDelay.stop();
  }

  /** The status rows of the current scrape, read once. */
  #rows(): DatabaseStatus[] {
    this.#snapshot ??= this.#status();
    return this.#snapshot;
  }

  /** The aggregates of the current scrape, computed once. */
  #aggregated(): Aggregate {
    this.#aggregate ??= aggregate(this.#rows(), this.#opening());
    return this.#aggregate;
  }

  /** The rows that get per-database series this scrape: all of them, or none above the limit. */
  #perDatabaseRows(): readonly DatabaseStatus[] {
    if (!this.#perDatabase) return [];
    const rows = this.#rows();
    if (rows.length <= this.#perDatabaseLimit) return rows;
    if (!this.#limitLogged) {
      this.#limitLogged = true;
      this.#logger?.info(
        "more databases than metrics.per-database-limit: only aggregate series are exported " +
          "from now on (raise the limit, or see sluice_databases_by_state and " +
          "sluice_replication_lag_max_seconds)",
        { databases: rows.length, limit: this.#perDatabaseLimit },
      );
    }
    return [];
  }
}

/**
 * A histogram of values known only at scrape time: its buckets come from the scrape's
 * {@linkcode Aggregate} (counted in one pass), not from one `observe()` per database.
 */
class LagHistogram extends Histogram {
  #aggregate: () => Aggregate;
  #name: string;
  #help: string;

  constructor(
    configuration: ConstructorParameters<typeof Histogram>[0],
    aggregate: () => Aggregate,
  ) {
    super(configuration);
    this.#aggregate = aggregate;
    this.#name = configuration.name;
    this.#help = configuration.help;
  }

  /**
   * What the registry renders (prom-client calls this instead of `get()` for text, and its
   * `get()` calls this too).
   */
  getForPromString(): Promise<RenderedMetric> {
    const { lagBuckets, lagSum, databases } = this.#aggregate();
    const name = this.#name;
    const values: RenderedMetric["values"] = LAG_BUCKETS.map((le, i) => ({
      metricName: `${name}_bucket`,
      labels: { le },
      value: lagBuckets[i],
    }));
    values.push({ metricName: `${name}_bucket`, labels: { le: "+Inf" }, value: databases });
    return Promise.resolve({
      name,
      help: this.#help,
      type: "histogram",
      aggregator: "sum",
      values: [
        ...values,
        { metricName: `${name}_sum`, labels: {}, value: lagSum },
        { metricName: `${name}_count`, labels: {}, value: databases },
      ],
    });
  }
}

/** A metric as prom-client's registry renders it (its typings call `type` an enum; it is not). */
interface RenderedMetric {
  name: string;
  help: string;
  type: "histogram";
  aggregator: "sum";
  values: { metricName: string; labels: Record<string, string | number>; value: number }[];
}

function parseHex(text: string): number {
  return Number.parseInt(text, 16);
}
