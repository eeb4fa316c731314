/**
 * `sluice snapshot [-c FILE] [DB_PATH REPLICA_URL]`: one consistent full snapshot (level 9) of
 * each configured database, taken while applications keep writing, then exit (for cron).
 *
 * A snapshot continues the replica's TXID sequence: it is taken at the next local L0 position
 * (after a sync), and that L0 file is uploaded too, so the replica position and the snapshot
 * agree. Only one process may write a database's L0 files, so:
 * - when a `sluice replicate` holds the database's meta directory, this command asks that
 *   process over its control socket to take the snapshot (src/daemon/control.ts);
 * - otherwise it takes the meta directory lock itself and snapshots the database directly.
 *
 * Snapshot retention (`snapshot.retention`, `retention.enabled`) is applied afterwards either
 * way. Exit status 0 when every database was snapshotted, 1 when any failed (each failure is
 * one line on stderr naming the database).
 *
 * @module
 */

import { createLogger, type Logger, type LogLevel } from "../log/mod.ts";
import { formatTXID } from "../ltx/mod.ts";
import {
  attachDatabase,
  type DatabaseEntry,
  type DB,
  detachDatabase,
  MetaDirLockedError,
  type MetaLock,
  readLockHolder,
  tryLockMetaDir,
} from "../engine/mod.ts";
import {
  type CompactionSettings,
  Compactor,
  countingClient,
  promoteToSnapshot,
} from "../compaction/mod.ts";
import type { ReplicaClient } from "../replica/mod.ts";
import { codeOnMainThreadToo, imageEncoding, prestartEncoder } from "../pipeline/mod.ts";
import { compactionSettings, databaseEntry } from "./_engine.ts";
import { loadCommandConfig, parseSnapshotArgs } from "./args.ts";

/** Databases larger than this show progress when stderr is a terminal. */
const PROGRESS_THRESHOLD = 64 << 20;
/** How long to wait for a busy meta directory (another snapshot, a starting replicate). */
const DEFAULT_LOCK_WAIT_MS = 60_000;
const RETRY_DELAY_MS = 200;

/** A database's snapshot failed; the message names the database. */
export class SnapshotError extends Error {
  /** Builds an error naming `dbPath` and the reason. */
  constructor(dbPath: string, reason: string, options?: ErrorOptions) {
    super(`snapshot of ${dbPath} failed: ${reason}`, options);
    this.name = "SnapshotError";
  }
}

/** What one snapshot produced. */
export interface SnapshotOutcome {
  /** Absolute database path. */
  path: string;
  /** Replica location. */
  replica: string;
  /** TXID the snapshot covers (its file is `0000000000000001-<txid>.ltx` at level 9). */
  txid: number;
  /** "local": taken by this process; "replicate": by the `sluice replicate` holding it. */
  via: "local" | "replicate";
}

/**
 * Runs the command; resolves to the exit code.
 * @throws {UsageError} | {ConfigError} for the user's mistakes (exit 2).
 */
export async function run(args: string[]): Promise<number> {
  const options = parseSnapshotArgs(args);
  // This process does nothing else meanwhile: the main thread codes batches of a large image
  // too whenever the codec worker is behind, instead of waiting for it.
  codeOnMainThreadToo(true);
  const config = await loadCommandConfig(options);
  // A cron job should be quiet when all goes well: warnings and errors only, unless debugging.
  const level: LogLevel = config.logging.level === "debug" ? "debug" : "warn";
  const logger = createLogger({ ...config.logging, level });

  const entries: DatabaseEntry[] = [];
  let failed = false;
  for (const dbConfig of config.dbs) {
    if (dbConfig.path !== undefined) {
      entries.push(databaseEntry(config, dbConfig, dbConfig.path));
      continue;
    }
    try {
      // Loaded only for a directory entry: most snapshots name their databases.
      const { scanDirectory } = await import("../discovery/mod.ts");
      const found = scanDirectory(dbConfig.dir!, {
        pattern: dbConfig.pattern,
        recursive: dbConfig.recursive,
        onError: (path, err) => {
          failed = true;
          printError(`cannot read ${path}: ${(err as Error).message}`);
        },
      });
      for await (const path of found) entries.push(databaseEntry(config, dbConfig, path));
    } catch (err) {
      failed = true;
      printError(`cannot scan ${dbConfig.dir}: ${(err as Error).message}`);
    }
  }

  const settings = compactionSettings(config);
  for (const entry of entries) {
    const progress = progressReporter(entry.path);
    try {
      const outcome = await snapshotDatabase(entry, settings, {
        logger: logger.child({ db: entry.path }),
        onProgress: progress.update,
      });
      progress.done();
      console.log(
        `snapshot of ${outcome.path} at TXID ${formatTXID(outcome.txid)} written to ` +
          `${outcome.replica}${outcome.via === "replicate" ? " (by sluice replicate)" : ""}`,
      );
    } catch (err) {
      progress.done();
      failed = true;
      const message = (err as Error).message ?? String(err);
      printError(
        err instanceof SnapshotError ? message : `snapshot of ${entry.path} failed: ${message}`,
      );
    }
  }
  return failed ? 1 : 0;
}

