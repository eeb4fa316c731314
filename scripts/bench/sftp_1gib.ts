/**
 * A 1 GiB database through SFTP (Debian's OpenSSH server started by tests/_sshd.ts on
 * 127.0.0.1, key authentication, host key checked): `sluice snapshot` uploads it, `sluice
 * restore` streams it back, and the restored file's content must equal the source's. Prints
 * wall time, throughput and peak RSS of both commands. Not part of `deno task test` (a minute
 * or more on 2 cores); needs root and sshd, like the SFTP tests.
 *
 *   deno run -A scripts/bench/sftp_1gib.ts [--mib N]   # default 1024
 *
 * @module
 */

import { join } from "node:path";
import { parseArgs } from "node:util";
import { type RoundTripFigures, storageRoundTrip, withTempDir } from "./_common.ts";
import { sshdUnavailable, startSshd } from "../../tests/_sshd.ts";

/**
 * Runs the round trip; resolves to the figures printed.
 * @throws Error when sshd cannot run here (the reason says what is missing).
 */
export async function run(mib: number): Promise<RoundTripFigures> {
  const unavailable = sshdUnavailable();
  if (unavailable !== undefined) throw new Error(`SFTP benchmark not run: ${unavailable}`);
  const sshd = await startSshd();
  try {
    const query = `host-key=${encodeURIComponent(sshd.hostKeyLine)}&key-path=${
      encodeURIComponent(sshd.userKeyPath)
    }`;
    const url = `sftp://${sshd.user}@${sshd.host}:${sshd.port}${
      join(sshd.dataDir, "big")
    }?${query}`;
    return await withTempDir("sftp", (dir) => storageRoundTrip(dir, mib, url));
  } finally {
    await sshd.stop();
  }
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { mib: { type: "string" } } });
  const figures = await run(Number(values.mib ?? 1024));
  console.log(JSON.stringify(figures, null, 2));
  if (!figures.restoredEqualsSource) Deno.exit(1);
}
