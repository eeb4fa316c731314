/**
 * The replication engine: one {@linkcode DB} per database (WAL → L0 LTX files in its meta
 * directory, checkpoints), its shipper ({@linkcode Replica}, L0 files → replica), the
 * {@linkcode Store} that drives many of them, the meta directory lock, and
 * {@linkcode attachDatabase}, the one way a process takes a database and its replica.
 *
 * Imports only the leaves (sqlite, ltx, replica, log, watch). Compaction sits above the engine
 * and is injected into the {@linkcode Store} as a factory.
 *
 * @module
 */

export * from "./db.ts";
export * from "./shipper.ts";
export * from "./store.ts";
export * from "./meta_lock.ts";
export * from "./attach.ts";
export * from "./work_queue.ts";
export { claimReplica, ReplicaInUseError, type ReplicaOwner } from "./_replica_marker.ts";
export {
  claimOwnership,
  type HeldLease,
  LEASE_RENEW_MS,
  LEASE_TTL_MS,
  leasedClient,
  LeaseLostError,
  type LeaseOptions,
  type LeaseRecord,
  ReplicaLeasedError,
} from "./_lease.ts";
/** What the sweep over parked databases compares, exported for its unit tests. */
export { type FileState, fileStateChanged, fileStateOf } from "./_park.ts";
/** The WAL position decisions of {@linkcode DB.sync}, exported for their unit tests. */
export {
  afterLastFrameCheck,
  decideAfterTruncate,
  decideSyncStart,
  type TruncateDecision,
  type TruncateObservation,
  type WALCursor,
  type WALObservation,
} from "./_wal_position.ts";
