/**
 * Per-database derivations shared by the CLI and the engine: the meta directory, the replica
 * location of a database found in a `dir` entry, and which entry a database path belongs to.
 *
 * @module
 */

import { basename, dirname, isAbsolute, join, relative, sep } from "node:path";
import { ConfigError } from "./error.ts";
import { cleanS3Path, type ReplicaSpec } from "./replica_url.ts";
import type { Config, DatabaseConfig } from "./types.ts";
import { isCandidateName, matchesPattern } from "./pattern.ts";
import { sftpWebDAVChildPath } from "./_sftp_webdav.ts";

/** Suffix of default meta directories: `<dir>/.<name>-sluice/`. */
export const META_DIR_SUFFIX = "-sluice";

/**
 * `dbPath` relative to `dir` with `/` separators, or undefined when it is not inside `dir`.
 */
export function relativeInside(dir: string, dbPath: string): string | undefined {
  const rel = relative(dir, dbPath);
  if (rel === "" || rel === ".." || rel.startsWith(`..${sep}`) || isAbsolute(rel)) return undefined;
  return rel.split(sep).join("/");
}

/**
 * The meta directory (local L0 files, the persisted cursor) of the database at `dbPath`:
 * `<dir of db>/.<name>-sluice` by default; `meta-path` itself for a `path` entry; for a `dir`
 * entry, `<meta-path>/<relative dir>/.<name>-sluice`, so every database gets its own.
 * @throws {ConfigError} when `dbPath` is not inside the entry's `dir`.
 */
export function metaDirFor(
  dbPath: string,
  db: Pick<DatabaseConfig, "dir" | "metaPath">,
): string {
  const name = `.${basename(dbPath)}${META_DIR_SUFFIX}`;
  if (db.metaPath === undefined) return join(dirname(dbPath), name);
  if (db.dir === undefined) return db.metaPath;
  const rel = relativeInside(db.dir, dbPath);
  if (rel === undefined) throw new ConfigError(`database ${dbPath} is not inside ${db.dir}`);
  return join(db.metaPath, dirname(rel), name);
}

/**
 * The replica location of the database at `dbPath`: the entry's own for a `path` entry; for a
 * `dir` entry, the configured location plus the database's path relative to `dir` (as
 * Litestream does), e.g. `s3://bucket/tenants` + `eu/a.db` → `s3://bucket/tenants/eu/a.db`.
 * @throws {ConfigError} when `dbPath` is not inside the entry's `dir`.
 */
export function replicaSpecFor(
  dbPath: string,
  db: Pick<DatabaseConfig, "dir" | "replica">,
): ReplicaSpec {
  const spec = db.replica.spec;
  if (db.dir === undefined) return { ...spec };
  const rel = relativeInside(db.dir, dbPath);
  if (rel === undefined) throw new ConfigError(`database ${dbPath} is not inside ${db.dir}`);
  if (spec.type === "file") return { ...spec, path: join(spec.path, rel) };
  if (spec.type === "sftp" || spec.type === "webdav") {
    return { ...spec, path: sftpWebDAVChildPath(spec, rel) };
  }
  return { ...spec, path: cleanS3Path(`${spec.path}/${rel}`) };
}

/** Whether a database at `dbPath` belongs to `db` (its path, or found by its dir scan). */
export function entryMatches(db: DatabaseConfig, dbPath: string): boolean {
  if (db.path !== undefined) return db.path === dbPath;
  if (db.dir === undefined) return false;
  const rel = relativeInside(db.dir, dbPath);
  if (rel === undefined) return false;
  const parts = rel.split("/");
  if (!db.recursive && parts.length > 1) return false;
  if (parts.some((part) => part.startsWith("."))) return false;
  return isCandidateName(parts[parts.length - 1]) && matchesPattern(rel, db.pattern);
}

/** One database with everything derived from its entry. */
export interface ResolvedDatabase {
  /** Absolute database path. */
  path: string;
  /** The entry it belongs to. */
  config: DatabaseConfig;
  /** {@linkcode metaDirFor} of it. */
  metaDir: string;
  /** {@linkcode replicaSpecFor} of it. */
  replica: ReplicaSpec;
}

/** Derives meta directory and replica location of `dbPath` under `db`. */
export function resolveDatabase(dbPath: string, db: DatabaseConfig): ResolvedDatabase {
  return {
    path: dbPath,
    config: db,
    metaDir: metaDirFor(dbPath, db),
    replica: replicaSpecFor(dbPath, db),
  };
}

/**
 * The configured database at absolute `dbPath` (a `path` entry, or a file a `dir` entry
 * would pick up; the file's header is not checked), or undefined.
 */
export function findDatabase(config: Config, dbPath: string): ResolvedDatabase | undefined {
  const exact = config.dbs.find((db) => db.path === dbPath);
  if (exact !== undefined) return resolveDatabase(dbPath, exact);
  const byDir = config.dbs.find((db) => entryMatches(db, dbPath));
  return byDir === undefined ? undefined : resolveDatabase(dbPath, byDir);
}
