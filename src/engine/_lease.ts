/**
 * The owner lease of an object-store replica: which replicator writes it, for how long.
 *
 * The directory marker (`_replica_marker.ts`) is created once and never expires, which is all a
 * local directory needs. On S3 and Azure the usual accident is another *process* of the same
 * database (the old and the new instance during a deploy, a copy of the container on a second
 * host), and a permanent marker cannot tell a live holder from a dead one. So the first
 * replicator writes `<replica>/sluice-lease.json` with a conditional create (`If-None-Match: *`),
 * renews it every `renewMs` with `If-Match` on its ETag (each renewal moves `expires` forward),
 * and releases it on a clean shutdown (or when its database is parked) by writing it once more
 * with `expires` set to now: the lease ends, but the object still names the database, so a
 * stopped replica is no more open to another database than a running one. Any other replicator
 * reads the lease and is refused while it is live:
 *
 * - the same database on the same host takes over at once (the meta directory lock already
 *   guarantees that no other live process of this host replicates it: the holder is gone);
 * - the same database from another host or process takes over once the lease has expired;
 * - another database never does (as with the marker: two databases in one replica restore to
 *   neither);
 * - `--takeover` takes over any lease; the previous holder's next renewal fails its `If-Match`,
 *   and from then on every write of that holder fails with {@linkcode LeaseLostError}.
 *
 * A store that accepts conditional headers but ignores them (some S3-compatible servers and
 * emulators) is detected once per bucket by the client's probe. There, sluice warns once and
 * falls back to the marker's semantics on the lease object: created once, naming the database,
 * never renewed or released; a simultaneous start of two replicators is not detected.
 *
 * @module
 */

import type { Logger } from "../log/mod.ts";
import {
  type LeaseStore,
  type OwnerMarker,
  type ReplicaClient,
  ReplicaError,
} from "../replica/mod.ts";
import { claimReplica, ReplicaInUseError } from "./_replica_marker.ts";

/** Default lifetime of a lease: how long a crashed holder on another host blocks a takeover. */
export const LEASE_TTL_MS = 5 * 60_000;
/** Default renewal period (each renewal is one conditional PUT). */
export const LEASE_RENEW_MS = 60_000;

/** What the lease object records. */
export interface LeaseRecord {
  /** Absolute path of the database that replicates here. */
  db: string;
  /** Host name of the holder. */
  host: string;
  /** Process ID of the holder. */
  pid: number;
  /** Random ID of this holder (a pid can repeat across hosts and restarts). */
  holder: string;
  /** When the holder first took the lease (RFC 3339). */
  since: string;
  /** When the lease lapses unless renewed (RFC 3339). */
  expires: string;
}

/** Options of {@linkcode claimOwnership}. */
export interface LeaseOptions {
  /** Take over the lease whoever holds it (`sluice replicate --takeover`). */
  takeover?: boolean;
  /** Lease lifetime. Default {@linkcode LEASE_TTL_MS}. */
  ttlMs?: number;
  /** Renewal period; must be well below the lifetime. Default {@linkcode LEASE_RENEW_MS}. */
  renewMs?: number;
  logger?: Logger;
  /** Who is asking; default this host and process (tests pose as other hosts). */
  identity?: { host: string; pid: number };
  /**
   * The replica's directory was created just now: it has no owner marker to read, so the
   * marker is created straight away (losing that race to another claimant still reads its).
   */
  markerAbsent?: boolean;
}

/** The replica is leased by another live replicator (or belongs to another database). */
export class ReplicaLeasedError extends ReplicaInUseError {
  /** The lease as read. */
  readonly lease: LeaseRecord;
  /** Builds the one-line refusal naming the holder and how to take over. */
  constructor(location: string, lease: LeaseRecord, dbPath: string, leasePath: string) {
    super(location, { db: lease.db, host: lease.host, since: lease.since }, dbPath, leasePath);
    const holder = `${lease.db} on ${lease.host} (pid ${lease.pid})`;
    this.message = lease.db === dbPath
      ? `replica ${location} is leased by ${holder} until ${lease.expires}: another sluice ` +
        `replicates this database; stop it, or start this one after the lease expires, or ` +
        `run with --takeover`
      : `replica ${location} belongs to database ${holder}, not ${dbPath}; give each database ` +
        `its own replica path, or run with --takeover if ${lease.db} is gone for good`;
    this.name = "ReplicaLeasedError";
    this.lease = lease;
  }
}

