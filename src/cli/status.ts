/**
 * `sluice status [-c FILE] [--json]`: per database, the local TXID, the replica TXID, the
 * replication lag, the WAL size and the last error.
 *
 * Where the figures come from:
 *
 * - **From the running daemon** when the config has `addr:` and a `sluice replicate` answers
 *   there: its `GET /status` (src/daemon/http.ts). Only the daemon knows its last error, its last sync
 *   and the exact lag (it tracks the oldest change it has not shipped), and asking it costs
 *   the replica nothing. HTTP rather than the control socket, because `addr:` is configured,
 *   stable and reachable by other tools too (the socket's path is private to the process).
 * - **From disk** otherwise (no `addr:`, or nothing answering): the local TXID is the newest L0
 *   file in the database's meta directory (the persisted cursor), the replica TXID comes from a
 *   listing of the replica, the lag is the age of the oldest local L0 file not yet on the
 *   replica, the WAL size is the `-wal` file's size (stat only: no descriptor is opened on a
 *   live database). A daemon's last error is not visible from disk; a replica that cannot be
 *   listed is reported as this command's error.
 *
 * Databases the config lists but the daemon does not replicate (not created yet, failed to
 * open) are shown from disk, marked `replicating: false`.
 *
 * @module
 */

import type { Config } from "../config/mod.ts";
import { formatReplicaLocation, resolveDatabase } from "../config/mod.ts";
import { type DaemonStatus, fetchDaemonStatus } from "../daemon/mod.ts";
import { createReplicaClient, FileReplicaClient, mapConcurrently } from "../replica/mod.ts";
import type { ReplicaSpec } from "../replica/mod.ts";
import type { LTXFileInfo } from "../replica/mod.ts";
import { Replica } from "../engine/mod.ts";
import { formatTXID } from "../ltx/mod.ts";
import { type DatabaseListing, listDatabases } from "./databases.ts";
import { loadCommandConfig, parseStatusArgs } from "./args.ts";

/** One database in the report. */
export interface DatabaseStatusRow {
  /** Absolute database path. */
  path: string;
  /** Replica location without credentials. */
  replica: string;
  /** Where these figures come from. */
  source: "daemon" | "disk";
  /** Whether the daemon replicates it right now (false without a daemon). */
  replicating: boolean;
  /** Whether the database file exists. */
  exists: boolean;
  /** Newest local TXID (16 hex digits), or null when nothing was synced yet. */
  localTXID: string | null;
  /** Newest TXID on the replica, or null when unknown (unreadable) or empty. */
  replicaTXID: string | null;
  /** Age of the oldest change not yet on the replica, s (0 caught up; null unknown). */
  lagSeconds: number | null;
  /**
   * WAL size in bytes: the daemon's synced WAL bytes, or (from disk) the `-wal` file's size;
   * null when there is none.
   */
  walBytes: number | null;
  /** Last successful sync (daemon), or when the newest local L0 file was written (disk). */
  lastSyncAt: string | null;
  /** The daemon's last error for this database, or why the disk figures are incomplete. */
  lastError: string | null;
  /** When `lastError` happened (RFC 3339), when known. */
  lastErrorAt: string | null;
}

/** The whole report (the `--json` output). */
export interface StatusReport {
  /** "daemon" when a running `sluice replicate` answered on `addr:`, else "disk". */
  source: "daemon" | "disk";
  /** The daemon that answered. */
  daemon: { addr: string; pid: number; version: string; startedAt: string } | null;
  /** Why the daemon was not asked or did not answer, when `source` is "disk". */
  note: string | null;
  databases: DatabaseStatusRow[];
  /** Problems reading figures, as `path: reason`; the exit status is 1 when there are any. */
  errors: string[];
}

/** Replica listings run at once (a `dir` entry may hold thousands of databases). */
const LISTING_CONCURRENCY = 8;

/** Options of {@linkcode buildStatus}. */
export interface BuildStatusOptions {
  /** Time for the daemon to answer, ms. Default 2000. */
  daemonTimeoutMs?: number;
  /** Clock, ms. Default `Date.now`. */
  now?: () => number;
}

/** Builds the report for `config`: from the daemon when one answers on `addr:`, else from disk. */
export async function buildStatus(
  config: Config,
  options: BuildStatusOptions = {},
): Promise<StatusReport> {
  const listing = await listDatabases(config);
  const report: StatusReport = {
    source: "disk",
    daemon: null,
    note: null,
    databases: [],
    errors: [...listing.errors],
  };
  let daemon: DaemonStatus | undefined;
  if (config.addr === undefined) {
    report.note = 'no "addr:" in the config: figures from disk (the daemon\'s errors are unknown)';
  } else {
    try {
      daemon = await fetchDaemonStatus(config.addr, { timeoutMs: options.daemonTimeoutMs });
      if (daemon === undefined) {
        report.note = `no sluice replicate answers on ${config.addr}`;
      }
    } catch (err) {
      report.note = `${(err as Error).message}`;
    }
  }
  const now = options.now ?? Date.now;
  const fromDaemon = new Map<string, DatabaseStatusRow>();
  if (daemon !== undefined) {
    report.source = "daemon";
    report.daemon = {
      addr: config.addr!,
      pid: daemon.pid,
      version: daemon.version,
      startedAt: daemon.startedAt,
    };
    for (const db of daemon.databases) {
      fromDaemon.set(db.path, {
        path: db.path,
        replica: db.replica,
        source: "daemon",
        replicating: true,
        exists: true,
        localTXID: db.localTXID,
        replicaTXID: db.replicaTXID,
        lagSeconds: db.lagSeconds,
        walBytes: db.walBytes,
        lastSyncAt: db.lastSyncAt,
        lastError: db.lastError,
        lastErrorAt: db.lastErrorAt ?? null,
      });
    }
  }
  const rows = new Map<string, DatabaseStatusRow>(fromDaemon);
  const fromDisk = listing.databases.filter((db) => !fromDaemon.has(db.path));
  const diskRows = await mapConcurrently(
    fromDisk,
    LISTING_CONCURRENCY,
    (db) => diskStatus(config, db, now),
  );
  for (const row of diskRows) {
    rows.set(row.path, row);
    if (row.lastError !== null && row.exists) report.errors.push(`${row.path}: ${row.lastError}`);
  }
  report.databases = [...rows.values()].sort((a, b) => a.path < b.path ? -1 : 1);
  return report;
}

