/**
 * Turns validated configuration into what the engine runs: one {@linkcode DatabaseEntry} per
 * database. The only place where config types meet engine types.
 *
 * @module
 */

import type { Config, DatabaseConfig } from "../config/mod.ts";
import { metaDirFor, replicaSpecFor } from "../config/mod.ts";
import { createReplicaClient } from "../replica/mod.ts";
import type { DatabaseEntry } from "../store.ts";

/** Default leading-edge sync throttle per backend when `sync-interval` is not set, in ms. */
export const DEFAULT_SYNC_INTERVAL = {
  /** A local directory costs nothing per file: keep the lag in milliseconds. */
  file: 100,
  /** Object storage bills per request: at most one upload batch per second. */
  s3: 1000,
} as const;

/** The engine entry for database `dbPath` of config entry `dbConfig`. */
export function databaseEntry(
  config: Config,
  dbConfig: DatabaseConfig,
  dbPath: string,
): DatabaseEntry {
  const spec = replicaSpecFor(dbPath, dbConfig);
  const syncInterval = dbConfig.replica.syncInterval ?? DEFAULT_SYNC_INTERVAL[spec.type];
  return {
    path: dbPath,
    metaDir: metaDirFor(dbPath, dbConfig),
    createClient: () => createReplicaClient(spec),
    syncInterval,
    monitorInterval: dbConfig.monitorInterval,
    checkpointInterval: dbConfig.checkpointInterval,
    minCheckpointPageN: dbConfig.minCheckpointPageN,
    truncatePageN: dbConfig.truncatePageN,
    busyTimeout: dbConfig.busyTimeout,
    encoding: dbConfig.replica.encoding,
    l0Retention: config.l0Retention,
    // Levels, snapshots and retention (src/compactor.ts).
    compaction: {
      levels: config.levels.map((level) => level.interval),
      snapshotInterval: config.snapshot.interval,
      snapshotRetention: config.snapshot.retention,
      l0Retention: config.l0Retention,
      retentionEnabled: config.retention.enabled,
    },
  };
}
