/**
 * The position record next to the output (`<out>.sluice-follow`, JSON): the TXID applied and
 * the output's checksum after it, written atomically before each commit point with the state
 * before as well, so that a follower that stops at any moment finds the one that matches the
 * file. Trusted only after the output's checksum is recomputed and found equal.
 *
 * @module
 */

import { dirname } from "node:path";
import { lockPageNumber, pageChecksum } from "../ltx/mod.ts";
import { syncDirectory } from "../replica/mod.ts";
import type { LockedFile } from "../sqlite/mod.ts";
import type { OutputState } from "./_apply.ts";

/** Suffix of the position record. */
export const RECORD_SUFFIX = ".sluice-follow";

/** The replica file the output's TXID came from, while it is still at level 0. */
export interface Anchor {
  minTXID: number;
  maxTXID: number;
  size: number;
  /** ms since the epoch. */
  createdAt: number;
}

/** What the record holds. */
export interface FollowRecord {
  /** The replica followed (`ReplicaClient.location`). */
  replica: string;
  /** The state the output is in, or the one before it when the last commit did not happen. */
  states: OutputState[];
  /** The level-0 file of the newest TXID, to notice a replica that was reset under us. */
  anchor?: Anchor;
  /** When the output was last restored in full (the start, or a re-restore). */
  restoredAt: string;
}

interface StoredState {
  txid: number;
  pageSize: number;
  pageCount: number;
  counter: number;
  checksum: string;
  sourceChecksum: string;
  pageOneSource: string;
}

function toStored(state: OutputState): StoredState {
  return {
    txid: state.txid,
    pageSize: state.pageSize,
    pageCount: state.pageCount,
    counter: state.counter,
    checksum: state.checksum.toString(16),
    sourceChecksum: state.sourceChecksum.toString(16),
    pageOneSource: [...state.pageOneSource].map((b) => b.toString(16).padStart(2, "0")).join(""),
  };
}

function fromStored(stored: StoredState): OutputState {
  const bytes = stored.pageOneSource.match(/../g) ?? [];
  return {
    txid: stored.txid,
    pageSize: stored.pageSize,
    pageCount: stored.pageCount,
    counter: stored.counter,
    checksum: BigInt(`0x${stored.checksum}`),
    sourceChecksum: BigInt(`0x${stored.sourceChecksum}`),
    pageOneSource: Uint8Array.from(bytes, (b) => parseInt(b, 16)),
  };
}

/** Writes the record atomically (temp file, fsync, rename, directory fsync). */
export async function writeRecord(outputPath: string, record: FollowRecord): Promise<void> {
  const path = outputPath + RECORD_SUFFIX;
  const tmp = `${path}.tmp`;
  const text = JSON.stringify({
    version: 1,
    replica: record.replica,
    states: record.states.map(toStored),
    anchor: record.anchor,
    restoredAt: record.restoredAt,
  });
  const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
  try {
    const bytes = new TextEncoder().encode(text + "\n");
    let done = 0;
    while (done < bytes.length) done += await file.write(bytes.subarray(done));
    await file.sync();
  } finally {
    file.close();
  }
  await Deno.rename(tmp, path);
  await syncDirectory(dirname(path));
}

/** Reads the record; undefined when there is none or it cannot be parsed. */
export async function readRecord(outputPath: string): Promise<FollowRecord | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(outputPath + RECORD_SUFFIX);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw err;
  }
  try {
    const parsed = JSON.parse(text);
    if (parsed?.version !== 1 || !Array.isArray(parsed.states)) return undefined;
    return {
      replica: String(parsed.replica),
      states: (parsed.states as StoredState[]).map(fromStored),
      anchor: parsed.anchor,
      restoredAt: String(parsed.restoredAt),
    };
  } catch {
    return undefined;
  }
}

/** XOR of `pageChecksum` over every page of the file but the lock page (1 MiB reads). */
export async function fileChecksum(file: LockedFile, pageSize: number): Promise<bigint> {
  const size = file.size();
  const pages = Math.floor(size / pageSize);
  const lockPage = lockPageNumber(pageSize);
  const chunkPages = Math.max(1, Math.floor((1 << 20) / pageSize));
  const buffer = new Uint8Array(chunkPages * pageSize);
  let checksum = 0n;
  for (let first = 1; first <= pages; first += chunkPages) {
    const count = Math.min(chunkPages, pages - first + 1);
    const view = buffer.subarray(0, count * pageSize);
    await file.readAt(view, (first - 1) * pageSize);
    for (let i = 0; i < count; i++) {
      const pgno = first + i;
      if (pgno === lockPage) continue;
      checksum ^= pageChecksum(pgno, view.subarray(i * pageSize, (i + 1) * pageSize));
    }
  }
  return checksum;
}
