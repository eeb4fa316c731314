/**
 * `sluice snapshot`, `sluice restore` and a compaction of a large database with a file replica:
 * throughput against `cp` + fsync of the same database file in the same run, restore against
 * Litestream v0.5.17's own restore (its VFS hydration, the `litestream-vfs-linux-amd64`
 * package, from the same replica), and the peak RSS of each (issue 15's targets: restore
 * ≥ 0.6× and snapshot ≥ 0.5× of `cp` + fsync, restore ≥ 4× Litestream's, peak RSS < 150 MB).
 *
 *   deno run -A scripts/bench/snapshot_restore.ts [--quick]   # 1 GiB; --quick: 64 MiB
 *
 * The database is filled with rows of random (incompressible) blobs, the worst case for LZ4,
 * and checkpointed so every page is in the database file. Every figure is measured with a warm
 * page cache (the file is read once first), and each command runs as the user would run it: a
 * fresh `deno run` process of sluice (its start-up time included), `cp` then `sync FILE` as a
 * process. sluice compresses (snapshot), decodes and verifies every checksum (restore) and
 * fsyncs. Restore runs with `--integrity-check none`, so it does the same amount of work as
 * the copy it is compared to. Peak RSS is the process's VmHWM (/proc/<pid>/status), sampled
 * every 10 ms until it exits. The compaction merges the snapshot's full level-0 image into
 * level 1 (decode, merge, encode) in a process of its own through the Compactor.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import {
  type BenchOptions,
  type BenchResult,
  progress,
  result,
  ROOT,
  sluiceCommand,
} from "./_common.ts";
import { litestreamRestore, oracleAvailable } from "../../tests/_oracle.ts";

const MIB = 1 << 20;
/** Issue 15's targets. */
const TARGET_SNAPSHOT_VS_CP = 0.5;
const TARGET_RESTORE_VS_CP = 0.6;
const TARGET_RESTORE_VS_LITESTREAM = 4;
const TARGET_PEAK_RSS_MB = 150;

/** What one measured process did. */
export interface Measured {
  seconds: number;
  /** Peak resident set size in bytes (NaN when /proc could not be read). */
  peakBytes: number;
}

