/**
 * `restore --follow`: a read replica that stays up to date. The output is restored once, then
 * each new LTX file is applied to it as one SQLite transaction (`_apply.ts`), so that
 * applications reading it with ordinary SQLite see whole transactions only.
 *
 * What to apply next comes from one listing of level 0 starting at the TXID applied (on S3 one
 * request per interval, nothing else while nothing changes). When level 0 does not continue
 * the output (its files were compacted away meanwhile, or the follower was stopped for long),
 * every level is listed and the files that continue it are chosen as a restore plan would;
 * when nothing can continue it (the replica was reset: its newest TXID went backwards, the file
 * of the output's TXID changed, a gap, a rolling checksum that does not follow), the output is
 * restored again and the new content applied in place, as one transaction.
 *
 * @module
 */

import { dirname } from "node:path";
import {
  formatFilename,
  formatTXID,
  type Header,
  HEADER_FLAG_NO_CHECKSUM,
  LTXFormatError,
  pageChecksum,
} from "../ltx/mod.ts";
import { type Logger, silentLogger } from "../log/mod.ts";
import { mergeSources, openDecoder } from "../pipeline/mod.ts";
import {
  type LTXFileInfo,
  NotFoundError,
  type ReplicaClient,
  SNAPSHOT_LEVEL,
  syncDirectory,
} from "../replica/mod.ts";
import {
  isBetterCandidate,
  NoBackupError,
  openSized,
  restore,
  type RestoreResult,
} from "../restore/mod.ts";
import { LockedFile } from "../sqlite/mod.ts";
import { type FsWatcher, watchFs } from "../watch/mod.ts";
import {
  applyStage,
  ChecksumMismatchError,
  type OutputState,
  patchPageOne,
  recoverHotJournal,
  unpatchPageOne,
} from "./_apply.ts";
import {
  type Anchor,
  fileChecksum,
  type FollowRecord,
  readRecord,
  writeRecord,
} from "./_record.ts";
import { DatabaseFileStage, PageStage, type Stage } from "./_stage.ts";

/** Options of {@linkcode follow}. */
export interface FollowOptions {
  /** The database file kept up to date. Created by a first restore when missing. */
  outputPath: string;
  /** How often a replica without change events (S3) is listed. Default 1000 ms. */
  intervalMs?: number;
  /** Check run on each full restore (not on applied files). Default "quick". */
  integrityCheck?: "none" | "quick" | "full";
  /** Where progress and re-restores are reported. */
  logger?: Logger;
  /** Stops following; the application in progress is finished or rolled back first. */
  signal?: AbortSignal;
  /** Called after each applied transaction and each re-restore, with the TXID reached. */
  onApplied?: (txid: number) => void;
}

/** How the follower started. */
export interface FollowStart {
  /** True when the output existed and its record matched: no restore was needed. */
  resumed: boolean;
  /** The TXID the output holds. */
  txid: number;
}

/** The output cannot be followed into (exists without a record, page size changed, …). */
export class FollowError extends Error {
  /** Builds an error naming the output and the fix. */
  constructor(message: string) {
    super(message);
    this.name = "FollowError";
  }
}

/** Files applied in one transaction, at most this many bytes (at least one file). */
const BATCH_BYTES = 16 << 20;
/** Directory replicas are watched; a poll at this many intervals (at least 1 s) catches the rest. */
const DIRECTORY_POLL_INTERVALS = 5;
/**
 * Without an anchor (the output's TXID came from a compacted level, or its level-0 file is
 * gone), a reset replica cannot be noticed from the level-0 listing alone: every level is listed
 * once per this many intervals.
 */
const ANCHORLESS_CHECK_INTERVALS = 30;

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });

/**
 * Restores (or resumes) `options.outputPath` from `client` and applies new replica files until
 * `options.signal` aborts. `onStart` hears whether it resumed.
 * @throws {FollowError} when the output cannot be followed into.
 * @throws the restore's errors when the first restore fails.
 */
export async function follow(
  client: ReplicaClient,
  options: FollowOptions,
  onStart?: (start: FollowStart) => void,
): Promise<void> {
  const follower = new Follower(client, options);
  try {
    onStart?.(await follower.start());
    await follower.run();
  } finally {
    follower.close();
  }
}

