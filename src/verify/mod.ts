/**
 * Proof that a replica is restorable, without waiting for a disaster and without changing it:
 * every file is read to its end through the LTX decoder (header, pages, trailer, checksums),
 * each level is checked for gaps, overlaps and duplicates, neighbours for the link between them
 * (rolling checksums, WAL position), the whole for one page size and one owner, and the intact
 * files for the point-in-time range a restore can reach. Optionally a real restore to a
 * temporary file with SQLite's `integrity_check`. Works on any {@linkcode ReplicaClient}.
 *
 * ```ts
 * const report = await verifyReplica(client, { restore: true });
 * if (!report.ok) for (const p of report.problems) console.error(p.message);
 * ```
 *
 * Imports ltx, replica, pipeline and restore.
 *
 * @module
 */

import { join } from "node:path";
import {
  type LTXFileInfo,
  mapConcurrently,
  type ReplicaClient,
  SNAPSHOT_LEVEL,
} from "../replica/mod.ts";
import { WORKER_THRESHOLD_BYTES } from "../pipeline/mod.ts";
import { restore } from "../restore/mod.ts";
import { checkChain } from "./_chain.ts";
import { checkOwner } from "./_owner.ts";
import { scanFile, type ScannedFile } from "./_scan.ts";
import type { LevelSummary, Problem, VerifyReport } from "./types.ts";

export type * from "./types.ts";

/** Listings taken at most when files vanish under the verification (a live replica). */
const MAX_LISTINGS = 3;

/** Which part of the work a progress report is about. */
export type VerifyPhase = "read" | "restore";

/** Options of {@linkcode verifyReplica}. */
export interface VerifyOptions {
  /**
   * The database the replica is expected to belong to (absolute path): the owner marker must
   * name it. Unset: the marker is only read and reported.
   */
  expectedDB?: string;
  /** Also restore the latest state to a temporary file and run `PRAGMA integrity_check`. */
  restore?: boolean;
  /** Directory for the test restore's temporary directory. Default: the system's ($TMPDIR). */
  tempDir?: string;
  /** Files read at once (latency of remote replicas). Default 4. */
  concurrency?: number;
  /** Called as bytes are read (phase "read") and as the test restore writes ("restore"). */
  onProgress?: (phase: VerifyPhase, done: number, total: number) => void;
  /** Stops the verification (and removes the test restore). */
  signal?: AbortSignal;
}

/**
 * Verifies the replica behind `client` and reports what it found. Damage is reported, not
 * thrown: `report.ok` is false and `report.problems` names the files and TXIDs.
 * @throws {ReplicaError} when the replica cannot be listed at all (unreachable, no bucket).
 * @throws the signal's reason when aborted.
 */