/** Options of {@linkcode snapshotDatabase}. */
export interface SnapshotDatabaseOptions {
  logger?: Logger;
  /** Bytes of the snapshot file written so far, and the database size. */
  onProgress?: (bytesWritten: number, databaseBytes: number) => void;
  /** How long to wait while another process briefly holds the meta directory. Default 60 s. */
  lockWaitMs?: number;
}

/**
 * Takes one level-9 snapshot of `entry`'s database: through the `sluice replicate` that holds
 * its meta directory when there is one, else directly (holding the lock meanwhile). Applies
 * snapshot retention per `settings`.
 * @throws {SnapshotError} naming the database.
 */
export async function snapshotDatabase(
  entry: DatabaseEntry,
  settings: CompactionSettings,
  options: SnapshotDatabaseOptions = {},
): Promise<SnapshotOutcome> {
  const { path } = entry;
  const info = await Deno.stat(path).catch((err) => {
    throw new SnapshotError(
      path,
      err instanceof Deno.errors.NotFound ? "the database does not exist" : err.message,
      { cause: err },
    );
  });
  if (!info.isFile) throw new SnapshotError(path, "not a regular file");
  const databaseBytes = info.size;
  const onProgress = options.onProgress
    ? (bytes: number) => options.onProgress!(bytes, databaseBytes)
    : undefined;
  onProgress?.(0); // the sync before the snapshot streams shows no bytes yet

  const deadline = Date.now() + (options.lockWaitMs ?? DEFAULT_LOCK_WAIT_MS);
  let waitingFor = "";
  for (;;) {
    const lock = await tryLockMetaDir(entry.metaDir, { command: "snapshot" }).catch((err) => {
      throw new SnapshotError(path, `cannot lock ${entry.metaDir}: ${err.message}`, {
        cause: err,
      });
    });
    if (lock) {
      // The full image is coded on codec workers: they start while the database is
      // attached and synced, instead of after.
      const workers = prestartEncoder(databaseBytes, imageEncoding());
      try {
        return await snapshotLocally(entry, lock, settings, options.logger, onProgress);
      } finally {
        workers.release();
        lock.release();
      }
    }
    const holder = await readLockHolder(entry.metaDir);
    if (holder?.command === "replicate" && holder.socket === undefined) {
      throw new SnapshotError(
        path,
        new MetaDirLockedError(entry.metaDir, holder).message +
          "; that process has no control channel, so take the snapshot through it or stop it",
      );
    }
    if (holder?.command === "replicate" && holder.socket !== undefined) {
      // The daemon's modules (its HTTP server, metrics) load only to talk to one: a snapshot
      // taken here starts ~0.05 s sooner without them.
      const { ControlError, requestSnapshot } = await import("../daemon/mod.ts");
      try {
        const replica = await replicaLocation(entry);
        const { txid } = await requestSnapshot(holder.socket, path, { onProgress, replica });
        return { path, replica, txid, via: "replicate" };
      } catch (err) {
        // "not-found": that process is still opening the database; "unreachable": it is
        // exiting (or the lock file still names a holder that is gone). Both pass.
        if (!(err instanceof ControlError) || err.code === "failed") {
          throw new SnapshotError(
            path,
            `sluice replicate (pid ${holder.pid}) could not take it: ${(err as Error).message}`,
            { cause: err },
          );
        }
        waitingFor = (err as Error).message;
      }
    } else {
      waitingFor = new MetaDirLockedError(entry.metaDir, holder).message;
    }
    if (Date.now() > deadline) {
      throw new SnapshotError(path, `gave up waiting: ${waitingFor}`);
    }
    await new Promise((resolve) => setTimeout(resolve, RETRY_DELAY_MS));
  }
}