/** The figures of one database read from its meta directory, its replica and its `-wal`. */
async function diskStatus(
  config: Config,
  db: DatabaseListing,
  now: () => number,
): Promise<DatabaseStatusRow> {
  const row: DatabaseStatusRow = {
    path: db.path,
    replica: db.replica,
    source: "disk",
    replicating: false,
    exists: db.exists,
    localTXID: null,
    replicaTXID: null,
    lagSeconds: null,
    walBytes: null,
    lastSyncAt: null,
    lastError: null,
    lastErrorAt: null,
  };
  const problems: string[] = [];
  const localFiles: LTXFileInfo[] = [];
  const local = new FileReplicaClient(db.metaDir);
  try {
    for await (const file of local.ltxFiles(0)) localFiles.push(file);
  } catch (err) {
    problems.push(`meta directory ${db.metaDir}: ${(err as Error).message}`);
  }
  const newest = localFiles.at(-1);
  const localTXID = newest?.maxTXID ?? 0;
  if (newest !== undefined) {
    row.localTXID = formatTXID(newest.maxTXID);
    row.lastSyncAt = newest.createdAt.toISOString();
  }
  row.walBytes = await Deno.stat(`${db.path}-wal`).then((info) => info.size, () => null);

  const entry = config.dbs[db.entry];
  const client = createReplicaClient(statusSpec(resolveDatabase(db.path, entry).replica));
  try {
    const replicaTXID = await new Replica(client, local).position();
    row.replicaTXID = replicaTXID === 0 ? null : formatTXID(replicaTXID);
    const pending = localFiles.find((file) => file.maxTXID > replicaTXID);
    row.lagSeconds = localTXID <= replicaTXID || pending === undefined
      ? 0
      : Math.max(0, now() - pending.createdAt.getTime()) / 1000;
  } catch (err) {
    problems.push(
      `replica ${formatReplicaLocation(entry.replica.spec)}: ${(err as Error).message}`,
    );
  } finally {
    await client.close().catch(() => {});
  }
  if (problems.length > 0) row.lastError = problems.join("; ");
  return row;
}

/** The replica spec for a quick look: an unreachable S3 endpoint fails after 2 attempts. */
function statusSpec(spec: ReplicaSpec): ReplicaSpec {
  return spec.type === "s3" ? { ...spec, maxAttempts: 2 } : spec;
}

/** The text form: where the figures come from, then an aligned table. */
export function formatStatus(report: StatusReport): string {
  const head = report.daemon !== null
    ? `status from sluice replicate (pid ${report.daemon.pid}) on ${report.daemon.addr}`
    : `status from disk${report.note === null ? "" : ` (${report.note})`}`;
  const rows: string[][] = [["PATH", "LOCAL TXID", "REPLICA TXID", "LAG", "WAL", "LAST ERROR"]];
  for (const db of report.databases) {
    const path = !db.exists
      ? `${db.path} (missing)`
      : report.source === "daemon" && !db.replicating
      ? `${db.path} (not replicating)`
      : db.path;
    rows.push([
      path,
      db.localTXID ?? "-",
      db.replicaTXID ?? "-",
      db.lagSeconds === null ? "?" : `${db.lagSeconds.toFixed(1)}s`,
      db.walBytes === null ? "-" : formatBytes(db.walBytes),
      db.lastError === null
        ? "-"
        : db.lastErrorAt === null
        ? db.lastError
        : `${db.lastErrorAt}: ${db.lastError}`,
    ]);
  }
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
  const table = rows.map((row) =>
    row.map((cell, column) => column < row.length - 1 ? cell.padEnd(widths[column]) : cell)
      .join("  ")
  );
  if (report.databases.length === 0) table.push("(no databases)");
  return [head, ...table].join("\n");
}

function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** Runs the command; exit status 1 when some figure could not be read (the rest is printed). */
export async function run(args: string[]): Promise<number> {
  const options = parseStatusArgs(args);
  const config = await loadCommandConfig(
    options.config === undefined ? {} : { config: options.config },
  );
  const report = await buildStatus(config);
  console.log(options.json ? JSON.stringify(report, null, 2) : formatStatus(report));
  for (const error of report.errors) console.error(`sluice status: ${error}`);
  return report.errors.length > 0 ? 1 : 0;
}
