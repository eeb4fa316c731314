/**
 * `sluice verify` on a large file replica: how fast it proves a replica intact (every file read
 * and decoded to its end, every checksum verified, nothing written), and `verify --restore`
 * (the same plus a restore to a temporary file and `PRAGMA integrity_check`), each against
 * `sluice restore` of the same replica in the same run (`--integrity-check none`, and `full` for
 * `--restore`), with the peak RSS of `verify`.
 *
 *   deno run -A scripts/bench/verify.ts [--quick]   # 1 GiB; --quick: 64 MiB
 *
 * The database is the one scripts/bench/snapshot_restore.ts builds (random, incompressible
 * blobs, checkpointed), replicated by one `sluice snapshot`. Figures are MB of database per
 * second of a fresh `deno run` process (start-up included), warm cache, best of 2 (1 with
 * --quick).
 *
 * @module
 */

import { join } from "node:path";
import { type BenchOptions, type BenchResult, progress, result, sluiceCommand } from "./_common.ts";
import { buildDatabase, measure, type Measured, warm } from "./snapshot_restore.ts";

const MIB = 1 << 20;

/** Runs the benchmark; returns the verify, verify --restore and peak RSS rows. */
export async function run(opts: BenchOptions): Promise<BenchResult[]> {
  const targetBytes = (opts.quick ? 64 : 1024) * MIB;
  const repeats = opts.quick ? 1 : 2;
  const dir = await Deno.makeTempDir({ prefix: "sluice-bench-verify-" });
  const sluice = sluiceCommand;
  try {
    const dbPath = join(dir, "big.db");
    progress(`verify: building a ${targetBytes / MIB} MiB database`);
    const size = buildDatabase(dbPath, targetBytes);
    const replica = join(dir, "replica");
    const url = `file://${replica}`;
    await measure(sluice("snapshot", dbPath, url));
    let replicaBytes = 0;
    for await (const level of Deno.readDir(join(replica, "ltx"))) {
      for await (const file of Deno.readDir(join(replica, "ltx", level.name))) {
        replicaBytes += (await Deno.stat(join(replica, "ltx", level.name, file.name))).size;
      }
    }
    await warm(dbPath);

    const verify: Measured[] = [];
    const verifyRestore: Measured[] = [];
    const restore: Measured[] = [];
    const restoreFull: Measured[] = [];
    for (let i = 0; i < repeats; i++) {
      verify.push(await measure(sluice("verify", url)));
      verifyRestore.push(await measure(sluice("verify", "--restore", url)));
      for (const [mode, runs] of [["none", restore], ["full", restoreFull]] as const) {
        const out = join(dir, `restored-${mode}-${i}.db`);
        runs.push(await measure(sluice("restore", "--integrity-check", mode, "-o", out, url)));
        await Deno.remove(out);
      }
      progress(
        `verify: run ${i + 1}: verify ${verify[i].seconds.toFixed(2)} s ` +
          `(${(verify[i].peakBytes / 1e6).toFixed(0)} MB peak), verify --restore ` +
          `${verifyRestore[i].seconds.toFixed(2)} s, restore ${restore[i].seconds.toFixed(2)} s, ` +
          `restore with integrity_check ${restoreFull[i].seconds.toFixed(2)} s`,
      );
    }
    // verify reads every file (the snapshot's L0 and L9 copies both), restore one of them.
    const rate = (runs: Measured[], bytes = size) =>
      bytes / 1e6 / Math.min(...runs.map((r) => r.seconds));
    const label = `${Math.round(size / MIB)} MiB`;
    const common = `best of ${repeats}, warm cache, process start-up included; verify: MB of ` +
      `replica files read (${(replicaBytes / 1e6).toFixed(0)} MB), restore: MB of database`;
    return [
      result(
        `verify ${label} file replica`,
        "MB/s",
        rate(verify, replicaBytes),
        rate(restore),
        "sluice restore (integrity-check none)",
        `${common}; every file decoded and checksummed, nothing written; no target`,
      ),
      result(
        `verify --restore ${label} file replica`,
        "MB/s",
        rate(verifyRestore, replicaBytes),
        rate(restoreFull),
        "sluice restore (integrity-check full)",
        `${common}; verify, then restore to a temp file + integrity_check; no target`,
      ),
      result(
        `peak RSS verify ${label}`,
        "MB",
        Math.max(...verify.map((r) => r.peakBytes)) / 1e6,
        NaN,
        "",
        "VmHWM of the process",
      ),
    ];
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const results = await run({ quick: Deno.args.includes("--quick") });
  console.log(JSON.stringify(results, null, 2));
}
