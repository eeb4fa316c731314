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
 * Series (label `db` = absolute database path):
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
 * | `sluice_event_loop_delay_seconds` | gauge | latest event-loop delay sample |
 * | `sluice_event_loop_delay_max_seconds` | gauge | largest delay over the last minute or two |
 * | `sluice_build_info` | gauge | 1, labelled with the sluice and deno versions |
 * | `sluice_process_resident_memory_bytes` | gauge | resident set size |
 * | `sluice_process_start_time_seconds` | gauge | when this process started |
 *
 * @module
 */

import { Counter, Gauge, Registry } from "prom-client";
import type { DatabaseStatus } from "../engine/mod.ts";
import { LoopDelayMonitor } from "./_loop_delay.ts";

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
}

/** A per-database counter: its total, read from the status row (undefined: no series). */
interface DBCounter {
  name: string;
  help: string;
  total: (row: DatabaseStatus) => number | undefined;
}

type StatsKey =
  | "syncs"
  | "syncErrors"
  | "checkpoints"
  | "checkpointErrors"
  | "uploads"
  | "uploadErrors"
  | "bytesUploaded";

/** A counter of the engine's per-database totals. */
function stats(name: string, help: string, key: StatsKey): DBCounter {
  return { name, help, total: (row) => row.stats[key] };
}

/** A counter of the compactor's totals (no series for a database without a compactor). */
function compaction(
  name: string,
  help: string,
  key: "compactions" | "snapshots" | "errors",
): DBCounter {
  return { name, help, total: (row) => row.compaction?.[key] };
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

  /** Registers every series; starts the event-loop delay meter. */
  constructor(options: MetricsOptions) {
    this.#status = options.status;
    this.#ownsLoopDelay = options.loopDelay === undefined;
    this.#loopDelay = options.loopDelay ?? new LoopDelayMonitor();
    this.#loopDelay.start();
    const registers = [this.registry];
    const rows = () => this.#rows();
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
        this.set(rows().length);
      },
    });
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
    try {
      return await this.registry.metrics();
    } finally {
      this.#snapshot = undefined;
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
}

function parseHex(text: string): number {
  return Number.parseInt(text, 16);
}
