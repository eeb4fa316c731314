/**
 * Overhead on the application: the bench writer's transactions per second (unthrottled, small
 * rows, its own process) with no replicator, with sluice replicating the database to a file
 * replica, and with Litestream v0.3.13 doing the same. The baseline is "no replicator".
 *
 * Runs alternate (none, sluice, Litestream, repeated) so slow drift on a shared machine hits all
 * three alike; each figure is the median of its runs. On 2 cores the writer and the replicator
 * compete for CPU, so this measures exactly what an application on a small machine would feel.
 *
 * Also CPU per 1,000 transactions at 100 writes/s with both tools at the same 1 s sync
 * interval (Litestream v0.3's default; sluice's own default for a directory is 100 ms, which
 * trades CPU for lag): the replicator's whole process tree, from /proc, the drain included, in
 * steady state (after a warm-up writer at the same rate, so one-time start-up costs such as
 * sluice's checkpoint worker are not charged to the 1,000 transactions). /proc counts CPU in
 * 10 ms ticks, a tenth of a 1,000-transaction figure, so each run is 20 s (2,000 transactions)
 * and the row is the median of three runs per tool.
 *
 *   deno run -A scripts/bench/overhead.ts [--quick]
 *
 * @module
 */

import { join } from "node:path";
import {
  type Background,
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
import { createBenchDatabase, runWriter, startReplicator, type ToolName } from "./_replicators.ts";
import { watchReplica } from "./_watch.ts";

type Mode = "none" | ToolName;

async function writerRate(mode: Mode, seconds: number): Promise<number> {
  return await withTempDir(`overhead-${mode}`, async (dir) => {
    const dbPath = join(dir, "app.db");
    const replicaDir = join(dir, "replica");
    createBenchDatabase(dbPath);
    let replicator: Background | undefined;
    if (mode !== "none") {
      const watcher = await watchReplica(replicaDir, 100);
      replicator = await startReplicator(mode, dbPath, { type: "file", dir: replicaDir }, dir);
      const ready = await until(() => watcher.seen.size > 0, 30_000);
      await watcher.stop();
      if (!ready) {
        throw new Error(
          `${mode} wrote nothing to its replica within 30 s; its log:\n${await replicator!.stop()}`,
        );
      }
      await sleep(500);
    }
    try {
      const run = await runWriter({ db: dbPath, rate: 0, seconds, payloadBytes: 100, firstK: 1 });
      return run.committed / run.seconds;
    } finally {
      await replicator?.stop();
    }
  });
}

/** Replicator CPU seconds per 1,000 tx of a 100 writes/s writer, both tools at a 1 s interval. */
async function cpuPer1000(
  tool: ToolName,
  seconds: number,
  warmUpSeconds: number,
): Promise<number> {
  return await withTempDir(`cpu-${tool}`, async (dir) => {
    const dbPath = join(dir, "app.db");
    const replicaDir = join(dir, "replica");
    createBenchDatabase(dbPath);
    const watcher = await watchReplica(replicaDir, 100);
    const replicator = await startReplicator(tool, dbPath, { type: "file", dir: replicaDir }, dir, {
      syncInterval: 1000,
    });
    try {
      const ready = await until(() => watcher.seen.size > 0, 30_000);
      await watcher.stop();
      if (!ready) {
        throw new Error(
          `${tool} wrote nothing to its replica within 30 s; its log:\n${await replicator.stop()}`,
        );
      }
      // Steady state, not start-up: the warm-up writes until each tool has checkpointed at
      // least once (1,000 WAL pages take 7–10 s at this rate), so sluice's checkpoint worker,
      // started once per process (~0.1 s of CPU), is not counted against 1,000 transactions.
      await runWriter({
        db: dbPath,
        rate: 100,
        seconds: warmUpSeconds,
        payloadBytes: 100,
        firstK: 1e6,
      });
      await sleep(1500);
      const before = treeCpuSeconds(replicator.pid);
      const run = await runWriter({ db: dbPath, rate: 100, seconds, payloadBytes: 100, firstK: 1 });
      await sleep(2500); // the last interval's sync and upload
      return ((treeCpuSeconds(replicator.pid) - before) / run.committed) * 1000;
    } finally {
      await replicator.stop();
    }
  });
}

/** The runs' figures in the order they ran, for the notes. */
function runs(values: number[], digits = 0): string {
  return values.map((v) => v.toFixed(digits)).join(" / ");
}

/** The overhead figures. */
export async function run(options: BenchOptions): Promise<BenchResult[]> {
  const seconds = options.quick ? 2 : 6;
  const cpuRounds = options.quick ? 1 : 3;
  const cpuSeconds = options.quick ? 5 : 20;
  // The writer's own rate swings by a third from run to run here (26,000–36,000 tx/s alone:
  // fsync and writeback timing), so its rows take the median of more runs than the CPU row.
  const writerRounds = options.quick ? 1 : 5;
  const rates: Record<Mode, number[]> = { none: [], sluice: [], litestream: [] };
  let failure: string | undefined;
  for (let i = 0; i < writerRounds; i++) {
    for (const mode of ["none", "sluice", "litestream"] as const) {
      progress(`overhead: writer alone vs with a replicator, ${mode}, round ${i + 1}`);
      try {
        rates[mode].push(await writerRate(mode, seconds));
      } catch (err) {
        if (mode !== "litestream") throw err;
        failure = `Litestream not measured: ${(err as Error).message}`;
      }
    }
  }
  const none = percentile(rates.none, 0.5);
  const cpu: Record<ToolName, number[]> = { sluice: [], litestream: [] };
  let cpuFailure: string | undefined;
  for (let i = 0; i < cpuRounds; i++) {
    for (const tool of ["sluice", "litestream"] as const) {
      progress(`overhead: CPU per 1,000 tx at 100 writes/s, 1 s interval, ${tool}, round ${i + 1}`);
      try {
        cpu[tool].push(await cpuPer1000(tool, cpuSeconds, options.quick ? 10 : 15));
      } catch (err) {
        if (tool !== "litestream") throw err;
        cpuFailure = `Litestream not measured: ${(err as Error).message}`;
      }
    }
  }
  return [
    result(
      "CPU per 1,000 tx @ 100 writes/s, both at 1 s sync interval",
      "s",
      percentile(cpu.sluice, 0.5),
      cpu.litestream.length ? percentile(cpu.litestream, 0.5) : NaN,
      LITESTREAM,
      cpuFailure ??
        `replicator process tree, drain included, after a warm-up writer (10–15 s) at the same ` +
          `rate, ${cpuSeconds} s per run, median of ${cpuRounds} run(s) (sluice ` +
          `${runs(cpu.sluice, 3)}, Litestream ${runs(cpu.litestream, 3)}); lower is better`,
    ),
    result(
      "writer tx/s with sluice (vs no replicator)",
      "tx/s",
      percentile(rates.sluice, 0.5),
      none,
      "no replicator",
      `unthrottled writer, small rows, synchronous=NORMAL, median of ${writerRounds} run(s) of ` +
        `${seconds} s, alternating; each run: ${runs(rates.sluice)} with sluice, ` +
        `${runs(rates.none)} alone`,
    ),
    result(
      "writer tx/s with Litestream (vs no replicator)",
      "tx/s",
      percentile(rates.litestream, 0.5),
      none,
      "no replicator",
      failure ??
        `same method; here the first column is Litestream v0.3.13, not sluice; each run: ` +
          runs(rates.litestream),
    ),
  ];
}

if (import.meta.main) {
  console.log(formatTable(await run({ quick: Deno.args.includes("--quick") })));
}
