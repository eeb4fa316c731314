/**
 * `GET /healthz`: one answer for a load balancer, a Kubernetes probe or a monitor, computed from
 * the status rows the daemon already keeps (one pass, no I/O): 200 when every database is
 * healthy, 503 naming the unhealthy ones (the first {@linkcode HEALTH_LIST_LIMIT}, and how many
 * there are, since a process may hold 100,000 tenants).
 *
 * A database is unhealthy when
 * - its replication lag (age of the oldest change not on the replica) is above `maxLag`;
 * - changes are pending and nothing was uploaded for `maxUploadAge`;
 * - its syncs fail or stall (state "failing"), or it cannot be opened at all.
 *
 * A parked database is healthy when nothing of it is pending.
 *
 * @module
 */

import { DEFAULTS, type HealthConfig } from "../config/mod.ts";
import type { DatabaseStatus } from "../engine/mod.ts";

/** How many unhealthy databases a 503 names at most. */
export const HEALTH_LIST_LIMIT = 20;

/** One unhealthy database. */
export interface UnhealthyDatabase {
  path: string;
  /** Why, in a few words with the figures (`lag 75.2s > 60s`). */
  reason: string;
}

/** The `/healthz` document. */
export interface HealthReport {
  /** "ok" or "unhealthy". */
  status: "ok" | "unhealthy";
  /** Databases considered (open, parked, and those that cannot be opened). */
  databases: number;
  /** How many are unhealthy. */
  unhealthy: number;
  /** The first {@linkcode HEALTH_LIST_LIMIT} unhealthy databases. */
  failing: UnhealthyDatabase[];
}

/** A database the daemon wants to replicate but cannot open (retried later, or refused). */
export interface UnopenedDatabase {
  path: string;
  /** Why, when known. */
  reason?: string;
}

/**
 * Health from `rows` (a `Store.status()` snapshot) and the databases that cannot be opened.
 * `limits` default to {@linkcode DEFAULTS}.
 */
export function checkHealth(
  rows: Iterable<DatabaseStatus>,
  unopened: Iterable<UnopenedDatabase> = [],
  limits: Partial<HealthConfig> = {},
  now: number = Date.now(),
): HealthReport {
  const maxLag = limits.maxLag ?? DEFAULTS.healthMaxLag;
  const maxUploadAge = limits.maxUploadAge ?? DEFAULTS.healthMaxUploadAge;
  const failing: UnhealthyDatabase[] = [];
  let databases = 0;
  let unhealthy = 0;
  const add = (path: string, reason: string) => {
    unhealthy++;
    if (failing.length < HEALTH_LIST_LIMIT) failing.push({ path, reason });
  };
  for (const row of rows) {
    databases++;
    const reason = unhealthyReason(row, maxLag, maxUploadAge, now);
    if (reason !== undefined) add(row.path, reason);
  }
  for (const db of unopened) {
    databases++;
    add(db.path, `cannot be opened${db.reason ? `: ${db.reason.slice(0, 200)}` : ""}`);
  }
  return { status: unhealthy === 0 ? "ok" : "unhealthy", databases, unhealthy, failing };
}

function unhealthyReason(
  row: DatabaseStatus,
  maxLag: number,
  maxUploadAge: number,
  now: number,
): string | undefined {
  const lag = row.lagSeconds * 1000;
  if (lag > maxLag) return `lag ${seconds(lag)} > ${seconds(maxLag)}`;
  const pending = row.replicaTXID === null
    ? row.localTXID !== "0000000000000000"
    : row.localTXID > row.replicaTXID; // both 16 lowercase hex digits
  if (pending) {
    // The shipper's stats ride along in `stats` (typed as the counters metrics read).
    const at = (row.stats as { lastUploadAt?: Date | string } | undefined)?.lastUploadAt;
    const last = at === undefined ? undefined : new Date(at).getTime();
    const age = last === undefined ? lag : now - last;
    if (age > maxUploadAge) {
      return `changes pending, ${last === undefined ? "nothing uploaded" : "last upload"} ${
        seconds(age)
      } ago > ${seconds(maxUploadAge)}`;
    }
  }
  if (row.state === "failing") {
    if (row.stalledSeconds > 0) return `stalled for ${seconds(row.stalledSeconds * 1000)}`;
    return `failing${row.lastError ? `: ${row.lastError.slice(0, 200)}` : ""}`;
  }
  return undefined;
}

function seconds(ms: number): string {
  return `${Math.round(ms / 100) / 10}s`;
}
