/**
 * The restore plan (FORMAT.md §5.1): which LTX files, in which order, rebuild the database at a
 * target TXID or time. The choice copies Litestream's `CalcRestorePlan` exactly, tie-breaks
 * included, so that sluice and Litestream restore the same bytes from the same replica.
 *
 * @module
 */

import { type LTXFileInfo, type ReplicaClient, SNAPSHOT_LEVEL } from "../replica/mod.ts";
import { formatTXID } from "../ltx/mod.ts";

/** Where a restore should stop. At most one of the two may be given; none means "latest". */
export interface RestoreTarget {
  /** Restore exactly up to this TXID (must be the end of some file). */
  txid?: number;
  /** Restore the state of the newest files created strictly before this time. */
  timestamp?: Date;
}

/** Base class of the errors that mean "this replica cannot produce the requested restore". */
export class RestorePlanError extends Error {
  /** Builds an error; the message names the replica location. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "RestorePlanError";
  }
}

/** The replica holds no LTX file at all (nothing was ever replicated there). */
export class NoBackupError extends RestorePlanError {
  /** The replica location that was searched. */
  readonly location: string;
  /** Builds the error for an empty replica. */
  constructor(location: string) {
    super(`no backup found at ${location}`);
    this.name = "NoBackupError";
    this.location = location;
  }
}

/**
 * The replica holds files but none from which a restore can start: there is no level-9
 * snapshot and no file starting at TXID 1 (retention removed it, or the replica is partial).
 */
export class NoSnapshotError extends RestorePlanError {
  /** The replica location that was searched. */
  readonly location: string;
  /** Builds the error; `oldestMinTXID` is the smallest minTXID found. */
  constructor(location: string, oldestMinTXID: number) {
    super(
      `no snapshot found at ${location}: the oldest file starts at TXID ${
        formatTXID(oldestMinTXID)
      }, ` +
        `so no restore can start at TXID 1; take a new snapshot (sluice snapshot) from the source database`,
    );
    this.name = "NoSnapshotError";
    this.location = location;
  }
}

/** The requested TXID or time cannot be reached with the files on the replica. */
export class TxNotAvailableError extends RestorePlanError {
  /** The replica location that was searched. */
  readonly location: string;
  /** Builds the error with a ready message (see {@linkcode describeUnavailable}). */
  constructor(location: string, message: string) {
    super(message);
    this.name = "TxNotAvailableError";
    this.location = location;
  }
}

/** The latest state cannot be restored because a TXID range is missing between two files. */
export class NonContiguousError extends RestorePlanError {
  /** The replica location that was searched. */
  readonly location: string;
  /** Builds the error naming the gap. */
  constructor(location: string, haveUpTo: number, level: number, nextMinTXID: number) {
    super(
      `non-contiguous ltx files at ${location}: have up to TXID ${
        formatTXID(haveUpTo)
      } but the next ` +
        `file at level ${level} starts at TXID ${
          formatTXID(nextMinTXID)
        }; restore an earlier point ` +
        `with --txid ${formatTXID(haveUpTo)}, or take a new snapshot from the source database`,
    );
    this.name = "NonContiguousError";
    this.location = location;
  }
}

/**
 * Computes the restore plan per FORMAT.md §5.1.
 *
 * The newest qualifying level-9 snapshot starts the plan; then, repeatedly, the best file from
 * any level 8…0 that extends the covered range is appended. "Best" is: larger maxTXID, then
 * smaller minTXID, then higher level, then earlier createdAt. Timestamp filters are strict
 * (`createdAt < timestamp`). With no target, a level whose next file starts beyond the covered
 * range is an error, because the latest state would silently be missed.
 *
 * @throws {NoBackupError} when the replica holds no file at all.
 * @throws {NoSnapshotError} when no plan can start at TXID 1.
 * @throws {TxNotAvailableError} when the target cannot be reached.
 * @throws {NonContiguousError} when, restoring the latest state, files are missing in between.
 * @throws {RangeError} when both a txid and a timestamp are given, or either is invalid.
 */
export async function calcRestorePlan(
  client: ReplicaClient,
  target: RestoreTarget = {},
): Promise<LTXFileInfo[]> {
  const { txid, timestamp } = validateTarget(target);
  const useMetadata = timestamp !== undefined;
  const qualifies = (info: LTXFileInfo): boolean =>
    (txid === undefined || info.maxTXID <= txid) &&
    (timestamp === undefined || info.createdAt.getTime() < timestamp.getTime());

  const plan: LTXFileInfo[] = [];
  let snapshot: LTXFileInfo | undefined;
  for await (const info of client.ltxFiles(SNAPSHOT_LEVEL, { useMetadata })) {
    if (qualifies(info)) snapshot = info;
  }
  if (snapshot) plan.push(snapshot);
  let currentMax = snapshot?.maxTXID ?? 0;

  if (txid === undefined || currentMax < txid) {
    const cursors: LevelCursor[] = [];
    for (let level = SNAPSHOT_LEVEL - 1; level >= 0; level--) {
      cursors.push(new LevelCursor(level, client.ltxFiles(level, { useMetadata })));
    }
    try {
      for (;;) {
        let best: LevelCursor | undefined;
        for (const cursor of cursors) {
          await cursor.refresh(currentMax, qualifies);
          if (cursor.candidate === undefined) continue;
          if (best === undefined || isBetterCandidate(best.candidate!, cursor.candidate)) {
            best = cursor;
          }
        }
        if (best === undefined) break;
        const chosen = best.candidate!;
        best.candidate = undefined;
        plan.push(chosen);
        currentMax = chosen.maxTXID;
        if (txid !== undefined && currentMax >= txid) break;
      }

      if (plan.length > 0 && txid === undefined && timestamp === undefined) {
        for (const cursor of cursors) {
          const next = await cursor.peek();
          if (next !== undefined && next.minTXID > currentMax + 1) {
            throw new NonContiguousError(client.location, currentMax, cursor.level, next.minTXID);
          }
        }
      }
    } finally {
      await Promise.all(cursors.map((cursor) => cursor.close()));
    }
  }

  if (plan.length === 0 || (txid !== undefined && currentMax < txid)) {
    throw await describeUnavailable(client, { txid, timestamp });
  }
  return plan;
}

/** Litestream's `restoreCandidateBetter`: is `next` a better pick than `current`? */
export function isBetterCandidate(current: LTXFileInfo, next: LTXFileInfo): boolean {
  if (next.maxTXID !== current.maxTXID) return next.maxTXID > current.maxTXID;
  if (next.minTXID !== current.minTXID) return next.minTXID < current.minTXID;
  if (next.level !== current.level) return next.level > current.level;
  return next.createdAt.getTime() < current.createdAt.getTime();
}

function validateTarget(target: RestoreTarget): RestoreTarget {
  const { txid, timestamp } = target;
  if (txid !== undefined && timestamp !== undefined) {
    throw new RangeError("cannot restore to both a TXID and a timestamp; pass only one");
  }
  if (txid !== undefined && (!Number.isSafeInteger(txid) || txid < 1)) {
    throw new RangeError(`invalid target TXID ${txid}: expected a positive safe integer`);
  }
  if (timestamp !== undefined && Number.isNaN(timestamp.getTime())) {
    throw new RangeError("invalid target timestamp");
  }
  return { txid, timestamp };
}

/**
 * Streams one level's listing. `candidate` holds the best eligible file seen for the current
 * covered range; `pending` the first file not yet evaluated (it starts beyond the range).
 */
class LevelCursor {
  readonly level: number;
  candidate: LTXFileInfo | undefined;
  #iterator: AsyncIterator<LTXFileInfo>;
  #pending: LTXFileInfo | undefined;
  #done = false;

