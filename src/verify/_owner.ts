/**
 * The owner marker (`sluice-owner.json`, see src/engine's `claimReplica`): which database
 * replicates into the replica. Read only; a verification never creates one.
 *
 * @module
 */

import type { ReplicaClient } from "../replica/mod.ts";
import type { Problem } from "./types.ts";

/** What the marker says. */
export interface OwnerFindings {
  /** The database the marker names; undefined when there is no marker. */
  owner?: string;
  problem?: Problem;
  note?: string;
}

/**
 * Reads the marker of `client` and compares it with `expectedDB` (the configured database the
 * replica was looked up for), when given.
 */
export async function checkOwner(
  client: ReplicaClient,
  expectedDB: string | undefined,
): Promise<OwnerFindings> {
  const marker = client.ownerMarker?.();
  if (marker === undefined) {
    return { note: `${client.type} replicas carry no owner marker; ownership not checked` };
  }
  let text: string | undefined;
  try {
    text = await marker.read();
  } catch (err) {
    return {
      problem: {
        kind: "owner",
        files: [marker.path],
        message: `owner marker ${marker.path} cannot be read: ${(err as Error).message}`,
      },
    };
  }
  if (text === undefined) {
    return {
      note: `no owner marker at ${marker.path} (written by Litestream, or never replicated)`,
    };
  }
  let owner: string | undefined;
  try {
    const value = JSON.parse(text) as { db?: unknown };
    if (typeof value?.db === "string") owner = value.db;
  } catch { /* unreadable: reported below */ }
  if (owner === undefined) {
    return {
      problem: {
        kind: "owner",
        files: [marker.path],
        message: `owner marker ${marker.path} is not a sluice owner record; sluice refuses to ` +
          `replicate here until it is deleted or rewritten`,
      },
    };
  }
  if (expectedDB !== undefined && owner !== expectedDB) {
    return {
      owner,
      problem: {
        kind: "owner",
        files: [marker.path],
        message: `the replica belongs to database ${owner}, not ${expectedDB} (${marker.path}); ` +
          `two databases configured with one replica path, or the database moved: give each its ` +
          `own replica path`,
      },
    };
  }
  return { owner };
}