class Follower {
  #client: ReplicaClient;
  #options: FollowOptions;
  #out: string;
  #log: Logger;
  #file: LockedFile | undefined;
  #state!: OutputState;
  #anchor: Anchor | undefined;
  #anchorLost = false;
  #restoredAt = new Date().toISOString();
  #watcher: FsWatcher | undefined;
  #wake: (() => void) | undefined;
  #woken = false;
  #emptyReported = false;
  #lastFullCheck = performance.now();

  constructor(client: ReplicaClient, options: FollowOptions) {
    this.#client = client;
    this.#options = options;
    this.#out = options.outputPath;
    this.#log = options.logger ?? silentLogger;
  }

  get #journal(): string {
    return `${this.#out}-journal`;
  }

  async start(): Promise<FollowStart> {
    if (!(await exists(this.#out))) {
      await this.#initialRestore();
      return { resumed: false, txid: this.#state.txid };
    }
    const record = await readRecord(this.#out);
    if (!record || record.states.length === 0) {
      throw new FollowError(
        `${this.#out} exists but was not written by restore --follow (no ${this.#out}` +
          `.sluice-follow record); remove it or follow into another path`,
      );
    }
    this.#file = this.#openOwned(this.#out);
    // A follower killed mid-application left a hot journal: SQLite rolls it back.
    if (await recoverHotJournal(this.#out)) {
      this.#log.warn("rolled back the application a stopped follower left unfinished", {
        path: this.#out,
      });
    }
    const pageSize = record.states[0].pageSize;
    const size = this.#file.size();
    const checksum = await fileChecksum(this.#file, pageSize);
    // The record holds for this replica only: another one's TXIDs mean nothing here.
    const sameReplica = record.replica === this.#client.location;
    const match = sameReplica
      ? record.states.find((s) => s.checksum === checksum && s.pageCount * pageSize === size)
      : undefined;
    this.#restoredAt = record.restoredAt;
    if (match) {
      this.#state = match;
      this.#anchor = match === record.states[0] ? record.anchor : undefined;
      if (record.states.length > 1) await this.#persist([match]);
      this.#log.info("resumed following", {
        path: this.#out,
        replica: this.#client.location,
        txid: formatTXID(match.txid),
      });
      return { resumed: true, txid: match.txid };
    }
    // Changed behind the follower's back: take the replica's content again, in place.
    const page = new Uint8Array(pageSize);
    await this.#file.readAt(page, 0);
    this.#state = {
      txid: 0,
      pageSize,
      pageCount: Math.floor(size / pageSize),
      counter: new DataView(page.buffer).getUint32(24),
      checksum,
      sourceChecksum: checksum,
      pageOneSource: record.states[0].pageOneSource,
    };
    await this.#reRestore(
      sameReplica
        ? `${this.#out} does not match its position record`
        : `${this.#out} followed ${record.replica} before`,
    );
    return { resumed: false, txid: this.#state.txid };
  }

  async #initialRestore(): Promise<void> {
    const tmp = `${this.#out}.sluice-follow-restore`;
    const result = await this.#restoreTo(tmp);
    const file = LockedFile.open(tmp);
    let state: OutputState;
    try {
      const page = new Uint8Array(result.pageSize);
      await file.readAt(page, 0);
      const counter = (new DataView(page.buffer).getUint32(24) + 1) >>> 0;
      const pageOneSource = patchPageOne(page, counter, result.commit);
      await file.writeAt(page, 0);
      await file.sync();
      const checksum = await fileChecksum(file, result.pageSize);
      state = {
        txid: result.txid,
        pageSize: result.pageSize,
        pageCount: result.commit,
        counter,
        checksum,
        sourceChecksum: checksum ^ pageChecksum(1, page) ^
          pageChecksum(1, unpatchPageOne(page, pageOneSource)),
        pageOneSource,
      };
    } finally {
      file.close();
    }
    this.#state = state;
    this.#anchor = anchorOf(result.files.at(-1));
    this.#restoredAt = new Date().toISOString();
    await this.#persist([state]);
    try {
      await Deno.link(tmp, this.#out);
    } catch (err) {
      if (err instanceof Deno.errors.AlreadyExists) {
        throw new FollowError(`${this.#out} appeared while restoring; follow into another path`);
      }
      throw err;
    }
    await Deno.remove(tmp);
    await syncDirectory(dirname(this.#out));
    this.#file = this.#openOwned(this.#out);
    this.#log.info("restored; following", {
      path: this.#out,
      replica: this.#client.location,
      txid: formatTXID(state.txid),
    });
  }

  /** Opens the output and takes the one-follower lock. @throws {FollowError} when taken. */
  #openOwned(path: string): LockedFile {
    const file = LockedFile.open(path);
    if (!file.tryLockOwner()) {
      file.close();
      throw new FollowError(`another follower is writing ${path}; stop it first`);
    }
    return file;
  }

  async #restoreTo(path: string): Promise<RestoreResult> {
    return await restore(this.#client, {
      outputPath: path,
      overwrite: true,
      integrityCheck: this.#options.integrityCheck ?? "quick",
      signal: this.#options.signal,
      onReplan: (err) =>
        this.#log.info("a planned file vanished (compaction or retention); planning again", {
          error: err.message,
        }),
    });
  }

  async #persist(states: OutputState[]): Promise<void> {
    const record: FollowRecord = {
      replica: this.#client.location,
      states,
      anchor: this.#anchor,
      restoredAt: this.#restoredAt,
    };
    await writeRecord(this.#out, record);
  }

  /** Follows until the signal aborts. */
  async run(): Promise<void> {
    const signal = this.#options.signal;
    const interval = this.#options.intervalMs ?? 1000;
    const local = this.#startWatching();
    const pollMs = local ? Math.max(DIRECTORY_POLL_INTERVALS * interval, 1000) : interval;
    let failures = 0;
    while (!signal?.aborted) {
      this.#woken = false;
      let progressed = false;
      try {
        progressed = await this.#step();
        failures = 0;
      } catch (err) {
        if (signal?.aborted) break;
        if (err instanceof NotFoundError) {
          // A listed file vanished before it was read: the next listing shows what replaced it.
          this.#log.debug("a replica file vanished; listing again", { error: err.message });
          await sleep(10, signal);
          continue;
        }
        failures++;
        const delay = Math.min(1000 * 2 ** (failures - 1), 10_000);
        this.#log.warn("follow step failed; retrying", {
          error: (err as Error).message,
          retryInMs: delay,
        });
        await sleep(delay, signal);
        continue;
      }
      if (progressed || this.#woken) continue;
      if (local && this.#watcher === undefined) this.#startWatching(); // its root was replaced
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, pollMs);
        function done() {
          clearTimeout(timer);
          signal?.removeEventListener("abort", done);
          resolve();
        }
        this.#wake = done;
        signal?.addEventListener("abort", done, { once: true });
      });
      this.#wake = undefined;
    }
  }

  /**
   * Watches a directory replica's levels; false when the replica is not local. A root that does
   * not exist (yet) is polled, and watched once it does.
   */
  #startWatching(): boolean {
    const path = this.#client.localPath?.({ level: 0, minTXID: 1, maxTXID: 1 });
    if (path === undefined) return false;
    const root = dirname(dirname(dirname(path)));
    try {
      this.#watcher = watchFs(root, { recursive: true });
    } catch (err) {
      this.#log.debug("cannot watch the replica directory (yet); polling it", {
        dir: root,
        error: (err as Error).message,
      });
      return true;
    }
    const watcher = this.#watcher;
    (async () => {
      try {
        for await (const _event of watcher) {
          this.#woken = true;
          this.#wake?.();
        }
      } catch (err) {
        this.#log.debug("replica directory watch stopped", { error: (err as Error).message });
      }
      if (this.#watcher === watcher) this.#watcher = undefined;
    })();
    return true;
  }

  close(): void {
    this.#watcher?.close();
    this.#file?.close();
  }

  /** One look at the replica; true when something was applied (more may be waiting). */
  async #step(): Promise<boolean> {
    const applied = this.#state.txid;
    const level0 = await Array.fromAsync(this.#client.ltxFiles(0, { seekTXID: applied }));
    const atApplied = level0.find((info) => info.maxTXID === applied);
    if (this.#anchor && atApplied) {
      // Name and size only: a directory replica sets the mtime (createdAt) just after the
      // rename, so a listing in between sees another time for the same file.
      if (atApplied.minTXID !== this.#anchor.minTXID || atApplied.size !== this.#anchor.size) {
        await this.#reRestore(
          `the replica's file ${
            formatFilename(atApplied.minTXID, atApplied.maxTXID)
          } is not the one applied (the replica was reset)`,
        );
        return true;
      }
    } else if (this.#anchor) {
      this.#anchorLost = true;
    } else if (atApplied) {
      this.#anchor = anchorOf(atApplied);
    }

    let plan = extend(level0, applied, false);
    if (plan.length === 0) {
      const newer = level0.some((info) => info.maxTXID > applied);
      const checkDue = this.#anchor === undefined &&
        performance.now() - this.#lastFullCheck >
          ANCHORLESS_CHECK_INTERVALS * (this.#options.intervalMs ?? 1000);
      if (!newer && !this.#anchorLost && !checkDue) return false;
      this.#lastFullCheck = performance.now();
      const all: LTXFileInfo[] = [];
      for (let level = 0; level <= SNAPSHOT_LEVEL; level++) {
        all.push(...await Array.fromAsync(this.#client.ltxFiles(level)));
      }
      this.#anchorLost = all.length === 0; // an emptied replica is looked at again each time
      this.#anchor = undefined;
      if (all.length === 0) {
        if (!this.#emptyReported) {
          this.#log.warn("the replica is empty; keeping the output as it is", {
            replica: this.#client.location,
          });
          this.#emptyReported = true;
        }
        return false;
      }
      this.#emptyReported = false;
      const newest = Math.max(...all.map((info) => info.maxTXID));
      if (newest < applied) {
        await this.#reRestore(
          `the replica's newest TXID ${formatTXID(newest)} is behind the output's ${
            formatTXID(applied)
          } (the replica was reset)`,
        );
        return true;
      }
      plan = extend(all, applied, true);
      if (plan.length === 0) {
        if (newest === applied) return false;
        await this.#reRestore(`no file on the replica continues TXID ${formatTXID(applied)}`);
        return true;
      }
    }
    await this.#applyFiles(plan);
    return true;
  }

  /** Decodes `plan`, stages its pages and applies them as one transaction. */
  async #applyFiles(plan: LTXFileInfo[]): Promise<void> {
    const client = this.#client;
    const signal = this.#options.signal;
    const names = plan.map((info) =>
      `${formatFilename(info.minTXID, info.maxTXID)} (level ${info.level} at ${client.location})`
    );
    const decoders = plan.map((info, i) =>
      openDecoder(openSized(client, info, names[i], { signal }), {
        name: names[i],
        size: info.size,
      })
    );
    let stage: Stage | undefined;
    try {
      const headers: Header[] = [];
      for (const [i, decoder] of decoders.entries()) {
        const header = await decoder.readHeader();
        if (header.minTXID !== plan[i].minTXID || header.maxTXID !== plan[i].maxTXID) {
          throw new LTXFormatError(`${names[i]}: the header's TXIDs are not the name's`);
        }
        headers.push(header);
      }
      const first = headers[0];
      if (
        hasChecksum(first) && first.minTXID === this.#state.txid + 1 &&
        (first.preApplyChecksum | FLAG) !== (this.#state.sourceChecksum | FLAG)
      ) {
        await Promise.all(decoders.map((d) => d.cancel().catch(() => {})));
        await this.#reRestore(
          `${names[0]}: its pre-apply checksum does not match the output (a new lineage)`,
        );
        return;
      }
      const merged = await mergeSources(decoders);
      const pageStage = new PageStage(
        merged.header.pageSize,
        merged.header.commit,
        `${this.#out}.sluice-follow-stage`,
      );
      stage = pageStage;
      for await (const page of merged.pages) await pageStage.add(page);
      const trailers = merged.trailers();
      const last = headers.length - 1;
      const expected = hasChecksum(headers[last]) ? trailers[last]?.postApplyChecksum : undefined;
      const anchor = plan[last].level === 0 ? anchorOf(plan[last]) : undefined;
      const txid = plan[last].maxTXID;
      this.#state = await applyStage(stage, {
        file: this.#file!,
        journalPath: this.#journal,
        state: this.#state,
        txid,
        expectSourceChecksum: expected,
        signal,
        record: async (before, after) => {
          this.#anchor = anchor;
          await this.#persist([after, before]);
        },
      });
      this.#anchor = anchor;
      this.#log.debug("applied", {
        txid: formatTXID(txid),
        files: plan.length,
        pages: stage.pgnos.length,
      });
      this.#options.onApplied?.(txid);
    } catch (err) {
      await Promise.all(decoders.map((d) => d.cancel().catch(() => {})));
      if (err instanceof ChecksumMismatchError) {
        await this.#reRestore(err.message);
        return;
      }
      throw err;
    } finally {
      await stage?.close();
    }
  }

  /** Restores the replica's latest state to a temp file and applies it in place. */
  async #reRestore(reason: string): Promise<void> {
    this.#log.warn("re-restoring the output", { path: this.#out, reason });
    const tmp = `${this.#out}.sluice-follow-restore`;
    let result: RestoreResult;
    try {
      result = await this.#restoreTo(tmp);
    } catch (err) {
      if (err instanceof NoBackupError) {
        this.#log.warn("the replica is empty; keeping the output as it is", {
          replica: this.#client.location,
        });
        this.#anchorLost = true; // look at the whole replica again next time
        return;
      }
      throw err;
    }
    const stage = await DatabaseFileStage.open(tmp, result.pageSize, result.commit);
    try {
      if (result.pageSize !== this.#state.pageSize) {
        throw new FollowError(
          `the replica's page size is now ${result.pageSize}, ${this.#out}'s is ` +
            `${this.#state.pageSize}: remove ${this.#out} and its .sluice-follow record and ` +
            `start again`,
        );
      }
      const anchor = anchorOf(result.files.at(-1));
      this.#state = await applyStage(stage, {
        file: this.#file!,
        journalPath: this.#journal,
        state: this.#state,
        txid: result.txid,
        signal: this.#options.signal,
        record: async (before, after) => {
          this.#anchor = anchor;
          this.#restoredAt = new Date().toISOString();
          await this.#persist([after, before]);
        },
      });
      this.#anchor = anchor;
    } finally {
      await stage.close();
      await Deno.remove(tmp).catch(() => {});
    }
    this.#log.warn("re-restored the output in place", {
      path: this.#out,
      txid: formatTXID(this.#state.txid),
    });
    this.#options.onApplied?.(this.#state.txid);
  }
}