/** Runs the benchmark; returns the snapshot, restore, compaction and peak RSS rows. */
export async function run(opts: BenchOptions): Promise<BenchResult[]> {
  const targetBytes = (opts.quick ? 64 : 1024) * MIB;
  const repeats = opts.quick ? 1 : 2;
  const dir = await Deno.makeTempDir({ prefix: "sluice-bench-snapshot-" });
  try {
    const dbPath = join(dir, "big.db");
    progress(`snapshot_restore: building a ${targetBytes / MIB} MiB database`);
    const size = buildDatabase(dbPath, targetBytes);
    const mb = size / 1e6;
    await warm(dbPath);

    const cp: number[] = [];
    const snapshot: Measured[] = [];
    const restore: Measured[] = [];
    const litestream: number[] = [];
    const compaction: Measured[] = [];
    let litestreamProblem = oracleAvailable()
      ? undefined
      : "the litestream-vfs-linux-amd64 extension is not installed here";
    const sluice = sluiceCommand;
    for (let i = 0; i < repeats; i++) {
      const copy = join(dir, `copy-${i}.db`);
      cp.push(
        (await measure(["sh", "-c", 'cp "$1" "$2" && sync "$2"', "cp", dbPath, copy])).seconds,
      );
      await Deno.remove(copy);

      // A fresh replica each time: the snapshot is the first one (no meta dir, no L0 yet).
      const replica = join(dir, `replica-${i}`);
      await Deno.remove(join(dir, ".big.db-sluice"), { recursive: true }).catch(() => {});
      snapshot.push(await measure(sluice("snapshot", dbPath, `file://${replica}`)));
      const out = join(dir, `restored-${i}.db`);
      restore.push(
        await measure(
          sluice("restore", "--integrity-check", "none", "-o", out, `file://${replica}`),
        ),
      );
      // sluice adds its two small helper tables on the first snapshot: a page or two more.
      const restoredSize = (await Deno.stat(out)).size;
      if (restoredSize < size || restoredSize > size + 4 * 4096) {
        throw new Error(`restore produced ${restoredSize} bytes, expected about ${size}`);
      }
      await Deno.remove(out);

      if (litestreamProblem === undefined) {
        const theirs = join(dir, `litestream-${i}.db`);
        const started = performance.now();
        try {
          await litestreamRestore(replica, theirs, { timeoutMs: 600_000 });
          litestream.push((performance.now() - started) / 1000);
          const theirSize = (await Deno.stat(theirs)).size;
          if (theirSize !== restoredSize) {
            litestreamProblem = `Litestream restored ${theirSize} bytes, sluice ${restoredSize}`;
          }
        } catch (err) {
          litestreamProblem = `Litestream's restore failed: ${
            (err as Error).message.split("\n")[0]
          }`;
        }
        await Deno.remove(theirs).catch(() => {});
      }

      compaction.push(await measure([Deno.execPath(), "eval", compactionScript(replica)]));
      await Deno.remove(replica, { recursive: true });
      progress(
        `snapshot_restore: run ${i + 1}: cp+fsync ${cp[i].toFixed(2)} s, snapshot ` +
          `${snapshot[i].seconds.toFixed(2)} s (${mbOf(snapshot[i])} MB peak), restore ` +
          `${restore[i].seconds.toFixed(2)} s (${mbOf(restore[i])} MB), Litestream restore ` +
          `${litestream[i]?.toFixed(2) ?? "n/a"} s, compaction ${
            compaction[i].seconds.toFixed(2)
          } s ` +
          `(${mbOf(compaction[i])} MB)`,
      );
    }
    const best = (values: number[]) => values.length ? Math.min(...values) : NaN;
    const bestOf = (runs: Measured[]) => best(runs.map((r) => r.seconds));
    const peak = (runs: Measured[]) => Math.max(...runs.map((r) => r.peakBytes)) / 1e6;
    const cpRate = mb / best(cp);
    const label = `${Math.round(size / MIB)} MiB`;
    const common = `best of ${repeats}, warm cache, process start-up included`;
    const verdict = (met: boolean) => met ? "target met" : "TARGET MISSED (docs/BENCHMARKS.md)";
    const snapshotRate = mb / bestOf(snapshot);
    const restoreRate = mb / bestOf(restore);
    const litestreamRate = mb / best(litestream);
    const rssRow = (what: string, runs: Measured[]) =>
      result(
        `peak RSS ${what} ${label}`,
        "MB",
        peak(runs),
        TARGET_PEAK_RSS_MB,
        "target",
        `VmHWM of the process; target < ${TARGET_PEAK_RSS_MB} MB for 1 GiB: ` +
          verdict(peak(runs) < TARGET_PEAK_RSS_MB),
      );
    return [
      result(
        `snapshot ${label} to file replica`,
        "MB/s",
        snapshotRate,
        cpRate,
        "cp + fsync",
        `${common}; target ≥ ${TARGET_SNAPSHOT_VS_CP}x: ` +
          verdict(snapshotRate / cpRate >= TARGET_SNAPSHOT_VS_CP),
      ),
      result(
        `restore ${label} from file replica`,
        "MB/s",
        restoreRate,
        cpRate,
        "cp + fsync",
        `${common}; target ≥ ${TARGET_RESTORE_VS_CP}x: ` +
          verdict(restoreRate / cpRate >= TARGET_RESTORE_VS_CP),
      ),
      result(
        `restore ${label} vs Litestream's restore`,
        "MB/s",
        restoreRate,
        litestreamProblem === undefined ? litestreamRate : NaN,
        "Litestream v0.5.17 VFS hydration",
        litestreamProblem ??
          `same replica, same run, both as fresh processes; target ≥ ` +
            `${TARGET_RESTORE_VS_LITESTREAM}x: ` +
            verdict(restoreRate / litestreamRate >= TARGET_RESTORE_VS_LITESTREAM),
      ),
      result(
        `compaction ${label} L0 → L1 (decode, merge, encode)`,
        "MB/s",
        mb / bestOf(compaction),
        cpRate,
        "cp + fsync",
        `${common}; no target`,
      ),
      rssRow("snapshot", snapshot),
      rssRow("restore", restore),
      rssRow("compaction", compaction),
    ];
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

function mbOf(run: Measured): string {
  return (run.peakBytes / 1e6).toFixed(0);
}

/** A script that compacts the replica's level 0 (the snapshot's full image) into level 1. */
function compactionScript(replica: string): string {
  const url = (path: string) => new URL(`file://${join(ROOT, path)}`).href;
  return `
import { Compactor } from ${JSON.stringify(url("src/compaction/mod.ts"))};
import { FileReplicaClient } from ${JSON.stringify(url("src/replica/mod.ts"))};
const client = new FileReplicaClient(${JSON.stringify(replica)});
const compactor = new Compactor(client, {
  levels: [1000], snapshotInterval: 0, snapshotRetention: 3600000, l0Retention: 3600000,
  retentionEnabled: false,
});
const { outcome } = await compactor.compact(1, Date.now() + 3600000);
await compactor.stop();
if (outcome !== "compacted") throw new Error("compaction: " + outcome);
`;
}

/** A WAL-mode database of about `targetBytes`, all pages checkpointed into the file. */
export function buildDatabase(path: string, targetBytes: number): number {
  const db = new DatabaseSync(path);
  try {
    db.exec("PRAGMA page_size = 4096; PRAGMA journal_mode = wal; PRAGMA synchronous = off;");
    db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, payload BLOB)");
    const rowBytes = 16 * 1024;
    const perTx = 512; // 8 MiB per transaction
    const insert = db.prepare("INSERT INTO t (n, payload) VALUES (?, randomblob(?))");
    let written = 0;
    for (let tx = 1; written < targetBytes; tx++) {
      db.exec("BEGIN");
      for (let i = 0; i < perTx; i++) insert.run(tx, rowBytes);
      db.exec("COMMIT");
      written += perTx * rowBytes;
      db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    }
    db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  } finally {
    db.close();
  }
  return Deno.statSync(path).size;
}

/** Reads the file once so every measurement starts from the page cache. */
export async function warm(path: string): Promise<void> {
  const file = await Deno.open(path);
  try {
    const buffer = new Uint8Array(4 * MIB);
    while ((await file.read(buffer)) !== null) { /* read through */ }
  } finally {
    file.close();
  }
}

/**
 * Runs `command` to completion, sampling its VmHWM every 10 ms; its wall time and peak RSS.
 * @throws Error with its stderr when it fails.
 */
export async function measure([command, ...args]: string[]): Promise<Measured> {
  const started = performance.now();
  const child = new Deno.Command(command, { args, stdout: "null", stderr: "piped" }).spawn();
  const stderr = new Response(child.stderr).text();
  let exited = false;
  const status = child.status.finally(() => exited = true);
  let peakBytes = NaN;
  while (!exited) {
    try {
      const text = await Deno.readTextFile(`/proc/${child.pid}/status`);
      const kb = Number(/VmHWM:\s+(\d+)\s+kB/.exec(text)?.[1]);
      if (kb > 0) peakBytes = Math.max(Number.isNaN(peakBytes) ? 0 : peakBytes, kb * 1024);
    } catch { /* exited meanwhile, or no /proc */ }
    await Promise.race([status, new Promise((resolve) => setTimeout(resolve, 10))]);
  }
  const { success, code } = await status;
  const seconds = (performance.now() - started) / 1000;
  if (!success) {
    throw new Error(`${command} ${args.join(" ")} failed (${code}): ${await stderr}`);
  }
  await stderr;
  return { seconds, peakBytes };
}

if (import.meta.main) {
  const results = await run({ quick: Deno.args.includes("--quick") });
  console.log(JSON.stringify(results, null, 2));
}
