/**
 * The checks that need more than one file: contiguity of each level (gaps, overlaps,
 * duplicates), the link between neighbours (rolling checksums when the files carry them, the
 * WAL position an L0 file continues from), one page size for the whole replica, and what a
 * restore can reach from the intact files.
 *
 * @module
 */

import { formatTXID, type Header, HEADER_FLAG_NO_CHECKSUM } from "../ltx/mod.ts";
import { SNAPSHOT_LEVEL } from "../replica/mod.ts";
import type { ScannedFile } from "./_scan.ts";
import type { Problem, RestorableRange } from "./types.ts";

/** Where a WAL holds its first frame: an L0 file starting there begins a new WAL generation. */
const WAL_HEADER_SIZE = 32;

/** What the chain checks found. */
export interface ChainFindings {
  problems: Problem[];
  notes: string[];
  pageSize?: number;
  range?: RestorableRange;
  latestTXID: number;
}

/**
 * Checks `files` (every level, each level in listing order: ascending minTXID, maxTXID).
 * Files with `error` set count as present for contiguity but never as links or restore points.
 */
export function checkChain(files: readonly ScannedFile[]): ChainFindings {
  const problems: Problem[] = [];
  const notes: string[] = [];
  const pageSize = checkPageSize(files, problems);
  const usable = (f: ScannedFile) => f.error === undefined && !foreignPageSize(f, pageSize);
  const byLevel = new Map<number, ScannedFile[]>();
  for (const file of files) {
    const level = byLevel.get(file.info.level) ?? [];
    level.push(file);
    byLevel.set(file.info.level, level);
  }
  for (const [level, list] of byLevel) {
    if (level === SNAPSHOT_LEVEL) continue;
    checkLevel(list, files, usable, problems, notes);
  }
  checkSnapshotsAgainstL0(
    byLevel.get(SNAPSHOT_LEVEL) ?? [],
    byLevel.get(0) ?? [],
    usable,
    problems,
  );
  const latestTXID = files.reduce((max, f) => Math.max(max, f.info.maxTXID), 0);
  const range = reach(files.filter(usable), latestTXID, files, problems);
  return { problems, notes, pageSize, range, latestTXID };
}

/** The most common page size; files with another one come from another database. */
function checkPageSize(files: readonly ScannedFile[], problems: Problem[]): number | undefined {
  const counts = new Map<number, number>();
  for (const f of files) {
    if (f.header !== undefined) {
      counts.set(f.header.pageSize, (counts.get(f.header.pageSize) ?? 0) + 1);
    }
  }
  let pageSize: number | undefined;
  for (const [size, count] of counts) {
    if (pageSize === undefined || count > counts.get(pageSize)!) pageSize = size;
  }
  for (const f of files) {
    if (foreignPageSize(f, pageSize)) {
      problems.push({
        kind: "foreign",
        files: [f.name],
        fromTXID: f.info.minTXID,
        toTXID: f.info.maxTXID,
        message: `${f.name} has page size ${f.header!.pageSize}, the rest of the replica ` +
          `${pageSize}: it belongs to another database; remove it (TXID ${span(f)})`,
      });
    }
  }
  return pageSize;
}

function foreignPageSize(f: ScannedFile, pageSize: number | undefined): boolean {
  return f.header !== undefined && pageSize !== undefined && f.header.pageSize !== pageSize;
}