const FLAG = 0x8000000000000000n;

function hasChecksum(header: Header): boolean {
  return (header.flags & HEADER_FLAG_NO_CHECKSUM) === 0;
}

function anchorOf(info: LTXFileInfo | undefined): Anchor | undefined {
  if (!info || info.level !== 0) return undefined;
  return {
    minTXID: info.minTXID,
    maxTXID: info.maxTXID,
    size: info.size,
    createdAt: info.createdAt.getTime(),
  };
}

/**
 * The files that continue `from`, in order, up to {@linkcode BATCH_BYTES}: at each step the
 * best candidate that starts at or before the next TXID and ends after the covered one
 * (restore's tie-breaks), a snapshot only when nothing smaller continues.
 */
function extend(files: LTXFileInfo[], from: number, anyLevel: boolean): LTXFileInfo[] {
  const plan: LTXFileInfo[] = [];
  let covered = from;
  let bytes = 0;
  while (plan.length === 0 || bytes < BATCH_BYTES) {
    let best: LTXFileInfo | undefined;
    for (const info of files) {
      if (info.minTXID > covered + 1 || info.maxTXID <= covered) continue;
      if (!anyLevel && info.minTXID !== covered + 1) continue;
      if (best === undefined) {
        best = info;
        continue;
      }
      const snapshotVsSmaller = (best.level === SNAPSHOT_LEVEL) !== (info.level === SNAPSHOT_LEVEL);
      if (snapshotVsSmaller ? best.level === SNAPSHOT_LEVEL : isBetterCandidate(best, info)) {
        best = info;
      }
    }
    if (best === undefined) break;
    plan.push(best);
    covered = best.maxTXID;
    bytes += best.size;
  }
  return plan;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}
