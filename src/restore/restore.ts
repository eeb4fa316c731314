/**
 * Restore: rebuild a SQLite database file from a replica at the latest state, a TXID or a
 * point in time (FORMAT.md §5).
 *
 * The plan is Litestream's (same files, same tie-breaks, see {@linkcode calcRestorePlan}). The
 * plan's files are streamed through LTX decoders that verify every file checksum, merged page
 * by page (latest file wins, pages past the final size dropped), and written in order to
 * `<out>.tmp`, which becomes `<out>` only once it is complete and synced. When every planned
 * file is on this machine (a directory replica) and they are large, a worker does all of that
 * byte work instead (`_direct.ts`: same checks, same result) and this thread only waits. Memory
 * use does not grow with the database size.
 *
 * @module
 */

import { dirname } from "node:path";
import {
  checkSequence,
  formatFilename,
  formatTXID,
  type Header,
  HEADER_FLAG_NO_CHECKSUM,
  HEADER_SIZE,
  LTXChecksumError,
  LTXFormatError,
  parseFilename,
  type Trailer,
} from "../ltx/mod.ts";
import {
  type LTXFileInfo,
  NotFoundError,
  type ReplicaClient,
  SNAPSHOT_LEVEL,
  syncDirectory,
} from "../replica/mod.ts";
import { mergeSources, openDecoder, WORKER_THRESHOLD_BYTES } from "../pipeline/mod.ts";
import { type DirectFile, restoreDirect } from "./_direct.ts";
import { calcRestorePlan } from "./_plan.ts";
import { openSized } from "./_stream.ts";
import { DatabaseWriter } from "./_writer.ts";
import { checkIntegrity, type IntegrityCheckMode } from "./_integrity.ts";

export {
  calcRestorePlan,
  isBetterCandidate,
  NoBackupError,
  NonContiguousError,
  NoSnapshotError,
  RestorePlanError,
  type RestoreTarget,
  TxNotAvailableError,
} from "./_plan.ts";
import { pathExists, removeIfExists } from "./_fs.ts";
export { IncompleteDatabaseError } from "./_writer.ts";
export { TruncatedFileError } from "./_truncated.ts";
export type { IntegrityCheckMode } from "./_integrity.ts";

/** Options of {@linkcode restore}. */
export interface RestoreOptions {
  /** Path of the database file to create. Its directory must exist. */
  outputPath: string;
  /** Restore exactly up to this TXID. Exclusive with `timestamp`. */
  txid?: number;
  /** Restore the newest state whose files were created strictly before this time. */
  timestamp?: Date;
  /** Run SQLite's `quick_check` or full `integrity_check` on the result. Default "none". */
  integrityCheck?: "none" | IntegrityCheckMode;
  /** Called as the output grows: bytes written so far and the final size. */
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
  /** Aborts the restore; the partial output is removed. */
  signal?: AbortSignal;
  /**
   * Replace an existing output (and delete its `-wal`, `-shm` and `-journal`, which would
   * otherwise be applied to the restored file). Default false: an existing output is refused.
   */
  overwrite?: boolean;
  /**
   * How many times a plan whose file vanished (compaction or retention removed it between the
   * listing and the read) is made again from a fresh listing. Default {@linkcode MAX_REPLANS}.
   */
  maxReplans?: number;
  /** Hears about each re-plan: the missing file's error and the attempt number (1, 2, …). */
  onReplan?: (error: NotFoundError, attempt: number) => void;
}

/** Default of {@linkcode RestoreOptions.maxReplans}: fresh plans after a planned file vanished. */
export const MAX_REPLANS = 3;

/** What {@linkcode restore} produced. */
export interface RestoreResult {
  /** The restored database file. */
  path: string;
  /** The TXID the database was restored to (the plan's last maxTXID). */
  txid: number;
  /** Database page size in bytes. */
  pageSize: number;
  /** Database size in pages. */
  commit: number;
  /** The plan: the replica files that were applied, in order. */
  files: LTXFileInfo[];
  /** Size of the restored file in bytes (`commit × pageSize`). */
  bytes: number;
  /** True when the files carried rolling checksums and they were verified. */
  checksumsVerified: boolean;
}