/** Contiguity and links of one level (0…8). */
function checkLevel(
  list: readonly ScannedFile[],
  all: readonly ScannedFile[],
  usable: (f: ScannedFile) => boolean,
  problems: Problem[],
  notes: string[],
): void {
  /** Broken links, by the index of the later file. */
  const broken = new Map<number, string>();
  for (let i = 1; i < list.length; i++) {
    const previous = list[i - 1].info;
    const current = list[i].info;
    const names = [list[i - 1].name, list[i].name];
    if (current.minTXID === previous.minTXID && current.maxTXID === previous.maxTXID) {
      problems.push({
        kind: "duplicate",
        files: names,
        fromTXID: current.minTXID,
        toTXID: current.maxTXID,
        message: `${names[0]} and ${names[1]} both cover TXID ${span(current)}; remove one`,
      });
    } else if (current.minTXID <= previous.maxTXID) {
      const to = Math.min(previous.maxTXID, current.maxTXID);
      problems.push({
        kind: "overlap",
        files: names,
        fromTXID: current.minTXID,
        toTXID: to,
        message: `${names[1]} overlaps ${names[0]} on TXID ${formatTXID(current.minTXID)}-${
          formatTXID(to)
        }; a level holds each TXID once: remove the file that does not belong`,
      });
    } else if (current.minTXID > previous.maxTXID + 1) {
      const from = previous.maxTXID + 1;
      const to = current.minTXID - 1;
      const coveredBy = all.find((f) =>
        f.info.level !== current.level && f.info.level !== 0 && usable(f) &&
        f.info.minTXID <= from && f.info.maxTXID >= to
      );
      const missing =
        `TXID ${formatTXID(from)}-${formatTXID(to)} missing at level ${current.level}` +
        ` between ${names[0]} and ${names[1]}`;
      if (coveredBy !== undefined) {
        notes.push(`${missing} (covered by ${coveredBy.name})`);
      } else {
        problems.push({
          kind: "gap",
          files: names,
          fromTXID: from,
          toTXID: to,
          message: `${missing}; no other level holds them`,
        });
      }
    } else if (usable(list[i - 1]) && usable(list[i])) {
      const why = linkBreak(list[i - 1], list[i]);
      if (why !== undefined) broken.set(i, why);
    }
  }
  // A file that continues neither its predecessor nor its successor is the intruder.
  for (const [i, why] of broken) {
    if (broken.has(i + 1)) {
      const f = list[i];
      problems.push({
        kind: "foreign",
        files: [f.name],
        fromTXID: f.info.minTXID,
        toTXID: f.info.maxTXID,
        message:
          `${f.name} continues neither ${list[i - 1].name} nor ${
            list[i + 1].name
          } (${why}): it was written by another database; TXID ${span(f)} cannot be restored ` +
          `from this level`,
      });
      broken.delete(i + 1);
    } else {
      problems.push({
        kind: "chain",
        files: [list[i - 1].name, list[i].name],
        fromTXID: list[i].info.minTXID,
        toTXID: list[i].info.maxTXID,
        message: `${list[i].name} does not continue ${list[i - 1].name} (${why}): one of them ` +
          `was written by another database`,
      });
    }
  }
}

/**
 * Why `next` cannot follow `previous` (adjacent TXIDs, both intact), or undefined. Rolling
 * checksums link files that carry them; an L0 file written from a WAL (sluice and Litestream
 * record where) starts where its predecessor ended, unless it starts a new WAL generation.
 */
function linkBreak(previous: ScannedFile, next: ScannedFile): string | undefined {
  const p = previous.header!;
  const n = next.header!;
  if (hasChecksums(p) && hasChecksums(n) && n.minTXID !== 1) {
    if (n.preApplyChecksum !== previous.trailer!.postApplyChecksum) {
      return `its pre-apply checksum ${hex64(n.preApplyChecksum)} is not the post-apply ` +
        `checksum ${hex64(previous.trailer!.postApplyChecksum)} of its predecessor`;
    }
  }
  if (next.info.level !== 0 || p.walOffset === 0 || n.walOffset === 0) return undefined;
  if (n.walOffset === WAL_HEADER_SIZE) return undefined; // a new WAL generation
  if (n.walSalt1 !== p.walSalt1 || n.walSalt2 !== p.walSalt2) {
    return `it continues WAL salts ${hex32(n.walSalt1)}/${hex32(n.walSalt2)} at offset ` +
      `${n.walOffset}, its predecessor was written from salts ${hex32(p.walSalt1)}/${
        hex32(p.walSalt2)
      }`;
  }
  if (n.walOffset !== p.walOffset + p.walSize) {
    return `it starts at WAL offset ${n.walOffset}, its predecessor ends at ${
      p.walOffset + p.walSize
    }`;
  }
  return undefined;
}

/**
 * A snapshot written from a WAL position (sluice's) ends where the L0 file of the same TXID
 * ends: a snapshot from another database does not.
 */
