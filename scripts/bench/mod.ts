/**
 * The benchmark suite: runs every benchmark under scripts/bench/ one after the other, prints one
 * table (sluice's figure, the baseline's figure from the same run, their ratio) and writes it
 * with the machine's description to docs/BENCHMARKS.json.
 *
 *   deno task bench            # full: about 35 minutes on 2 cores (2,131 s on 2026-12-05)
 *   deno task bench --quick    # short steps: < 3 minutes, for development
 *   deno task bench --only=lag,scale   # a subset (does not write docs/BENCHMARKS.json)
 *   deno task bench --huge     # also scale's 100,000 parked databases (many minutes more)
 *
 * Progress goes to stderr, the table to stdout. A benchmark that fails contributes one `n/a` row
 * naming the error instead of stopping the suite.
 *
 * @module
 */

import { join } from "node:path";
import {
  type BenchModule,
  type BenchResult,
  formatTable,
  progress,
  result,
  ROOT,
} from "./_common.ts";
import { run as codec } from "./codec.ts";
import { run as lz4 } from "./lz4.ts";
import { run as lag } from "./lag.ts";
import { run as follow } from "./follow.ts";
import { run as throughput } from "./throughput.ts";
import { run as overhead } from "./overhead.ts";
import { run as scale } from "./scale.ts";
import { run as snapshotRestore } from "./snapshot_restore.ts";
import { run as verify } from "./verify.ts";
import { run as writeLock } from "./write_lock.ts";
import { run as age } from "./age.ts";

/** The benchmarks in the order they run (the cheap, CPU-only ones first). */
const BENCHES: [string, BenchModule][] = [
  ["codec", codec],
  ["lz4", lz4],
  ["lag", lag],
  ["follow", follow],
  ["throughput", throughput],
  ["overhead", overhead],
  ["write_lock", writeLock],
  ["snapshot_restore", snapshotRestore],
  ["verify", verify],
  ["age", age],
  ["scale", scale],
];

/** The machine, for the record. */
async function machine() {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const meminfo = await Deno.readTextFile("/proc/meminfo").catch(() => "");
  const memKB = Number(/MemTotal:\s+(\d+)/.exec(meminfo)?.[1] ?? NaN);
  return {
    nproc: navigator.hardwareConcurrency,
    cpu: /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1] ?? "unknown",
    memoryGiB: Math.round((memKB / 2 ** 20) * 10) / 10,
    kernel: Deno.osRelease(),
    deno: Deno.version.deno,
    loadAverage: Deno.loadavg(),
  };
}

if (import.meta.main) {
  const quick = Deno.args.includes("--quick");
  const only = Deno.args.find((a) => a.startsWith("--only="))?.slice(7).split(",");
  const started = performance.now();
  const before = await machine();
  const results: BenchResult[] = [];
  const timings: Record<string, number> = {};
  for (const [name, bench] of BENCHES) {
    if (only && !only.includes(name)) continue;
    const t0 = performance.now();
    try {
      results.push(...await bench({ quick, huge: Deno.args.includes("--huge") }));
    } catch (err) {
      progress(`${name} failed: ${(err as Error).stack ?? err}`);
      results.push(
        result(name, "", NaN, NaN, "", `${name} failed: ${(err as Error).message}`),
      );
    }
    timings[name] = Math.round((performance.now() - t0) / 100) / 10;
    progress(`${name}: ${timings[name]} s`);
  }
  const seconds = Math.round((performance.now() - started) / 1000);
  const table = formatTable(results);
  console.log(table);
  console.log(`\n${quick ? "quick" : "full"} run, ${seconds} s in all`);
  if (!only) {
    const report = {
      date: new Date().toISOString(),
      command: `deno task bench${quick ? " --quick" : ""}`,
      quick,
      seconds,
      secondsPerBench: timings,
      machine: { ...before, loadAverageAfter: Deno.loadavg() },
      results,
      table,
    };
    const path = join(ROOT, "docs", "BENCHMARKS.json");
    // NaN and Infinity are not JSON: they become null (n/a) and "Infinity".
    await Deno.writeTextFile(
      path,
      JSON.stringify(
        report,
        (_, v) => typeof v === "number" && !Number.isFinite(v) && !Number.isNaN(v) ? String(v) : v,
        2,
      ) + "\n",
    );
    progress(`wrote ${path}`);
  }
}
