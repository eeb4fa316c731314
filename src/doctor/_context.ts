/**
 * What the doctor's checks share: the replica, the probe location beside it, and the hooks a
 * backend adds to the generic checks.
 *
 * @module
 */

import type { LTXFileId, ReplicaClient, ReplicaSpec } from "../replica/mod.ts";
import type { Checklist } from "./_report.ts";

/** The state of one doctor run. */
export interface DoctorContext {
  /** The replica being checked (never written to). */
  readonly spec: ReplicaSpec;
  /** The same storage at the probe path `<replica path>/<probeName>`. */
  readonly probeSpec: ReplicaSpec;
  /** Client of {@linkcode DoctorContext.probeSpec}. */
  readonly probe: ReplicaClient;
  /** `.sluice-doctor-<random>`: unique per run, never an LTX level directory. */
  readonly probeName: string;
  /** The probe file (level 0 under the probe path). */
  readonly probeFile: LTXFileId;
  /** The probe file's bytes. */
  readonly probeBytes: Uint8Array;
  readonly checks: Checklist;
  /** Environment, for describing where credentials come from (names only, never values). */
  readonly env: Record<string, string>;
}

/**
 * Backend-specific checks around the generic probe (put, get, ranged get, list, delete). Each
 * hook records its own lines in `ctx.checks`; a backend without hooks gets the generic ones.
 */
export interface BackendChecks {
  /** Before the probe is written: credentials, container existence, directory creation. */
  before?(ctx: DoctorContext): Promise<void>;
  /** While the probe file exists: conditional writes, checksums, multipart, fsync, rename. */
  withProbe?(ctx: DoctorContext): Promise<void>;
  /** After the probe is deleted: clock skew, free space. */
  after?(ctx: DoctorContext): Promise<void>;
  /** Always, last: removes whatever the hooks created. Throws when something is left behind. */
  cleanup?(ctx: DoctorContext): Promise<void>;
  /**
   * Turns an error of the generic probe (put, get, list, delete) into a failure with the fix
   * for this backend; undefined keeps the error as it is.
   */
  explain?(err: unknown, ctx: DoctorContext): Error | undefined;
}
