/**
 * `sluice databases [-c FILE] [--json]`: lists the configured databases with their replica
 * location (never credentials) and meta directory; for a `dir` entry, the SQLite databases
 * found there right now (the same scan the directory monitor uses).
 *
 * @module
 */

import {
  type Config,
  type DatabaseConfig,
  formatReplicaLocation,
  resolveDatabase,
} from "../config/mod.ts";
import { scanDirectory } from "../discovery/mod.ts";
import { loadCommandConfig, parseDatabasesArgs } from "./args.ts";

/** One database in the listing. */
export interface DatabaseListing {
  /** Absolute database path. */
  path: string;
  /** Replica location without credentials. */
  replica: string;
  /** Meta directory (local L0 files). */
  metaDir: string;
  /** Whether the database file exists now. */
  exists: boolean;
  /** Index of the `dbs` entry it comes from. */
  entry: number;
  /** The entry's directory, for databases found by a `dir` entry. */
  dir?: string;
}

/** One `dir` entry in the listing. */
export interface DirectoryListing {
  /** Index of the `dbs` entry. */
  entry: number;
  dir: string;
  pattern: string;
  recursive: boolean;
  watch: boolean;
  /** Replica location the databases' relative paths are appended to. */
  replica: string;
  /** Whether the directory exists now. */
  exists: boolean;
  /** Databases found in it. */
  count: number;
}

/** The whole listing (the `--json` output). */
export interface Listing {
  databases: DatabaseListing[];
  dirs: DirectoryListing[];
  /** Files or directories that could not be read, as `path: reason`. */
  errors: string[];
}

/** Builds the listing for `config`; scans every `dir` entry. */
export async function listDatabases(config: Config): Promise<Listing> {
  const listing: Listing = { databases: [], dirs: [], errors: [] };
  for (const [entry, db] of config.dbs.entries()) {
    if (db.path !== undefined) {
      listing.databases.push(await describe(db.path, db, entry));
      continue;
    }
    const dir = db.dir!;
    const summary: DirectoryListing = {
      entry,
      dir,
      pattern: db.pattern,
      recursive: db.recursive,
      watch: db.watch,
      replica: formatReplicaLocation(db.replica.spec),
      exists: true,
      count: 0,
    };
    try {
      const found = scanDirectory(dir, {
        pattern: db.pattern,
        recursive: db.recursive,
        onError: (path, error) => listing.errors.push(`${path}: ${errorText(error)}`),
      });
      for await (const path of found) {
        listing.databases.push({ ...(await describe(path, db, entry)), dir });
        summary.count++;
      }
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
      summary.exists = false;
    }
    listing.dirs.push(summary);
  }
  return listing;
}

async function describe(path: string, db: DatabaseConfig, entry: number): Promise<DatabaseListing> {
  const resolved = resolveDatabase(path, db);
  return {
    path,
    replica: formatReplicaLocation(resolved.replica),
    metaDir: resolved.metaDir,
    exists: await exists(path),
    entry,
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path); // stat only: never open a descriptor on a live database
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The text form: an aligned table, dir entries without databases noted as such. */
export function formatListing(listing: Listing): string {
  const rows: string[][] = [["PATH", "REPLICA", "META DIR"]];
  for (const db of listing.databases) {
    rows.push([db.exists ? db.path : `${db.path} (missing)`, db.replica, db.metaDir]);
  }
  for (const dir of listing.dirs) {
    if (dir.count > 0) continue;
    const why = dir.exists ? "no databases found" : "directory does not exist";
    rows.push([`${dir.dir}/${dir.pattern}`, dir.replica, `(${why})`]);
  }
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
  return rows
    .map((row) =>
      row.map((cell, column) => column < row.length - 1 ? cell.padEnd(widths[column]) : cell).join(
        "  ",
      )
    )
    .join("\n");
}

/**
 * Runs the command; exit status 1 when part of a directory could not be read (what was found
 * is still printed).
 */
export async function run(args: string[]): Promise<number> {
  const options = parseDatabasesArgs(args);
  const config = await loadCommandConfig(
    options.config === undefined ? {} : { config: options.config },
  );
  const listing = await listDatabases(config);
  console.log(options.json ? JSON.stringify(listing, null, 2) : formatListing(listing));
  for (const error of listing.errors) console.error(`sluice databases: cannot read ${error}`);
  return listing.errors.length > 0 ? 1 : 0;
}
