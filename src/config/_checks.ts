/**
 * Checks across `dbs` entries: two entries must never share a database, a meta directory or a
 * replica location (each would corrupt the other's replication state).
 *
 * @module
 */

import { ConfigError } from "./error.ts";
import { entryMatches, metaDirFor } from "./paths.ts";
import { formatReplicaLocation, replicaLocationKey, type ReplicaSpec } from "./replica_url.ts";
import type { DatabaseConfig } from "./types.ts";
import { sftpWebDAVStore } from "./_sftp_webdav.ts";

/**
 * Exact collisions are found through maps; only checks involving a `dir` entry compare pairs,
 * so a config with thousands of `path` entries stays fast.
 * @throws {ConfigError} at the later entry's line, naming the earlier entry.
 */
export function checkDatabases(dbs: readonly DatabaseConfig[], file: string): void {
  const name = (i: number) =>
    `dbs[${i}]${dbs[i].line === undefined ? "" : ` (line ${dbs[i].line})`}`;
  const fail = (i: number, message: string): never => {
    throw new ConfigError(`dbs[${i}]: ${message}`, { file, line: dbs[i].line });
  };
  const byPath = new Map<string, number>();
  const byMetaDir = new Map<string, number>();
  const byDirAndPattern = new Map<string, number>();
  const byDirMetaPath = new Map<string, number>();
  const byReplica = new Map<string, number>();
  const dirEntries: number[] = [];
  for (let i = 0; i < dbs.length; i++) {
    const db = dbs[i];
    if (db.path !== undefined) {
      const same = byPath.get(db.path);
      if (same !== undefined) fail(i, `database ${db.path} is already configured in ${name(same)}`);
      byPath.set(db.path, i);
      for (const j of dirEntries) {
        if (entryMatches(dbs[j], db.path)) {
          fail(i, `database ${db.path} is also found by the dir entry ${name(j)}`);
        }
      }
      const meta = metaDirFor(db.path, db);
      const sharing = byMetaDir.get(meta);
      if (sharing !== undefined) {
        fail(
          i,
          `meta directory ${meta} is also used by ${name(sharing)}; set a distinct meta-path`,
        );
      }
      byMetaDir.set(meta, i);
    } else {
      for (const [path, j] of byPath) {
        if (entryMatches(db, path)) {
          fail(i, `this dir entry also finds ${path}, already configured in ${name(j)}`);
        }
      }
      const key = `${db.dir}\0${db.pattern}`;
      const same = byDirAndPattern.get(key);
      if (same !== undefined) {
        fail(
          i,
          `dir ${db.dir} with pattern "${db.pattern}" is already configured in ${name(same)}`,
        );
      }
      byDirAndPattern.set(key, i);
      if (db.metaPath !== undefined) {
        const sharing = byDirMetaPath.get(db.metaPath);
        if (sharing !== undefined) {
          fail(
            i,
            `meta-path ${db.metaPath} is also the meta-path of ${
              name(sharing)
            }; databases with the same relative path would share a meta directory`,
          );
        }
        byDirMetaPath.set(db.metaPath, i);
      }
    }
    const location = replicaLocationKey(db.replica.spec);
    const sameReplica = byReplica.get(location);
    if (sameReplica !== undefined) {
      fail(
        i,
        `replica ${formatReplicaLocation(db.replica.spec)} is already the replica of ${
          name(sameReplica)
        }`,
      );
    }
    byReplica.set(location, i);
    // A dir entry's databases replicate below its location, so nesting may collide.
    const others = db.dir === undefined ? dirEntries : dbs.keys().take(i);
    for (const j of others) {
      const overlap = replicaOverlap(db, dbs[j], name(j));
      if (overlap !== undefined) fail(i, overlap);
    }
    if (db.dir !== undefined) dirEntries.push(i);
  }
}

/** Why two entries' replica locations may collide, or undefined. */
function replicaOverlap(
  db: DatabaseConfig,
  other: DatabaseConfig,
  otherName: string,
): string | undefined {
  const a = segments(db.replica.spec), b = segments(other.replica.spec);
  if (a.store !== b.store) return undefined;
  const mine = formatReplicaLocation(db.replica.spec);
  const theirs = formatReplicaLocation(other.replica.spec);
  const aInB = isPrefix(b.parts, a.parts), bInA = isPrefix(a.parts, b.parts);
  if (aInB && bInA) return `replica ${mine} is already the replica of ${otherName}`;
  // A dir entry's databases replicate below its location, so nesting may collide.
  if (aInB && other.dir !== undefined) {
    return `replica ${mine} is inside ${theirs}, where the dir entry ${otherName} replicates its databases`;
  }
  if (bInA && db.dir !== undefined) {
    return `this dir entry replicates its databases below ${mine}, which contains the replica ${theirs} of ${otherName}`;
  }
  return undefined;
}

function segments(spec: ReplicaSpec): { store: string; parts: string[] } {
  if (spec.type === "file") return { store: "file", parts: spec.path.split("/").filter(Boolean) };
  if (spec.type === "sftp" || spec.type === "webdav") {
    return { store: sftpWebDAVStore(spec), parts: spec.path.split("/").filter(Boolean) };
  }
  return {
    store: spec.type === "abs"
      ? `abs:${spec.endpoint ?? spec.accountName}:${spec.container}`
      : `s3:${spec.endpoint ?? "aws"}:${spec.bucket}`,
    parts: spec.path.split("/").filter(Boolean),
  };
}

function isPrefix(prefix: string[], parts: string[]): boolean {
  return prefix.length <= parts.length && prefix.every((part, i) => part === parts[i]);
}
