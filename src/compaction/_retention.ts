/**
 * Which replica files retention deletes (FORMAT.md §3.4), as pure functions over listings so the
 * rules can be read and tested apart from any storage. Every function keeps the newest file it
 * is given: a level is never emptied, and the replica position (newest L0) always survives.
 *
 * @module
 */

import type { LTXFileInfo } from "../replica/mod.ts";

/** What snapshot retention deletes, and the TXID floor it implies for levels 1…8. */
export interface SnapshotRetentionPlan {
  /** Level-9 files to delete. */
  doomed: LTXFileInfo[];
  /**
   * MaxTXID of the snapshot just before the first retained one; 0 when nothing is deleted.
   * Files of levels 1…8 ending below it are no longer needed by any restore that starts at a
   * retained snapshot.
   */
  minSnapshotTXID: number;
}

/**
 * Snapshot retention: the level-9 files (in listing order) created before `cutoff` (ms since
 * the epoch), except the newest file, which is never deleted.
 */
export function selectSnapshotDeletions(
  snapshots: readonly LTXFileInfo[],
  cutoff: number,
): SnapshotRetentionPlan {
  const last = snapshots.length - 1;
  const doomed = new Set<number>();
  snapshots.forEach((file, i) => {
    if (i !== last && file.createdAt.getTime() < cutoff) doomed.add(i);
  });
  let minSnapshotTXID = 0;
  const firstRetained = snapshots.findIndex((_, i) => !doomed.has(i));
  if (firstRetained > 0 && doomed.has(firstRetained - 1)) {
    minSnapshotTXID = snapshots[firstRetained - 1].maxTXID;
  }
  return { doomed: [...doomed].map((i) => snapshots[i]), minSnapshotTXID };
}

/**
 * Level retention after snapshot retention: files (of one level 1…8, in listing order) whose
 * MaxTXID is below `minSnapshotTXID`, always keeping the newest file of the level.
 */
export function selectLevelDeletions(
  files: readonly LTXFileInfo[],
  minSnapshotTXID: number,
): LTXFileInfo[] {
  if (minSnapshotTXID <= 0) return [];
  return files.slice(0, -1).filter((file) => file.maxTXID < minSnapshotTXID);
}

/**
 * L0 retention: scanning level-0 files in order, stop at the first one created after `cutoff`;
 * of the files before it, those already covered by level 1 (`MaxTXID ≤ maxL1TXID`) go. When
 * the scan reached the end, the newest file is kept (it is the replica position).
 */
export function selectL0Deletions(
  files: readonly LTXFileInfo[],
  maxL1TXID: number,
  cutoff: number,
): LTXFileInfo[] {
  if (maxL1TXID <= 0) return [];
  const doomed: LTXFileInfo[] = [];
  let processedAll = true;
  for (const file of files) {
    if (file.createdAt.getTime() > cutoff) {
      processedAll = false;
      break;
    }
    if (file.maxTXID <= maxL1TXID) doomed.push(file);
  }
  if (processedAll && doomed.length > 0 && doomed[doomed.length - 1] === files[files.length - 1]) {
    doomed.pop();
  }
  return doomed;
}
