/**
 * A 1 GiB database through Azure Blob Storage (Azurite on disk, 127.0.0.1): `sluice snapshot`
 * uploads it as staged 4 MiB blocks, `sluice restore` streams it back, and the restored file's
 * content must equal the source's. Prints wall time, throughput and peak RSS of both commands.
 * Not part of `deno task test` (a minute or more on 2 cores).
 *
 *   deno run -A scripts/bench/abs_1gib.ts [--mib N]   # default 1024
 *
 * @module
 */

import { join } from "node:path";
import { parseArgs } from "node:util";
import { buildDatabase, measure } from "./snapshot_restore.ts";
import { ROOT } from "./_common.ts";
import { AZURITE_ACCOUNT, startAzurite } from "../../tests/_azurite.ts";
import { digest } from "../../tests/_sluice.ts";

const MIB = 1 << 20;

/** Runs the round trip; resolves to the figures printed. */
export async function run(mib: number): Promise<Record<string, number | boolean>> {
  const azurite = await startAzurite({ onDisk: true });
  const dir = await Deno.makeTempDir({ prefix: "sluice-bench-abs-" });
  try {
    await azurite.createContainer("bench");
    const dbPath = join(dir, "big.db");
    const size = buildDatabase(dbPath, mib * MIB);
    const url = `abs://${AZURITE_ACCOUNT.accountName}@bench/big?endpoint=${
      encodeURIComponent(azurite.endpoint)
    }`;
    Deno.env.set("LITESTREAM_AZURE_ACCOUNT_KEY", AZURITE_ACCOUNT.accountKey);
    const sluice = [Deno.execPath(), "run", "-A", join(ROOT, "main.ts")];
    const snapshot = await measure([...sluice, "snapshot", dbPath, url]);
    const out = join(dir, "restored.db");
    const restore = await measure([
      ...sluice,
      "restore",
      "-o",
      out,
      "--integrity-check",
      "none",
      url,
    ]);
    const [source, restored] = [await digest(dbPath), await digest(out)];
    const equal = JSON.stringify(source) === JSON.stringify(restored) && source.integrity === "ok";
    const mb = size / 1e6;
    return {
      databaseMB: Math.round(mb),
      snapshotSeconds: round(snapshot.seconds),
      snapshotMBps: round(mb / snapshot.seconds),
      snapshotPeakRSSMB: Math.round(snapshot.peakBytes / 1e6),
      restoreSeconds: round(restore.seconds),
      restoreMBps: round(mb / restore.seconds),
      restorePeakRSSMB: Math.round(restore.peakBytes / 1e6),
      restoredEqualsSource: equal,
    };
  } finally {
    await azurite.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

function round(x: number): number {
  return Math.round(x * 10) / 10;
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { mib: { type: "string" } } });
  const figures = await run(Number(values.mib ?? 1024));
  console.log(JSON.stringify(figures, null, 2));
  if (!figures.restoredEqualsSource) Deno.exit(1);
}
