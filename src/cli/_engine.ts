/**
 * Turns validated configuration into what the engine runs: one {@linkcode DatabaseEntry} per
 * database. The only place where config types meet engine types.
 *
 * @module
 */

import type { Config, DatabaseConfig } from "../config/mod.ts";
import { metaDirFor, replicaSpecFor } from "../config/mod.ts";
import { createReplicaClient } from "../replica/mod.ts";
import { type DatabaseEntry, DEFAULT_SYNC_INTERVAL } from "../engine/mod.ts";
import { type CompactionSettings, compactorFactory } from "../compaction/mod.ts";

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
    parkAfter: dbConfig.parkAfter,
    encoding: dbConfig.replica.encoding,
    l0Retention: config.l0Retention,
    // Levels, snapshots and retention (src/compaction/).
    createCompactor: compactorFactory(compactionSettings(config), {
      encoding: dbConfig.replica.encoding,
    }),
  };
}

/** The config's levels, snapshot and retention settings, as the compactor takes them. */
export function compactionSettings(config: Config): CompactionSettings {
  return {
    levels: config.levels.map((level) => level.interval),
    snapshotInterval: config.snapshot.interval,
    snapshotRetention: config.snapshot.retention,
    l0Retention: config.l0Retention,
    retentionEnabled: config.retention.enabled,
  };
}