function checkSnapshotsAgainstL0(
  snapshots: readonly ScannedFile[],
  level0: readonly ScannedFile[],
  usable: (f: ScannedFile) => boolean,
  problems: Problem[],
): void {
  const l0ByMax = new Map(level0.filter(usable).map((f) => [f.info.maxTXID, f.header!]));
  for (const snapshot of snapshots) {
    if (!usable(snapshot)) continue;
    const s = snapshot.header!;
    const l0 = l0ByMax.get(s.maxTXID);
    if (l0 === undefined || s.walSize === 0 || l0.walOffset === 0) continue;
    const sameSalts = s.walSalt1 === l0.walSalt1 && s.walSalt2 === l0.walSalt2;
    if (!sameSalts || s.walOffset + s.walSize !== l0.walOffset + l0.walSize) {
      problems.push({
        kind: "foreign",
        files: [snapshot.name],
        fromTXID: s.minTXID,
        toTXID: s.maxTXID,
        message: `${snapshot.name} was not taken at the WAL position of L0 TXID ${
          formatTXID(s.maxTXID)
        }: it belongs to another database; remove it`,
      });
    }
  }
}

/**
 * The restorable range from the intact files: from the oldest file starting at TXID 1 to what
 * the newest one extends to through the other levels (a restore plan's reach). Records what
 * the newest files claim beyond it as unreachable.
 */
function reach(
  usable: readonly ScannedFile[],
  latestTXID: number,
  all: readonly ScannedFile[],
  problems: Problem[],
): RestorableRange | undefined {
  if (all.length === 0) {
    problems.push({
      kind: "missing",
      files: [],
      message: "the replica holds no LTX file: nothing was replicated there, or this is not " +
        "the replica's URL (a DB_PATH is looked up in the config: give -c FILE)",
    });
    return undefined;
  }
  const starts = usable.filter((f) => f.info.minTXID === 1)
    .sort((a, b) => a.info.maxTXID - b.info.maxTXID);
  if (starts.length === 0) {
    problems.push({
      kind: "missing",
      files: [],
      fromTXID: 1,
      toTXID: latestTXID,
      message: `no intact snapshot or file starting at TXID 0000000000000001: nothing can be ` +
        `restored; take a new snapshot (sluice snapshot) from the source database`,
    });
    return undefined;
  }
  const oldest = starts[0];
  let last = starts[starts.length - 1];
  const rest = usable.filter((f) => f.info.level !== SNAPSHOT_LEVEL)
    .sort((a, b) => a.info.minTXID - b.info.minTXID);
  let at = 0;
  let best: ScannedFile | undefined;
  for (;;) {
    while (at < rest.length && rest[at].info.minTXID <= last.info.maxTXID + 1) {
      if (best === undefined || rest[at].info.maxTXID > best.info.maxTXID) best = rest[at];
      at++;
    }
    if (best === undefined || best.info.maxTXID <= last.info.maxTXID) break;
    last = best;
  }
  const reached = last.info.maxTXID;
  if (reached < latestTXID) {
    const beyond = all.filter((f) => f.info.maxTXID > reached);
    const shown = beyond.slice(0, 5).map((f) => f.name);
    problems.push({
      kind: "unreachable",
      files: shown,
      fromTXID: reached + 1,
      toTXID: latestTXID,
      message: `TXID ${formatTXID(reached + 1)}-${formatTXID(latestTXID)} cannot be restored: ` +
        `the intact files end at ${formatTXID(reached)} (held by ${shown.join(", ")}` +
        `${beyond.length > shown.length ? ` and ${beyond.length - shown.length} more` : ""}); ` +
        `take a new snapshot (sluice snapshot) to make the latest state restorable again`,
    });
  }
  return {
    fromTXID: oldest.info.maxTXID,
    fromTime: oldest.info.createdAt,
    toTXID: reached,
    toTime: last.info.createdAt,
  };
}

function hasChecksums(h: Header): boolean {
  return (h.flags & HEADER_FLAG_NO_CHECKSUM) === 0;
}

function span(f: { minTXID: number; maxTXID: number } | ScannedFile): string {
  const info = "info" in f ? f.info : f;
  return info.minTXID === info.maxTXID
    ? formatTXID(info.minTXID)
    : `${formatTXID(info.minTXID)}-${formatTXID(info.maxTXID)}`;
}

function hex64(value: bigint): string {
  return value.toString(16).padStart(16, "0");
}

function hex32(value: number): string {
  return (value >>> 0).toString(16).padStart(8, "0");
}
