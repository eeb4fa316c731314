/**
 * `sluice ltx [-c FILE] [--level N|all] [--json] DB_PATH|REPLICA_URL`: list a replica's LTX
 * files per level, to see what a restore can reach (which TXIDs, from when).
 *
 * @module
 */

import {
  createReplicaClient,
  type LTXFileInfo,
  replicaContent,
  SNAPSHOT_LEVEL,
} from "../replica/mod.ts";
import { parseLTXArgs } from "./args.ts";
import { fileEntries, resolveSource, withAgeIdentities } from "./restore.ts";

/**
 * Runs the command; resolves to the exit code.
 * @throws {UsageError} | {ConfigError} for the user's mistakes (exit 2), anything else when the
 * replica cannot be listed (exit 1); `src/cli/mod.ts` prints them.
 */
export async function run(args: string[]): Promise<number> {
  const options = parseLTXArgs(args);
  const source = await resolveSource(options.source, options.config);
  source.spec = await withAgeIdentities(source.spec, options.ageIdentityFiles);
  const levels = options.level === "all"
    ? Array.from({ length: SNAPSHOT_LEVEL + 1 }, (_, level) => level)
    : [options.level];
  const client = createReplicaClient(source.spec);
  const files: LTXFileInfo[] = [];
  let encrypted = false;
  try {
    for (const level of levels) {
      for await (const info of client.ltxFiles(level)) files.push(info);
    }
    // Names, sizes and times are never encrypted; say so when the contents are.
    encrypted = files.length > 0 && await replicaContent(client) === "encrypted";
  } finally {
    await client.close();
  }
  console.log(options.json ? JSON.stringify(fileEntries(files)) : formatTable(files));
  if (encrypted) {
    console.error(
      `the contents of these files are encrypted with age (SIZE is the encrypted size); ` +
        `restore needs an identity (age.identities or --age-identity FILE)`,
    );
  }
  return 0;
}

/** An aligned table: numbers right-aligned, with a header line. */
export function formatTable(files: readonly LTXFileInfo[]): string {
  const header = ["LEVEL", "MIN_TXID", "MAX_TXID", "SIZE", "CREATED"];
  const rows = fileEntries(files).map((f) => [
    String(f.level),
    f.minTXID,
    f.maxTXID,
    String(f.size),
    f.created,
  ]);
  const rightAligned = [true, false, false, true, false];
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => row[column].length))
  );
  return [header, ...rows]
    .map((row) =>
      row
        .map((cell, column) =>
          rightAligned[column] ? cell.padStart(widths[column]) : cell.padEnd(widths[column])
        )
        .join("  ")
        .trimEnd()
    )
    .join("\n");
}
