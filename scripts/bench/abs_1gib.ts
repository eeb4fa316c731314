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

import { parseArgs } from "node:util";
import { type RoundTripFigures, storageRoundTrip, withTempDir } from "./_common.ts";
import { AZURITE_ACCOUNT, startAzurite } from "../../tests/_azurite.ts";

/** Runs the round trip; resolves to the figures printed. */
export async function run(mib: number): Promise<RoundTripFigures> {
  const azurite = await startAzurite({ onDisk: true });
  try {
    await azurite.createContainer("bench");
    const url = `abs://${AZURITE_ACCOUNT.accountName}@bench/big?endpoint=${
      encodeURIComponent(azurite.endpoint)
    }`;
    Deno.env.set("LITESTREAM_AZURE_ACCOUNT_KEY", AZURITE_ACCOUNT.accountKey);
    return await withTempDir("abs", (dir) => storageRoundTrip(dir, mib, url));
  } finally {
    await azurite.stop();
  }
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { mib: { type: "string" } } });
  const figures = await run(Number(values.mib ?? 1024));
  console.log(JSON.stringify(figures, null, 2));
  if (!figures.restoredEqualsSource) Deno.exit(1);
}