export async function verifyReplica(
  client: ReplicaClient,
  options: VerifyOptions = {},
): Promise<VerifyReport> {
  const started = performance.now();
  const { signal, onProgress } = options;
  // A live replica changes while it is read: compaction and retention delete files. A file
  // gone before it could be opened is no damage; the listing is taken again (files already
  // read are not read twice), a few times at most.
  const cache = new Map<string, ScannedFile>();
  const vanished: string[] = [];
  let scanned: ScannedFile[] = [];
  let total = 0;
  let done = 0;
  for (let attempt = 1;; attempt++) {
    const listed: LTXFileInfo[] = [];
    for (let level = 0; level <= SNAPSHOT_LEVEL; level++) {
      for await (const info of client.ltxFiles(level)) listed.push(info);
    }
    signal?.throwIfAborted();
    const key = (f: LTXFileInfo) => `${f.level}/${f.minTXID}/${f.maxTXID}/${f.size}`;
    const todo = listed.filter((f) => !cache.has(key(f)));
    total = done + todo.reduce((sum, f) => sum + f.size, 0);
    const onBytes = (n: number) => {
      done += n;
      onProgress?.("read", done, total);
    };
    // Small files several at a time (request latency); large ones one by one, each already
    // pipelined through the codec worker, so memory stays that of one decode.
    const scan = (info: LTXFileInfo) => scanFile(client, info, onBytes, signal);
    const large = (info: LTXFileInfo) => info.size >= WORKER_THRESHOLD_BYTES;
    const results = [
      ...await mapConcurrently(todo.filter((f) => !large(f)), options.concurrency ?? 4, scan),
      ...await mapConcurrently(todo.filter(large), 1, scan),
    ];
    for (const result of results) cache.set(key(result.info), result);
    const gone = results.filter((r) => r.vanished);
    scanned = listed.map((f) => cache.get(key(f))!).filter((r) => !r.vanished);
    if (gone.length === 0 || attempt === MAX_LISTINGS) {
      vanished.push(...gone.map((r) => r.name));
      break;
    }
    for (const r of gone) cache.delete(key(r.info));
  }
  scanned.sort((a, b) =>
    a.info.level - b.info.level || a.info.minTXID - b.info.minTXID ||
    a.info.maxTXID - b.info.maxTXID
  );

  const problems: Problem[] = [];
  const notes: string[] = [];
  for (const file of scanned) {
    if (file.error === undefined) continue;
    problems.push({
      kind: "damaged",
      files: [file.name],
      fromTXID: file.info.minTXID,
      toTXID: file.info.maxTXID,
      message: `${file.name} is damaged: ${file.error}`,
    });
  }
  const chain = checkChain(scanned);
  problems.push(...chain.problems);
  notes.push(...chain.notes);
  if (vanished.length > 0) {
    notes.push(
      `${vanished.length} file(s) were deleted while being verified (compaction or retention ` +
        `of a live replica): ${vanished.slice(0, 5).join(", ")}`,
    );
  }

  const owner = await checkOwner(client, options.expectedDB);
  if (owner.problem) problems.push(owner.problem);
  if (owner.note) notes.push(owner.note);

  const report: VerifyReport = {
    location: client.location,
    levels: summarize(scanned),
    files: scanned.length,
    bytes: scanned.reduce((sum, f) => sum + f.info.size, 0),
    latestTXID: chain.latestTXID,
    problems,
    notes,
    ok: false,
    durationMs: 0,
  };
  if (chain.pageSize !== undefined) report.pageSize = chain.pageSize;
  if (owner.owner !== undefined) report.owner = owner.owner;
  if (chain.range !== undefined) report.range = chain.range;

  if (options.restore && chain.range !== undefined) {
    const restoreStarted = performance.now();
    const dir = await Deno.makeTempDir({ dir: options.tempDir, prefix: "sluice-verify-" });
    try {
      const result = await restore(client, {
        outputPath: join(dir, "verify.db"),
        // The latest state when it is reachable (the plan a plain restore makes), else the
        // newest state the intact files reach.
        txid: chain.range.toTXID < chain.latestTXID ? chain.range.toTXID : undefined,
        integrityCheck: "full",
        onProgress: onProgress && ((d, t) => onProgress("restore", d, t)),
        signal,
      });
      report.restore = {
        txid: result.txid,
        bytes: result.bytes,
        integrity: "ok",
        durationMs: Math.round(performance.now() - restoreStarted),
      };
    } catch (err) {
      signal?.throwIfAborted();
      problems.push({
        kind: "restore",
        files: [],
        message: `the test restore failed: ${(err as Error).message}`,
      });
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  }
  report.ok = problems.length === 0;
  report.durationMs = Math.round(performance.now() - started);
  return report;
}

function summarize(files: readonly ScannedFile[]): LevelSummary[] {
  const levels = new Map<number, LevelSummary>();
  for (const { info, error } of files) {
    const level = levels.get(info.level) ??
      { level: info.level, files: 0, bytes: 0, minTXID: info.minTXID, maxTXID: 0, damaged: 0 };
    level.files++;
    level.bytes += info.size;
    level.minTXID = Math.min(level.minTXID, info.minTXID);
    level.maxTXID = Math.max(level.maxTXID, info.maxTXID);
    if (error !== undefined) level.damaged++;
    levels.set(info.level, level);
  }
  return [...levels.values()].sort((a, b) => a.level - b.level);
}