/** Another replicator took over the lease: this one must stop writing the replica. */
export class LeaseLostError extends ReplicaError {
  /** Builds an error naming the replica and the new holder when known. */
  constructor(location: string, holder: LeaseRecord | undefined) {
    super(
      `replica ${location}: the owner lease was taken over` +
        (holder ? ` by ${holder.db} on ${holder.host} (pid ${holder.pid})` : "") +
        `; this process no longer writes it (restart it with --takeover to take it back)`,
    );
    this.name = "LeaseLostError";
  }
}

/** A lease this process holds: renewed in the background until released. */
export interface HeldLease {
  /** `"lease"`: conditional writes enforced; `"marker"`: the fallback without expiry. */
  readonly mode: "lease" | "marker";
  /** Set once another replicator took the lease over. */
  readonly lost: LeaseLostError | undefined;
  /** Stops renewing and ends the lease (written as expired, If-Match). Idempotent. */
  release(): Promise<void>;
}

/** Buckets already warned about, so the warning is said once per process. */
const warned = new Set<string>();

/**
 * Claims the replica of `client` for the database at `dbPath`: the lease where the backend has
 * one, else the owner marker (directories), else nothing.
 * @throws {ReplicaLeasedError} | {@linkcode ReplicaInUseError} when another replicator or
 * database holds it.
 * @throws {ReplicaError} when the storage cannot be read or written.
 */
export async function claimOwnership(
  client: ReplicaClient,
  dbPath: string,
  options: LeaseOptions = {},
): Promise<HeldLease | undefined> {
  const store = client.lease?.();
  if (store === undefined) {
    await claimReplica(client, dbPath, undefined, { absent: options.markerAbsent });
    return undefined;
  }
  if (!(await store.enforcesConditions())) {
    const key = store.path.replace(/\/[^/]*$/, "");
    if (!warned.has(client.type + key)) {
      warned.add(client.type + key);
      options.logger?.warn(
        "the replica storage ignores conditional writes: two replicators starting at the same " +
          "moment cannot be told apart; falling back to a plain owner marker",
        { replica: client.location, lease: store.path },
      );
    }
    return await claimMarker(client.location, store, dbPath, options);
  }
  return await acquireLease(client.location, store, dbPath, options);
}

/**
 * Wraps `client` so that its writes fail once `lease` is lost and `close()` releases the lease
 * first. Reads and every optional capability pass through unchanged.
 */
export function leasedClient(client: ReplicaClient, lease: HeldLease): ReplicaClient {
  const guarded = new Set(["writeLTXFile", "copyLTXFile", "deleteLTXFiles", "deleteAll"]);
  return new Proxy(client, {
    get(target, property) {
      const value = Reflect.get(target, property, target);
      if (typeof value !== "function") return value;
      if (property === "close") {
        return async () => {
          try {
            await lease.release();
          } finally {
            await target.close();
          }
        };
      }
      if (typeof property === "string" && guarded.has(property)) {
        return (...args: unknown[]) => {
          if (lease.lost) return Promise.reject(lease.lost);
          return value.apply(target, args);
        };
      }
      return value.bind(target);
    },
  });
}

async function acquireLease(
  location: string,
  store: LeaseStore,
  dbPath: string,
  options: LeaseOptions,
): Promise<HeldLease> {
  const ttlMs = options.ttlMs ?? LEASE_TTL_MS;
  const renewMs = options.renewMs ?? LEASE_RENEW_MS;
  const identity = options.identity ?? { host: Deno.hostname(), pid: Deno.pid };
  const record: LeaseRecord = {
    db: dbPath,
    host: identity.host,
    pid: identity.pid,
    holder: crypto.randomUUID(),
    since: new Date().toISOString(),
    expires: "",
  };
  const text = (lifetimeMs = ttlMs) => {
    record.expires = new Date(Date.now() + lifetimeMs).toISOString();
    return JSON.stringify(record) + "\n";
  };
  for (let attempt = 0;; attempt++) {
    const current = await store.read();
    let etag: string | undefined;
    if (current === undefined) {
      etag = await store.create(text());
    } else {
      const holder = parseLease(current.text);
      if (!options.takeover && !mayTakeOver(holder, dbPath, identity.host)) {
        throw new ReplicaLeasedError(location, holder, dbPath, store.path);
      }
      etag = await store.replace(text(), current.etag);
      const sameProcess = holder.host === identity.host && holder.pid === identity.pid;
      if (etag !== undefined && !sameProcess) {
        options.logger?.info("took over the replica's owner lease", {
          replica: location,
          from: `${holder.db} on ${holder.host} (pid ${holder.pid})`,
          expired: Date.parse(holder.expires) <= Date.now(),
        });
      }
    }
    if (etag !== undefined) return new RenewedLease(location, store, etag, text, renewMs, options);
    // Another replicator wrote the lease between our read and our write: read it again.
    if (attempt >= 3) {
      throw new ReplicaError(`replica ${location}: the owner lease keeps changing; try again`);
    }
  }
}