/** Base class of errors about the restore's output file. */
export class RestoreError extends Error {
  /** Builds an error; the message names the output path. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "RestoreError";
  }
}

/** The output file, or one of its `-wal`/`-shm`/`-journal` files, already exists. */
export class OutputExistsError extends RestoreError {
  /** The file that exists. */
  readonly path: string;
  /** Builds an error naming the existing file. */
  constructor(path: string, outputPath: string) {
    super(
      path === outputPath
        ? `output ${path} exists; pass -o to restore elsewhere or remove it`
        : `output ${outputPath} has a leftover ${path}, which SQLite would apply to the ` +
          `restored database; restore elsewhere or remove it`,
    );
    this.name = "OutputExistsError";
    this.path = path;
  }
}

/** SQLite's integrity check failed on the restored database; the file was moved aside. */
export class IntegrityCheckError extends RestoreError {
  /** Where the failed database was moved to. */
  readonly corruptPath: string;
  /** SQLite's complaints. */
  readonly problems: string[];
  /** Builds an error naming both paths and the first problems. */
  constructor(
    outputPath: string,
    corruptPath: string,
    mode: IntegrityCheckMode,
    problems: string[],
  ) {
    const shown = problems.slice(0, 3).join("; ") + (problems.length > 3 ? "; …" : "");
    super(
      `restored database ${outputPath} failed the ${mode} integrity check (${shown}); ` +
        `it was moved to ${corruptPath}`,
    );
    this.name = "IntegrityCheckError";
    this.corruptPath = corruptPath;
    this.problems = problems;
  }
}

/** The sidecar files SQLite may pair with a database; a stale one corrupts a new database. */
export const SIDECAR_SUFFIXES: readonly string[] = ["-wal", "-shm", "-journal"];

/**
 * Returns the first of `path`, `path-wal`, `path-shm`, `path-journal` that exists, or
 * undefined when none does.
 */
export async function findExistingOutput(path: string): Promise<string | undefined> {
  for (const candidate of [path, ...SIDECAR_SUFFIXES.map((suffix) => path + suffix)]) {
    if (await pathExists(candidate)) return candidate;
  }
  return undefined;
}

/**
 * Restores a database from `client` to `options.outputPath`.
 *
 * Nothing is left half-written: on any error `<out>.tmp` is removed and an existing `<out>`
 * is never touched (unless `overwrite`, and then only after the new file is complete). A
 * planned file that vanished before it was read (`NotFoundError`: compaction or retention on
 * the primary) makes a fresh plan, up to `maxReplans` times.
 *
 * @throws {NotFoundError} when planned files kept vanishing after `maxReplans` fresh plans.
 * @throws {OutputExistsError} when the output exists and `overwrite` is not set.
 * @throws {RestorePlanError} (and subclasses) when the replica cannot produce the target.
 * @throws {LTXError} naming the file when a replica file is malformed or fails a checksum.
 * @throws {IncompleteDatabaseError} when the merged pages do not form a whole database.
 * @throws {IntegrityCheckError} when the requested SQLite check fails.
 */
export async function restore(
  client: ReplicaClient,
  options: RestoreOptions,
): Promise<RestoreResult> {
  const { outputPath, signal } = options;
  if (!outputPath) throw new RangeError("restore needs an output path");
  signal?.throwIfAborted();
  if (!options.overwrite) {
    const existing = await findExistingOutput(outputPath);
    if (existing) throw new OutputExistsError(existing, outputPath);
  }

  // Compaction and retention on the primary may delete a planned file before it is read
  // (Litestream #1270, #1307): the files that replaced it are in a fresh listing.
  const maxReplans = options.maxReplans ?? MAX_REPLANS;
  let result: RestoreResult;
  for (let attempt = 0;; attempt++) {
    try {
      result = await restoreOnce(client, options);
      break;
    } catch (err) {
      const missing = findNotFound(err);
      if (missing === undefined || attempt >= maxReplans || signal?.aborted) throw err;
      options.onReplan?.(missing, attempt + 1);
    }
  }

  const mode = options.integrityCheck ?? "none";
  if (mode !== "none") {
    const problems = await checkIntegrity(outputPath, mode);
    if (problems.length > 0) {
      const corruptPath = await moveAside(outputPath);
      throw new IntegrityCheckError(outputPath, corruptPath, mode, problems);
    }
  }
  return result;
}

/** The {@linkcode NotFoundError} behind `err` (itself or a cause), if any. */
function findNotFound(err: unknown): NotFoundError | undefined {
  for (let e = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if (e instanceof NotFoundError) return e;
  }
  return undefined;
}

/** One plan, written to `<out>.tmp` and installed; removes the temp file on any error. */
async function restoreOnce(
  client: ReplicaClient,
  options: RestoreOptions,
): Promise<RestoreResult> {
  const { outputPath, signal } = options;
  const plan = await calcRestorePlan(client, { txid: options.txid, timestamp: options.timestamp });
  const names = plan.map((info) => describeFile(client, info));
  plan.forEach((info, i) => checkPlannedFile(info, names[i]));

  const tmpPath = `${outputPath}.tmp`;
  const local = localFiles(client, plan, names);
  let file: Deno.FsFile | undefined;
  const create = async () => {
    // A leftover temp file (or a symlink planted there) is replaced, never written through.
    await removeIfExists(tmpPath);
    file = await Deno.open(tmpPath, { write: true, createNew: true });
    return file;
  };
  let result: RestoreResult;
  try {
    const written = local
      ? await writeDirect(local, tmpPath, create, plan, names, options)
      : await writeStreamed(client, create, plan, names, options);
    const { headers, trailers, checksummed } = written;
    if (checksummed) verifyRollingChecksums(headers, trailers, names, written.databaseChecksum);

    await file!.sync();
    file!.close();
    file = undefined;
    signal?.throwIfAborted();
    await install(tmpPath, outputPath, options.overwrite ?? false);
    await syncDirectory(dirname(outputPath));
    result = {
      path: outputPath,
      txid: plan[plan.length - 1].maxTXID,
      pageSize: written.pageSize,
      commit: written.commit,
      files: plan,
      bytes: written.bytes,
      checksumsVerified: checksummed,
    };
  } catch (err) {
    try {
      file?.close();
    } catch { /* already closed */ }
    await removeIfExists(tmpPath).catch(() => {});
    throw err;
  }
  return result;
}

/** What writing the planned files into the temp file produced. */
interface Written {
  headers: Header[];
  trailers: Trailer[];
  /** Whether some file carries rolling checksums (then `databaseChecksum` is the result's). */
  checksummed: boolean;
  databaseChecksum: bigint | undefined;
  pageSize: number;
  commit: number;
  bytes: number;
}

/**
 * The streaming path: each planned file is a byte stream decoded through `openDecoder` (a codec
 * worker for large files while this thread reads and writes), merged, and written in order.
 */
async function writeStreamed(
  client: ReplicaClient,
  create: () => Promise<Deno.FsFile>,
  plan: LTXFileInfo[],
  names: string[],
  options: RestoreOptions,
): Promise<Written> {
  const { signal } = options;
  const decoders = plan.map((info, i) =>
    openDecoder(openSized(client, info, names[i], { signal }), { name: names[i], size: info.size })
  );
  let writer: DatabaseWriter | undefined;
  try {
    const headers: Header[] = [];
    for (const [i, decoder] of decoders.entries()) {
      headers.push(checkHeader(await decoder.readHeader(), plan[i], names[i]));
    }
    const checksummed = headers.some((h) => (h.flags & HEADER_FLAG_NO_CHECKSUM) === 0);
    const merged = await mergeSources(decoders);
    const { pageSize, commit } = merged.header;

    writer = new DatabaseWriter(await create(), {
      pageSize,
      commit,
      checksum: checksummed,
      onProgress: options.onProgress,
      source: `restore from ${client.location}`,
    });
    for await (const page of merged.pages) {
      signal?.throwIfAborted();
      await writer.write(page);
    }
    const databaseChecksum = await writer.finish();
    const trailers = merged.trailers();
    if (trailers.length !== plan.length || trailers.some((t) => t === undefined)) {
      throw new LTXFormatError(
        `restore from ${client.location}: not every plan file was read to its end`,
      );
    }
    return {
      headers,
      trailers,
      checksummed,
      databaseChecksum,
      pageSize,
      commit,
      bytes: writer.totalBytes,
    };
  } catch (err) {
    await Promise.all(decoders.map((decoder) => decoder.cancel().catch(() => {})));
    await writer?.settle().catch(() => {});
    throw err;
  }
}

/**
 * The direct path (`_direct.ts`): a worker reads the local files, decodes, verifies and writes
 * the temp file itself; this thread checks the headers as they arrive and waits.
 */
async function writeDirect(
  files: DirectFile[],
  tmpPath: string,
  create: () => Promise<Deno.FsFile>,
  plan: LTXFileInfo[],
  names: string[],
  options: RestoreOptions,
): Promise<Written> {
  const { dev, ino } = await (await create()).stat();
  if (dev === null || ino === null) throw new Error(`${tmpPath}: no device and inode to check`);
  let headers: Header[] = [];
  let total = 0;
  const done = await restoreDirect(files, { path: tmpPath, dev, ino }, {
    signal: options.signal,
    onHeaders(received) {
      headers = received.map((header, i) => checkHeader(header, plan[i], names[i]));
      checkSequence(headers, names);
      const last = headers[headers.length - 1];
      total = last.commit * last.pageSize;
    },
    onProgress: options.onProgress && ((bytes) => options.onProgress!(bytes, total)),
  });
  const last = headers[headers.length - 1];
  if (done.trailers.length !== plan.length || done.trailers.some((t) => t === undefined)) {
    throw new LTXFormatError(`restore: not every plan file was read to its end`);
  }
  return {
    headers,
    trailers: done.trailers,
    checksummed: headers.some((h) => (h.flags & HEADER_FLAG_NO_CHECKSUM) === 0),
    databaseChecksum: done.databaseChecksum,
    pageSize: last.pageSize,
    commit: last.commit,
    bytes: done.bytes,
  };
}

/**
 * The planned files as paths on this machine, when the direct path applies: every file is
 * local and stored as is, and together they are large enough to be worth a worker's start-up
 * (`SLUICE_PIPELINE=worker` takes it for any size, `=thread` never).
 */
function localFiles(
  client: ReplicaClient,
  plan: LTXFileInfo[],
  names: string[],
): DirectFile[] | undefined {
  const where = placementFromEnv();
  if (where === "thread" || client.localPath === undefined || client.contentTransformed) {
    return undefined;
  }
  // The worker checks the output's inode, which Windows does not report.
  if (Deno.build.os === "windows") return undefined;
  const total = plan.reduce((sum, info) => sum + info.size, 0);
  if (where !== "worker" && total < WORKER_THRESHOLD_BYTES) return undefined;
  const files: DirectFile[] = [];
  for (const [i, info] of plan.entries()) {
    const path = client.localPath(info);
    if (path === undefined) return undefined;
    files.push({ path, name: names[i], size: info.size });
  }
  return files;
}

/** `SLUICE_PIPELINE` (see src/pipeline's `openDecoder`): "worker", "thread" or "auto". */
function placementFromEnv(): string {
  try {
    return Deno.env.get("SLUICE_PIPELINE") ?? "auto";
  } catch {
    return "auto";
  }
}

/** A name for a replica file in messages: `<min>-<max>.ltx (level N at <location>)`. */
function describeFile(client: ReplicaClient, info: LTXFileInfo): string {
  return `${
    formatFilename(info.minTXID, info.maxTXID)
  } (level ${info.level} at ${client.location})`;
}

/**
 * Defends against listings that would not name a real LTX file: the identity must round-trip
 * through the strict file name form, and the file must be able to hold a header.
 */
function checkPlannedFile(info: LTXFileInfo, name: string): void {
  const parsed = Number.isSafeInteger(info.minTXID) && Number.isSafeInteger(info.maxTXID)
    ? parseFilename(formatFilename(info.minTXID, info.maxTXID))
    : null;
  if (
    parsed === null || parsed.minTXID !== info.minTXID || parsed.maxTXID !== info.maxTXID ||
    !Number.isInteger(info.level) || info.level < 0 || info.level > SNAPSHOT_LEVEL
  ) {
    throw new LTXFormatError(
      `${name}: not a valid LTX file identity; the replica listing is damaged`,
    );
  }
  if (info.size < HEADER_SIZE) {
    throw new LTXFormatError(
      `${name}: ${info.size} bytes is smaller than an LTX header (${HEADER_SIZE} bytes); ` +
        `the file is truncated, remove it from the replica or take a new snapshot`,
    );
  }
}

/** The header must describe the TXID range the file's name promises. */
function checkHeader(header: Header, info: LTXFileInfo, name: string): Header {
  if (header.minTXID !== info.minTXID || header.maxTXID !== info.maxTXID) {
    throw new LTXFormatError(
      `${name}: the header covers TXID ${formatTXID(header.minTXID)}-${
        formatTXID(header.maxTXID)
      }, ` +
        `not the range its name says; the replica is damaged`,
    );
  }
  return header;
}

/**
 * For files that carry rolling checksums (FORMAT.md §1.9): each incremental must start where the
 * previous file ended, and the restored database must match the last file's post-apply value.
 * Files written with NoChecksum (all of Litestream's and sluice's) have nothing to verify.
 */
function verifyRollingChecksums(
  headers: Header[],
  trailers: Trailer[],
  names: string[],
  databaseChecksum: bigint | undefined,
): void {
  const hasChecksum = (h: Header) => (h.flags & HEADER_FLAG_NO_CHECKSUM) === 0;
  for (let i = 1; i < headers.length; i++) {
    const previous = headers[i - 1];
    const current = headers[i];
    // Only an exactly adjacent pair shares a checksum: an overlapping file starts earlier.
    if (
      hasChecksum(previous) && hasChecksum(current) && current.minTXID !== 1 &&
      current.minTXID === previous.maxTXID + 1 &&
      current.preApplyChecksum !== trailers[i - 1].postApplyChecksum
    ) {
      throw new LTXChecksumError(
        `${names[i]}: pre-apply checksum ${hex64(current.preApplyChecksum)} does not match the ` +
          `post-apply checksum ${hex64(trailers[i - 1].postApplyChecksum)} of ${names[i - 1]}; ` +
          `the files do not belong to the same database history`,
      );
    }
  }
  const last = headers.length - 1;
  if (hasChecksum(headers[last]) && databaseChecksum !== trailers[last].postApplyChecksum) {
    throw new LTXChecksumError(
      `${names[last]}: the restored database's checksum ${hex64(databaseChecksum ?? 0n)} does ` +
        `not match the file's post-apply checksum ${hex64(trailers[last].postApplyChecksum)}; ` +
        `the replica is damaged`,
    );
  }
}

/**
 * Moves the finished temp file to the output. Without `overwrite` a hard link makes the step
 * atomic and never replaces a file that appeared meanwhile.
 */
async function install(tmpPath: string, outputPath: string, overwrite: boolean): Promise<void> {
  if (overwrite) {
    for (const suffix of SIDECAR_SUFFIXES) await removeIfExists(outputPath + suffix);
    await Deno.rename(tmpPath, outputPath);
    return;
  }
  try {
    await Deno.link(tmpPath, outputPath);
  } catch (err) {
    if (err instanceof Deno.errors.AlreadyExists) {
      throw new OutputExistsError(outputPath, outputPath);
    }
    // Filesystems without hard links: check, then rename (a tiny race, as in Litestream).
    if (await pathExists(outputPath)) throw new OutputExistsError(outputPath, outputPath);
    await Deno.rename(tmpPath, outputPath);
    return;
  }
  await Deno.remove(tmpPath);
}

/** Renames a database that failed its check to `<out>.corrupt` (or `.corrupt.N`), never clobbering. */
async function moveAside(outputPath: string): Promise<string> {
  for (let n = 0;; n++) {
    const target = n === 0 ? `${outputPath}.corrupt` : `${outputPath}.corrupt.${n}`;
    if (await pathExists(target)) continue;
    await Deno.rename(outputPath, target);
    return target;
  }
}

function hex64(value: bigint): string {
  return value.toString(16).padStart(16, "0");
}
