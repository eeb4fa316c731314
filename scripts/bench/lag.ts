/**
 * Commit-to-replica lag on a file replica at 3, 100 and 1,000 writes/s: sluice vs Litestream
 * v0.3.13, both with default settings, one after the other on the same workload.
 *
 * Method: a writer process commits one small row per transaction at a fixed rate and records
 * each commit time right after `COMMIT` returns; every row carries a marker with its
 * transaction number. The benchmark watches the replica directory (inotify plus a 50 ms listing
 * as a safety net) and stamps each replica file when its final name appears (both tools write a
 * temp file and rename it). Afterwards every replica file is decompressed and searched for
 * markers; a transaction's lag is the first stamp of a file containing it minus its commit time.
 * Decoding happens after the run, so it does not compete with the replicator for CPU.
 *
 *   deno run -A scripts/bench/lag.ts [--quick]
 *
 * @module
 */

import { join } from "node:path";
import {
  type BenchOptions,
  type BenchResult,
  formatTable,
  LITESTREAM,
  percentile,
  progress,
  result,
  sleep,
  treeCpuSeconds,
  until,
  withTempDir,
} from "./_common.ts";
import { scanFileMarkers } from "./_markers.ts";
import {
  createBenchDatabase,
  runWriter,
  startReplicator,
  type ToolName,
  type WriterRun,
} from "./_replicators.ts";
import { byArrival, watchReplica } from "./_watch.ts";

interface Phase {
  rate: number;
  seconds: number;
}

interface PhaseLags {
  rate: number;
  lags: number[];
  missing: number;
  /** Replicator CPU seconds (its whole process tree) per 1,000 transactions, drain included. */
  cpuPer1000: number;
}

/** Lags (ms) of every transaction of every phase, for one tool. */
export async function measureLag(
  tool: ToolName,
  phases: Phase[],
  payloadBytes = 100,
): Promise<PhaseLags[]> {
  return await withTempDir(`lag-${tool}`, async (dir) => {
    const dbPath = join(dir, "app.db");
    const replicaDir = join(dir, "replica");
    createBenchDatabase(dbPath);
    const watcher = await watchReplica(replicaDir);
    const replicator = await startReplicator(tool, dbPath, { type: "file", dir: replicaDir }, dir);
    const runs: WriterRun[] = [];
    const cpu: number[] = [];
    try {
      if (!(await until(() => watcher.seen.size > 0, 30_000))) {
        throw new Error(`${tool} wrote nothing to its replica within 30 s`);
      }
      await sleep(500);
      let firstK = 1;
      for (const [i, phase] of phases.entries()) {
        const cpuBefore = treeCpuSeconds(replicator.pid);
        const run = await runWriter({ db: dbPath, ...phase, payloadBytes, firstK });
        runs.push(run);
        firstK += run.committed;
        // Lets the last transactions arrive (Litestream: monitor 1 s + sync interval 1 s).
        await sleep(i === phases.length - 1 ? 3000 : 1000);
        cpu.push(treeCpuSeconds(replicator.pid) - cpuBefore);
      }
    } finally {
      const stderr = await replicator.stop();
      await watcher.stop();
      if (runs.length < phases.length) progress(`${tool} stderr: ${stderr}`);
    }
    const arrival = new Map<number, number>();
    for (const { path, at } of byArrival(watcher.seen)) {
      const found = new Set<number>();
      try {
        await scanFileMarkers(path, found);
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) continue; // removed by retention
        throw err;
      }
      for (const k of found) if (!arrival.has(k)) arrival.set(k, at);
    }
    return runs.map((run, i) => {
      const lags: number[] = [];
      let missing = 0;
      run.times.forEach((committedAt, index) => {
        const at = arrival.get(run.firstK + index);
        if (at === undefined) missing++;
        else lags.push(at - committedAt);
      });
      return { rate: phases[i].rate, lags, missing, cpuPer1000: (cpu[i] / run.committed) * 1000 };
    });
  });
}

/** The lag figures (p50 and p99 at each rate). */
export async function run(options: BenchOptions): Promise<BenchResult[]> {
  const phases: Phase[] = options.quick
    ? [{ rate: 3, seconds: 5 }, { rate: 100, seconds: 2 }, { rate: 1000, seconds: 2 }]
    : [{ rate: 3, seconds: 30 }, { rate: 100, seconds: 8 }, { rate: 1000, seconds: 8 }];
  progress("lag: sluice");
  const sluice = await measureLag("sluice", phases);
  progress("lag: litestream");
  let litestream: PhaseLags[] | undefined;
  let failure: string | undefined;
  try {
    litestream = await measureLag("litestream", phases);
  } catch (err) {
    failure = `Litestream not measured: ${(err as Error).message}`;
  }
  const results: BenchResult[] = [];
  for (const [i, phase] of phases.entries()) {
    const s = sluice[i];
    const l = litestream?.[i];
    const missing = [
      s.missing ? `sluice: ${s.missing} of ${s.lags.length + s.missing} tx not found` : "",
      l?.missing ? `Litestream: ${l.missing} of ${l.lags.length + l.missing} tx not found` : "",
    ].filter(Boolean).join("; ");
    const note = [failure, missing].filter(Boolean).join("; ") || undefined;
    for (const q of [0.5, 0.99]) {
      results.push(result(
        `lag p${q * 100} @ ${phase.rate} writes/s (${s.lags.length} tx)`,
        "ms",
        percentile(s.lags, q),
        l ? percentile(l.lags, q) : NaN,
        LITESTREAM,
        note,
      ));
    }
  }
  for (const [i, phase] of phases.entries()) {
    if (phase.rate < 100) continue;
    results.push(result(
      `CPU per 1,000 tx @ ${phase.rate} writes/s`,
      "s",
      sluice[i].cpuPer1000,
      litestream?.[i].cpuPer1000 ?? NaN,
      LITESTREAM,
      failure,
    ));
  }
  return results;
}

if (import.meta.main) {
  console.log(formatTable(await run({ quick: Deno.args.includes("--quick") })));
}