/**
 * The snapshot without a daemon, holding `lock`: attach the database to its replica exactly as
 * `replicate` does (owner marker, the replica's TXID sequence), snapshot, upload the L0 file of
 * the snapshot's position, apply snapshot retention.
 */
async function snapshotLocally(
  entry: DatabaseEntry,
  lock: MetaLock,
  settings: CompactionSettings,
  logger: Logger | undefined,
  onProgress: ((bytes: number) => void) | undefined,
): Promise<SnapshotOutcome> {
  const attachment = await attachDatabase(entry, { logger, lock: () => Promise.resolve(lock) })
    .catch((err) => {
      throw new SnapshotError(entry.path, (err as Error).message, { cause: err });
    });
  const { db, replica } = attachment;
  const client = replica.client;
  try {
    const compactor = new Compactor(client, {
      ...settings,
      local: db.local,
      position: () => db.txid,
      snapshot: (call) =>
        syncAndSnapshot(
          db,
          call?.onProgress ? countingClient(client, call.onProgress) : client,
        ),
      logger,
      encoding: entry.encoding,
    });
    const { txid } = await compactor.snapshotNow({ onProgress });
    if (txid === 0) throw new Error("the database has nothing to snapshot");
    // The L0 file at the snapshot's TXID (and any left from earlier runs) goes up too, so
    // the replica position (newest L0) is the snapshot's TXID.
    await replica.upload(db.txid);
    await compactor.stop();
    return { path: entry.path, replica: client.location, txid, via: "local" };
  } catch (err) {
    throw new SnapshotError(entry.path, (err as Error).message, { cause: err });
  } finally {
    await detachDatabase(attachment).catch(() => {});
  }
}

/**
 * Syncs, then writes the snapshot. When the sync itself wrote a full image of the database
 * (the first run, or the WAL was restarted since the last one, as a cron job usually finds),
 * that L0 file becomes the snapshot by a copy with a new header; otherwise the snapshot is
 * encoded from the database (`DB.snapshot`).
 */
async function syncAndSnapshot(db: DB, target: ReplicaClient): Promise<{ txid: number }> {
  let synced = await db.sync();
  for (let i = 0; synced.more && i < 1000; i++) synced = await db.sync();
  if (synced.snapshot && !synced.more && synced.txid !== undefined && synced.txid === db.txid) {
    const promoted = await promoteToSnapshot(
      { client: db.local, txid: synced.txid, pageCount: synced.pageCount },
      target,
    );
    if (promoted) return { txid: synced.txid };
  }
  return await db.snapshot(target);
}

/** The location of `entry`'s replica, without credentials. */
async function replicaLocation(entry: DatabaseEntry): Promise<string> {
  const client = entry.createClient();
  try {
    return client.location;
  } finally {
    await client.close();
  }
}

/** Progress on stderr for large databases on a terminal; redraws at most 5 times a second. */
function progressReporter(dbPath: string): {
  update?: (bytesWritten: number, databaseBytes: number) => void;
  done: () => void;
} {
  if (!Deno.stderr.isTerminal()) return { done: () => {} };
  const encoder = new TextEncoder();
  let shown = false;
  let last = 0;
  return {
    update(bytesWritten, databaseBytes) {
      if (databaseBytes <= PROGRESS_THRESHOLD) return;
      const now = performance.now();
      if (now - last < 200) return;
      last = now;
      shown = true;
      const mib = (n: number) => (n / (1 << 20)).toFixed(0);
      const state = bytesWritten === 0 ? "syncing" : `${mib(bytesWritten)} MiB written`;
      Deno.stderr.writeSync(
        encoder.encode(`\rsnapshot of ${dbPath}: ${state} (database ${mib(databaseBytes)} MiB)`),
      );
    },
    done() {
      if (shown) Deno.stderr.writeSync(encoder.encode("\n"));
      shown = false;
    },
  };
}

function printError(message: string): void {
  const bytes = new TextEncoder().encode(`sluice snapshot: ${message.replace(/\s*\n\s*/g, " ")}\n`);
  try {
    Deno.stderr.writeSync(bytes);
  } catch { /* stderr closed */ }
}
