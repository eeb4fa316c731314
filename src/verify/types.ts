/**
 * What `verifyReplica` reports.
 *
 * @module
 */

/** The kinds of damage a verification can find. Every kind fails the verification. */
export type ProblemKind =
  /** No file at all, or no file a restore can start from. */
  | "missing"
  /** The file cannot be read, is truncated, malformed, fails a checksum or lies about its range. */
  | "damaged"
  /** TXIDs missing between two files of one level. */
  | "gap"
  /** Two files of one level cover some TXIDs twice. */
  | "overlap"
  /** Two files of one level cover exactly the same TXIDs. */
  | "duplicate"
  /** A file does not continue its predecessor (rolling checksum or WAL position). */
  | "chain"
  /** A file written by another database (page size, WAL position or checksums do not belong). */
  | "foreign"
  /** The owner marker names another database, or cannot be read. */
  | "owner"
  /** TXIDs that files claim but no restore can reach. */
  | "unreachable"
  /** The test restore (`restore: true`) failed. */
  | "restore";

/** One thing found wrong. */
export interface Problem {
  kind: ProblemKind;
  /** The files concerned, as `L<level>/<min>-<max>.ltx`. */
  files: string[];
  /** First TXID affected, when the problem is about a TXID range. */
  fromTXID?: number;
  /** Last TXID affected (inclusive). */
  toTXID?: number;
  /** One line that names the files, the TXIDs and what to do. */
  message: string;
}

/** The point-in-time range a restore can reach. */
export interface RestorableRange {
  /** The oldest state restorable: the end of the oldest intact snapshot. */
  fromTXID: number;
  /** When that snapshot was created. */
  fromTime: Date;
  /** The newest state restorable. */
  toTXID: number;
  /** When the last file needed for it was created (a `--timestamp` after it restores it). */
  toTime: Date;
}

/** Per-level totals of the listing. */
export interface LevelSummary {
  level: number;
  files: number;
  bytes: number;
  /** Smallest minTXID of the level. */
  minTXID: number;
  /** Largest maxTXID of the level. */
  maxTXID: number;
  /** Files of the level that are unusable. */
  damaged: number;
}

/** The outcome of the test restore. */
export interface RestoreCheck {
  txid: number;
  bytes: number;
  /** Always "ok" in a report: a failed check is a {@linkcode Problem} of kind "restore". */
  integrity: "ok";
  durationMs: number;
}

/** Everything a verification found. */
export interface VerifyReport {
  /** The replica, without secrets. */
  location: string;
  levels: LevelSummary[];
  files: number;
  bytes: number;
  /** The page size of the replicated database (the most common one), when any file was read. */
  pageSize?: number;
  /** The database named by the owner marker; undefined when there is none (or no capability). */
  owner?: string;
  /** Undefined when nothing is restorable. */
  range?: RestorableRange;
  /** The newest TXID any file claims (0 for an empty replica). */
  latestTXID: number;
  restore?: RestoreCheck;
  /** What fails the verification, in the order found. */
  problems: Problem[];
  /** Things worth knowing that do not: a gap a coarser level covers, no owner marker. */
  notes: string[];
  /** True when nothing is damaged or missing. */
  ok: boolean;
  durationMs: number;
}