  constructor(level: number, files: AsyncIterable<LTXFileInfo>) {
    this.level = level;
    this.#iterator = files[Symbol.asyncIterator]();
  }

  /** Evaluates every file that could extend `currentMax`, keeping the best eligible one. */
  async refresh(currentMax: number, qualifies: (info: LTXFileInfo) => boolean): Promise<void> {
    if (this.candidate !== undefined && this.candidate.maxTXID <= currentMax) {
      this.candidate = undefined;
    }
    for (;;) {
      const info = await this.peek();
      if (info === undefined || info.minTXID > currentMax + 1) return;
      this.#pending = undefined;
      if (info.maxTXID <= currentMax || !qualifies(info)) continue;
      if (this.candidate === undefined || isBetterCandidate(this.candidate, info)) {
        this.candidate = info;
      }
    }
  }

  /** The next unevaluated file, or undefined at the end of the level. */
  async peek(): Promise<LTXFileInfo | undefined> {
    if (this.#pending !== undefined || this.#done) return this.#pending;
    const result = await this.#iterator.next();
    if (result.done) {
      this.#done = true;
      return undefined;
    }
    this.#pending = result.value;
    return this.#pending;
  }

  async close(): Promise<void> {
    if (!this.#done) {
      this.#done = true;
      await this.#iterator.return?.();
    }
  }
}

/**
 * Builds the error for a target that no plan reaches, after one more look at the whole
 * replica to say what it does cover.
 */
async function describeUnavailable(
  client: ReplicaClient,
  target: RestoreTarget,
): Promise<RestorePlanError> {
  const useMetadata = target.timestamp !== undefined;
  let anyFile = false;
  let oldestMin = Infinity;
  let earliestRestorable = Infinity; // smallest maxTXID of a file that starts at TXID 1
  let latest = 0;
  let earliestCreated: Date | undefined;
  for (let level = 0; level <= SNAPSHOT_LEVEL; level++) {
    for await (const info of client.ltxFiles(level, { useMetadata })) {
      anyFile = true;
      oldestMin = Math.min(oldestMin, info.minTXID);
      latest = Math.max(latest, info.maxTXID);
      if (info.minTXID === 1) earliestRestorable = Math.min(earliestRestorable, info.maxTXID);
      if (
        info.minTXID === 1 &&
        (earliestCreated === undefined || info.createdAt.getTime() < earliestCreated.getTime())
      ) {
        earliestCreated = info.createdAt;
      }
    }
  }
  if (!anyFile) return new NoBackupError(client.location);
  if (earliestRestorable === Infinity) return new NoSnapshotError(client.location, oldestMin);

  const covers = `the replica covers TXID ${formatTXID(earliestRestorable)}…${formatTXID(latest)}`;
  if (target.txid !== undefined) {
    const hint = target.txid > latest
      ? "it is newer than anything replicated"
      : target.txid < earliestRestorable
      ? "it is older than the oldest snapshot still kept"
      : "only TXIDs at file boundaries that the finer levels still hold can be restored";
    return new TxNotAvailableError(
      client.location,
      `TXID ${formatTXID(target.txid)} is not available at ${client.location}; ${covers} (${hint})`,
    );
  }
  if (target.timestamp !== undefined) {
    return new TxNotAvailableError(
      client.location,
      `no restore point at ${client.location} before ${target.timestamp.toISOString()}; ` +
        `the oldest restorable file was created at ${earliestCreated!.toISOString()}; ${covers}`,
    );
  }
  return new TxNotAvailableError(
    client.location,
    `no restorable state at ${client.location}; ${covers}`,
  );
}
