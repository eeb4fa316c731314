/**
 * How much a replicator's checkpoints get in the application's way. A replicator takes the
 * database's write lock while it checkpoints (Litestream does, and sluice does for a shorter
 * step); an application that commits meanwhile waits (with a busy timeout) or fails with
 * SQLITE_BUSY (without one, as SQLite's own default).
 *
 * A Python writer commits 4 KiB rows back to back for a few seconds, so that the WAL crosses
 * the 1,000-page checkpoint threshold about once a second, in two variants:
 * - with a 5 s busy timeout: its commit latency p50/p99/max (ms);
 * - without a busy timeout: how many of its commits fail with "database is locked".
 * Each against no replicator (the baseline), sluice and Litestream v0.3.13, alternating rounds.
 *
 *   deno run -A scripts/bench/write_lock.ts [--quick]
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
  until,
  withTempDir,
} from "./_common.ts";
import { createBenchDatabase, startReplicator, type ToolName } from "./_replicators.ts";
import { watchReplica } from "./_watch.ts";

type Mode = "none" | ToolName;

interface WriterFigures {
  latenciesMs: number[];
  busy: number;
  committed: number;
}

const WRITER = `
import json, sqlite3, sys, time
db, seconds, timeout = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
c = sqlite3.connect(db, timeout=timeout, isolation_level=None)
lat, busy, end = [], 0, time.time() + seconds
while time.time() < end:
    t = time.perf_counter()
    try:
        c.execute("BEGIN IMMEDIATE")
        c.execute("INSERT INTO bench (k, payload) VALUES (1, randomblob(4000))")
        c.execute("COMMIT")
    except sqlite3.OperationalError as e:
        if "locked" not in str(e) and "busy" not in str(e):
            raise
        busy += 1
        if c.in_transaction:
            c.execute("ROLLBACK")
        continue
    lat.append((time.perf_counter() - t) * 1000)
print(json.dumps({"latenciesMs": lat, "busy": busy, "committed": len(lat)}))
`;

async function runPythonWriter(db: string, seconds: number, busyTimeoutS: number) {
  const out = await new Deno.Command("python3", {
    args: ["-c", WRITER, db, String(seconds), String(busyTimeoutS)],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`writer failed: ${new TextDecoder().decode(out.stderr)}`);
  return JSON.parse(new TextDecoder().decode(out.stdout)) as WriterFigures;
}

async function measure(mode: Mode, seconds: number, busyTimeoutS: number) {
  return await withTempDir(`write-lock-${mode}`, async (dir) => {
    const dbPath = join(dir, "app.db");
    const replicaDir = join(dir, "replica");
    createBenchDatabase(dbPath);
    let replicator: Background | undefined;
    if (mode !== "none") {
      const watcher = await watchReplica(replicaDir, 100);
      replicator = await startReplicator(mode, dbPath, { type: "file", dir: replicaDir }, dir);
      const ready = await until(() => watcher.seen.size > 0, 30_000);
      await watcher.stop();
      if (!ready) throw new Error(`${mode} wrote nothing to its replica within 30 s`);
    }
    try {
      return await runPythonWriter(dbPath, seconds, busyTimeoutS);
    } finally {
      await replicator?.stop();
    }
  });
}

/** The write-lock figures. */
export async function run(options: BenchOptions): Promise<BenchResult[]> {
  const seconds = options.quick ? 3 : 8;
  const rounds = options.quick ? 1 : 2;
  const waits: Record<Mode, number[]> = { none: [], sluice: [], litestream: [] };
  const busyShare: Record<Mode, number[]> = { none: [], sluice: [], litestream: [] };
  let failure: string | undefined;
  for (let i = 0; i < rounds; i++) {
    for (const mode of ["none", "sluice", "litestream"] as const) {
      progress(`write_lock: 4 KiB commits back to back, ${mode}, round ${i + 1}`);
      try {
        const patient = await measure(mode, seconds, 5);
        waits[mode].push(...patient.latenciesMs);
        const impatient = await measure(mode, seconds, 0);
        busyShare[mode].push(impatient.busy / Math.max(1, impatient.busy + impatient.committed));
      } catch (err) {
        if (mode !== "litestream") throw err;
        failure = `Litestream not measured: ${(err as Error).message}`;
      }
    }
  }
  const rows: BenchResult[] = [];
  for (const [label, q] of [["p50", 0.5], ["p99", 0.99], ["max", 1]] as const) {
    const none = percentile(waits.none, q);
    rows.push(
      result(
        `app commit ${label} with sluice (busy timeout 5 s)`,
        "ms",
        percentile(waits.sluice, q),
        none,
        "no replicator",
      ),
      result(
        `app commit ${label} with sluice vs Litestream`,
        "ms",
        percentile(waits.sluice, q),
        waits.litestream.length ? percentile(waits.litestream, q) : NaN,
        LITESTREAM,
        failure,
      ),
    );
  }
  const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / (values.length || 1);
  rows.push(
    result(
      "app commits failing SQLITE_BUSY (no busy timeout), %",
      "%",
      100 * mean(busyShare.sluice),
      busyShare.litestream.length ? 100 * mean(busyShare.litestream) : NaN,
      LITESTREAM,
      `no replicator: ${(100 * mean(busyShare.none)).toFixed(2)}%`,
    ),
  );
  return rows;
}

if (import.meta.main) {
  console.log(formatTable(await run({ quick: Deno.args.includes("--quick") })));
}