/** The same database on this host, or an expired lease of the same database. */
function mayTakeOver(holder: LeaseRecord, dbPath: string, host: string): boolean {
  if (holder.db !== dbPath) return false;
  if (holder.host === host) return true;
  const expires = Date.parse(holder.expires);
  return !Number.isFinite(expires) || expires <= Date.now();
}

class RenewedLease implements HeldLease {
  readonly mode = "lease";
  lost: LeaseLostError | undefined;
  #etag: string;
  #timer: ReturnType<typeof setInterval> | undefined;
  #released = false;
  #renewing: Promise<void> | undefined;

  constructor(
    readonly location: string,
    readonly store: LeaseStore,
    etag: string,
    readonly text: (lifetimeMs?: number) => string,
    renewMs: number,
    readonly options: LeaseOptions,
  ) {
    this.#etag = etag;
    if (Number.isFinite(renewMs)) {
      const timer = setInterval(() => {
        this.#renewing ??= this.#renew().finally(() => this.#renewing = undefined);
      }, renewMs);
      // The lease never keeps the process alive: its holder does.
      Deno.unrefTimer(timer);
      this.#timer = timer;
    }
  }

  async #renew(): Promise<void> {
    if (this.#released || this.lost) return;
    try {
      const etag = await this.store.replace(this.text(), this.#etag);
      if (etag !== undefined) {
        this.#etag = etag;
        return;
      }
      const current = await this.store.read().catch(() => undefined);
      this.lost = new LeaseLostError(
        this.location,
        current === undefined ? undefined : parseLease(current.text),
      );
      clearInterval(this.#timer);
      this.options.logger?.error("lost the replica's owner lease", { error: this.lost.message });
    } catch (err) {
      // The storage is unreachable: writes fail too. Renewal goes on at the next tick.
      this.options.logger?.warn("cannot renew the replica's owner lease; will retry", {
        replica: this.location,
        error: (err as Error).message,
      });
    }
  }

  async release(): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    clearInterval(this.#timer);
    await this.#renewing;
    if (this.lost) return;
    try {
      await this.store.replace(this.text(0), this.#etag);
    } catch (err) {
      this.options.logger?.warn("cannot release the replica's owner lease; it expires by itself", {
        replica: this.location,
        error: (err as Error).message,
      });
    }
  }
}

/** The fallback: the lease object used as a plain owner marker (no expiry, no renewal). */
async function claimMarker(
  location: string,
  store: LeaseStore,
  dbPath: string,
  options: LeaseOptions,
): Promise<HeldLease> {
  const marker: OwnerMarker = {
    path: store.path,
    read: async () => (await store.read())?.text,
    createExclusive: async (text) => (await store.create(text)) !== undefined,
  };
  try {
    await claimReplica({ location } as ReplicaClient, dbPath, marker);
  } catch (err) {
    if (!(err instanceof ReplicaInUseError) || !options.takeover) throw err;
    const current = await store.read();
    const record = { db: dbPath, host: Deno.hostname(), since: new Date().toISOString() };
    const text = JSON.stringify(record) + "\n";
    if (current === undefined) await store.create(text);
    else await store.replace(text, current.etag);
  }
  return { mode: "marker", lost: undefined, release: () => Promise.resolve() };
}

/** A lease that cannot be parsed is treated as a live foreign one: refusing is safe. */
function parseLease(text: string): LeaseRecord {
  try {
    const value = JSON.parse(text) as Partial<LeaseRecord>;
    if (typeof value?.db === "string") {
      return {
        db: value.db,
        host: typeof value.host === "string" ? value.host : "an unknown host",
        pid: typeof value.pid === "number" ? value.pid : 0,
        holder: typeof value.holder === "string" ? value.holder : "",
        since: typeof value.since === "string" ? value.since : "",
        // A marker written in the fallback mode has no expiry: it counts as expired.
        expires: typeof value.expires === "string" ? value.expires : new Date(0).toISOString(),
      };
    }
  } catch { /* fall through */ }
  return {
    db: `(unreadable lease: ${JSON.stringify(text.slice(0, 80))})`,
    host: "an unknown host",
    pid: 0,
    holder: "",
    since: "",
    expires: new Date(8.64e15).toISOString(),
  };
}
