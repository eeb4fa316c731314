/**
 * The validated, defaulted configuration every command works from. Durations are
 * milliseconds; paths are absolute.
 *
 * @module
 */

import type { ReplicaSpec } from "./replica_url.ts";

/** Log verbosity. */
export type LogLevel = "debug" | "info" | "warn" | "error";
/** Log line format. */
export type LogType = "text" | "json";
/** LTX page encoding: LZ4 frame per page (readable by every Litestream v0.5.x) or size + block. */
export type PageEncoding = "frame" | "block";

/** `logging:` */
export interface LoggingConfig {
  level: LogLevel;
  type: LogType;
  /** Unset: stderr. `false` (as in Litestream) sends logs to stdout. */
  stderr?: boolean;
}

/**
 * `metrics:`: how much `/metrics` says per database. Aggregates (databases by state, lag
 * histogram, the worst lag, totals) are always exported; per-database series (label `db`) only
 * when `perDatabase` is on and at most `perDatabaseLimit` databases are replicated, so 100,000
 * tenants never turn into millions of series by default.
 */
export interface MetricsConfig {
  /** Export per-database series at all. Default true. */
  perDatabase: boolean;
  /** Above this many databases, only aggregates are exported. Default 100. */
  perDatabaseLimit: number;
}

/**
 * `health:`: when `GET /healthz` answers 503. A database is unhealthy when its replication lag
 * is above `maxLag`, when changes are pending and nothing was uploaded for `maxUploadAge`, or
 * when it cannot be opened or its syncs fail.
 */
export interface HealthConfig {
  /** ms. Default 1 minute. */
  maxLag: number;
  /** ms. Default 5 minutes. */
  maxUploadAge: number;
}

/** The whole configuration. */
export interface Config {
  /** Absolute path of the config file; undefined when built from command-line arguments. */
  source?: string;
  /** `host:port` for /metrics and status (`:9090` listens on every interface). */
  addr?: string;
  logging: LoggingConfig;
  /** `metrics:`; unset means the defaults (per-database series for up to 100 databases). */
  metrics?: MetricsConfig;
  /** `health:`; unset means the defaults ({@linkcode DEFAULTS}.healthMaxLag, …). */
  health?: HealthConfig;
  /** Full snapshots (level 9): how often, and how long they are kept. */
  snapshot: { interval: number; retention: number };
  /** Compaction levels L1…Ln (n ≤ 8), each with how often it is compacted. */
  levels: { interval: number }[];
  /** How long L0 files stay after compaction into L1; 0 deletes them at once. */
  l0Retention: number;
  /**
   * `background-jobs`: heavy jobs (compactions, snapshots, first snapshots of 16 MiB and more) running at once
   * across all databases of the process. Default 2.
   */
  backgroundJobs: number;
  /** Whether old snapshots and compacted files are deleted. */
  retention: { enabled: boolean };
  /** A command `replicate` runs, stopping when it exits. */
  exec?: string;
  dbs: DatabaseConfig[];
}

/** One `dbs:` entry: a single database (`path`) or a directory of them (`dir`). */
export interface DatabaseConfig {
  /** Absolute database path; exactly one of `path` and `dir` is set. */
  path?: string;
  /** Absolute directory scanned for databases. */
  dir?: string;
  /** Glob databases in `dir` must match (see src/config/pattern.ts); "" for `path` entries. */
  pattern: string;
  /** Also scan subdirectories of `dir`. */
  recursive: boolean;
  /** Watch `dir` for databases created and removed at runtime. */
  watch: boolean;
  /**
   * `meta-path`: for a `path` entry, its meta directory; for a `dir` entry, the base under which
   * each database's meta directory is derived (see `metaDirFor`).
   */
  metaPath?: string;
  /** Safety-net WAL poll, ms. Default 1000. */
  monitorInterval: number;
  /** Time-based PASSIVE checkpoint, ms. Default 60000. */
  checkpointInterval: number;
  /** PASSIVE checkpoint at this many WAL pages. Default 1000. */
  minCheckpointPageN: number;
  /** Emergency TRUNCATE checkpoint at this many WAL pages; 0 disables. Default 121359. */
  truncatePageN: number;
  /** Total retry budget for busy/locked operations, ms. Default 1000. */
  busyTimeout: number;
  /**
   * `park-after`: idle time after which the database is parked (connections and descriptors
   * released until it changes), ms; 0 never parks. Default 1 min for `dir` entries, 0 for `path`.
   */
  parkAfter: number;
  replica: ReplicaConfig;
  /** Line of this entry in the config file, for messages. */
  line?: number;
}

/** A database's replica. For a `dir` entry, `spec` is the root (see `replicaSpecFor`). */
export interface ReplicaConfig {
  spec: ReplicaSpec;
  /**
   * Minimum time between syncs (leading edge), ms. Unset: the backend's default, 100 ms for a
   * directory (lag in milliseconds, files cost nothing) and 1 s for S3 (requests cost money).
   */
  syncInterval?: number;
  /** Page encoding of the LTX files written. Default "frame". */
  encoding: PageEncoding;
}

/** Default values (Litestream v0.5's where the setting is the same). */
export const DEFAULTS = {
  logLevel: "info" as LogLevel,
  logType: "text" as LogType,
  snapshotInterval: 24 * 3_600_000,
  snapshotRetention: 24 * 3_600_000,
  levelIntervals: [30_000, 5 * 60_000, 3_600_000] as readonly number[],
  maxLevels: 8,
  l0Retention: 5 * 60_000,
  backgroundJobs: 2,
  monitorInterval: 1000,
  checkpointInterval: 60_000,
  minCheckpointPageN: 1000,
  truncatePageN: 121_359,
  busyTimeout: 1000,
  /** `park-after` of directory tenants; single databases are never parked by default. */
  parkAfter: 60_000,
  encoding: "frame" as PageEncoding,
  metricsPerDatabase: true,
  metricsPerDatabaseLimit: 100,
  healthMaxLag: 60_000,
  healthMaxUploadAge: 5 * 60_000,
} as const;
