/**
 * Shared pieces of the benchmark suite: the result type every bench module returns, the table
 * printer, statistics, and process measurements from /proc.
 *
 * @module
 */

import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { pathExists as exists } from "../../src/restore/mod.ts";

/** True when `path` exists (restore's helper). */
export { exists };

/** The project root. */
export const ROOT: string = fileURLToPath(new URL("../../", import.meta.url));

/** Options every bench module's `run` receives. */
export interface BenchOptions {
  /** Short steps and fewer repetitions (`deno task bench --quick`, < 3 minutes in all). */
  quick: boolean;
  /** Also the runs that take many minutes (scale: 100,000 parked databases; `--huge`). */
  huge?: boolean;
}

/**
 * One figure of the table: sluice's value beside the baseline's value from the same run.
 * `NaN` means "not measured" (printed as `n/a`; `note` says why).
 */
export interface BenchResult {
  /** What was measured, e.g. `lag p50 @ 3 writes/s`. */
  name: string;
  /** Unit of both values, e.g. `ms`, `MB/s`, `tx/s`. */
  unit: string;
  sluice: number;
  baseline: number;
  /** What the baseline is, e.g. `Litestream v0.3.13`, `cp`, `lz4-wasm`. */
  baselineName: string;
  /** `sluice / baseline` (NaN when either is missing). */
  ratio: number;
  note?: string;
}

/** The signature every bench module exports as `run`. */
export type BenchModule = (options: BenchOptions) => Promise<BenchResult[]>;

/** Builds a {@linkcode BenchResult}, computing the ratio. */
export function result(
  name: string,
  unit: string,
  sluice: number,
  baseline: number,
  baselineName: string,
  note?: string,
): BenchResult {
  const ratio = Number.isFinite(sluice) && Number.isFinite(baseline) && baseline !== 0
    ? sluice / baseline
    : NaN;
  return { name, unit, sluice, baseline, baselineName, ratio, ...(note ? { note } : {}) };
}

/** A number with about three significant digits; `n/a` for NaN, `∞` for Infinity. */
export function formatValue(value: number): string {
  if (Number.isNaN(value)) return "n/a";
  if (!Number.isFinite(value)) return value > 0 ? "∞" : "-∞";
  const abs = Math.abs(value);
  if (abs === 0) return "0";
  if (abs >= 1000) return Math.round(value).toString();
  if (abs >= 100) return value.toFixed(0);
  if (abs >= 10) return value.toFixed(1);
  if (abs >= 1) return value.toFixed(2);
  return value.toPrecision(2);
}

/** The results as one fixed-width text table (with notes under it, numbered). */
export function formatTable(results: BenchResult[]): string {
  const header = ["figure", "unit", "sluice", "baseline", "ratio", "baseline is"];
  const notes: string[] = [];
  const rows = results.map((r) => {
    let name = r.name;
    if (r.note) {
      let number = notes.indexOf(r.note) + 1;
      if (number === 0) number = notes.push(r.note);
      name += ` [${number}]`;
    }
    return [
      name,
      r.unit,
      formatValue(r.sluice),
      formatValue(r.baseline),
      Number.isNaN(r.ratio) ? "n/a" : `${r.ratio.toFixed(2)}x`,
      r.baselineName,
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const align = (cells: string[]) =>
    cells.map((c, i) => (i >= 2 && i <= 4 ? c.padStart(widths[i]) : c.padEnd(widths[i])))
      .join("  ").trimEnd();
  const lines = [align(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(align)];
  if (notes.length > 0) {
    lines.push("");
    notes.forEach((note, i) => lines.push(`[${i + 1}] ${note}`));
  }
  return lines.join("\n");
}

/** The `q` quantile (0…1) of `values` by nearest rank; NaN when empty. */
export function percentile(values: number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank];
}

/** Milliseconds since the Unix epoch with sub-millisecond resolution, comparable across processes. */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `fn` every `intervalMs` until it returns true; false after `timeoutMs`. */
export async function until(
  fn: () => boolean | Promise<boolean>,
  timeoutMs: number,
  intervalMs = 20,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) return false;
    await sleep(intervalMs);
  }
  return true;
}

/** Runs `fn` with a fresh temp dir that is removed afterwards. */
export async function withTempDir<T>(prefix: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: `sluice-bench-${prefix}-` });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ; 100 on every Linux build in use). */
const CLOCK_TICKS = 100;

interface ProcStat {
  pid: number;
  ppid: number;
  /** utime + stime in seconds. */
  cpuSeconds: number;
  rssBytes: number;
}

function readProcStat(pid: number): ProcStat | undefined {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // The command name (field 2) is in parentheses and may contain spaces.
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
    // fields[0] is field 3 (state): ppid = field 4, utime = 14, stime = 15, rss = 24 (pages).
    return {
      pid,
      ppid: Number(fields[1]),
      cpuSeconds: (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS,
      rssBytes: Number(fields[21]) * 4096,
    };
  } catch {
    return undefined;
  }
}

/** `pid` and all its living descendants. */
function processTree(pid: number): ProcStat[] {
  const all: ProcStat[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    const stat = readProcStat(Number(entry.name));
    if (stat) all.push(stat);
  }
  const inTree = new Set([pid]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const s of all) {
      if (!inTree.has(s.pid) && inTree.has(s.ppid)) {
        inTree.add(s.pid);
        grew = true;
      }
    }
  }
  return all.filter((s) => inTree.has(s.pid));
}

/**
 * CPU seconds (user + system) used so far by `pid` and its living descendants (sluice runs its
 * file watcher in a child process, so both count).
 */
export function treeCpuSeconds(pid: number): number {
  return processTree(pid).reduce((sum, s) => sum + s.cpuSeconds, 0);
}

/** Resident memory of `pid` and its living descendants, in bytes. */
export function treeRssBytes(pid: number): number {
  return processTree(pid).reduce((sum, s) => sum + s.rssBytes, 0);
}

/** A background process of the benchmark (a replicator). */
export interface Background {
  readonly pid: number;
  readonly name: string;
  /** SIGTERM (then SIGKILL after 10 s); resolves to the collected stderr tail. */
  stop(): Promise<string>;
}

/** Spawns `command args` with stdout discarded and the last 4 KiB of stderr kept. */
export function spawnBackground(
  name: string,
  command: string,
  args: string[],
  env?: Record<string, string>,
): Background {
  const child = new Deno.Command(command, {
    args,
    env,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let tail = "";
  const decoder = new TextDecoder();
  // SLUICE_BENCH_STDERR=FILE keeps every background process's whole stderr (appended), to read
  // what a replicator logged during a step.
  const keep = Deno.env.get("SLUICE_BENCH_STDERR");
  const reading = (async () => {
    const log = keep ? await Deno.open(keep, { append: true, create: true }) : undefined;
    try {
      for await (const chunk of child.stderr) {
        await log?.write(chunk);
        tail = (tail + decoder.decode(chunk)).slice(-4096);
      }
    } finally {
      log?.close();
    }
  })().catch(() => {});
  return {
    pid: child.pid,
    name,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* already exited */ }
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* exited */ }
      }, 10_000);
      await child.status;
      clearTimeout(timer);
      await reading;
      return tail;
    },
  };
}

/** Starts `sluice replicate <args>` from source (the same program as the compiled binary). */
export function startSluice(args: string[], env?: Record<string, string>): Background {
  return spawnBackground(
    "sluice",
    Deno.execPath(),
    ["run", "-A", ...sluiceDenoFlags(), join(ROOT, "main.ts"), "replicate", ...args],
    env,
  );
}

/**
 * Extra `deno run` flags for the sluice processes the benches start, from
 * `SLUICE_BENCH_DENO_FLAGS` (space-separated), to profile a row where it runs, e.g.
 * `SLUICE_BENCH_DENO_FLAGS="--cpu-prof --cpu-prof-dir=/tmp/prof"`.
 */
function sluiceDenoFlags(): string[] {
  return (Deno.env.get("SLUICE_BENCH_DENO_FLAGS") ?? "").split(" ").filter((flag) => flag !== "");
}

/** The Litestream release every comparison uses. */
export const LITESTREAM_PACKAGE = "@flydotio/litestream-linux-x64@1.0.1";
/** Its version, checked after installation. */
export const LITESTREAM_VERSION = "v0.3.13";
/** Baseline name used in the table. */
export const LITESTREAM = "Litestream v0.3.13";

let litestreamPath: Promise<string> | undefined;

/**
 * Path of the Litestream v0.3.13 binary: `$SLUICE_BENCH_LITESTREAM`, else installed once with
 * `npm install --prefix` into `$XDG_CACHE_HOME/sluice-bench` (default `~/.cache/sluice-bench`).
 * @throws Error when npm is missing or the binary is not v0.3.13.
 */
export function litestreamBinary(): Promise<string> {
  litestreamPath ??= installLitestream();
  return litestreamPath;
}

async function installLitestream(): Promise<string> {
  const fromEnv = Deno.env.get("SLUICE_BENCH_LITESTREAM");
  const cache = join(
    Deno.env.get("XDG_CACHE_HOME") ?? join(Deno.env.get("HOME") ?? "/tmp", ".cache"),
    "sluice-bench",
    "litestream-0.3.13",
  );
  const path = fromEnv ??
    join(cache, "node_modules", "@flydotio", "litestream-linux-x64", "litestream");
  if (!fromEnv && !(await exists(path))) {
    await Deno.mkdir(cache, { recursive: true });
    const out = await new Deno.Command("npm", {
      args: [
        "install",
        "--prefix",
        cache,
        "--no-save",
        "--no-package-lock",
        "--no-audit",
        "--no-fund",
        LITESTREAM_PACKAGE,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output().catch((err) => {
      throw new Error(`cannot run npm to install ${LITESTREAM_PACKAGE}: ${err.message}`);
    });
    if (!out.success) {
      throw new Error(
        `npm install ${LITESTREAM_PACKAGE} failed: ${new TextDecoder().decode(out.stderr)}`,
      );
    }
  }
  const version = await new Deno.Command(path, { args: ["version"], stdout: "piped" }).output();
  const text = new TextDecoder().decode(version.stdout).trim();
  if (text !== LITESTREAM_VERSION) {
    throw new Error(`${path} reports version ${text}, expected ${LITESTREAM_VERSION}`);
  }
  return path;
}

/** Starts `litestream replicate -config <configPath>` (v0.3.13). */
export async function startLitestream(configPath: string): Promise<Background> {
  return spawnBackground("litestream", await litestreamBinary(), [
    "replicate",
    "-config",
    configPath,
  ]);
}

/** The command line of one `sluice` run from this checkout: `[deno, "run", "-A", main.ts, ...args]`. */
export function sluiceCommand(...args: string[]): string[] {
  return [Deno.execPath(), "run", "-A", join(ROOT, "main.ts"), ...args];
}

/** One line on stderr about progress (the table goes to stdout). */
export function progress(message: string): void {
  console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}`);
}

/** What {@linkcode storageRoundTrip} measured (the `*_1gib.ts` scripts print it). */
export interface RoundTripFigures {
  databaseMB: number;
  snapshotSeconds: number;
  snapshotMBps: number;
  snapshotPeakRSSMB: number;
  restoreSeconds: number;
  restoreMBps: number;
  restorePeakRSSMB: number;
  /** `integrity_check` ok and every row of the restored file equal to the source's. */
  restoredEqualsSource: boolean;
}

/**
 * Builds a database of about `mib` MiB in `dir`, uploads it with `sluice snapshot DB url`,
 * restores it with `sluice restore -o … url` and compares the two files' content; the storage
 * behind `url` is the caller's (credentials in this process's environment are inherited).
 * Wall time, throughput and peak RSS (VmHWM) of each command are measured separately.
 * @throws Error when either command fails.
 */
export async function storageRoundTrip(
  dir: string,
  mib: number,
  url: string,
): Promise<RoundTripFigures> {
  // Loaded here: snapshot_restore.ts imports this module.
  const { buildDatabase, measure } = await import("./snapshot_restore.ts");
  const { digest } = await import("../../tests/_sluice.ts");
  const dbPath = join(dir, "big.db");
  progress(`building a ${mib} MiB database`);
  const size = buildDatabase(dbPath, mib * 1024 * 1024);
  progress("sluice snapshot");
  const snapshot = await measure(sluiceCommand("snapshot", dbPath, url));
  const out = join(dir, "restored.db");
  progress("sluice restore");
  const restore = await measure(
    sluiceCommand("restore", "-o", out, "--integrity-check", "none", url),
  );
  progress("comparing");
  const [source, restored] = [await digest(dbPath), await digest(out)];
  const mb = size / 1e6;
  const round = (x: number) => Math.round(x * 10) / 10;
  return {
    databaseMB: Math.round(mb),
    snapshotSeconds: round(snapshot.seconds),
    snapshotMBps: round(mb / snapshot.seconds),
    snapshotPeakRSSMB: Math.round(snapshot.peakBytes / 1e6),
    restoreSeconds: round(restore.seconds),
    restoreMBps: round(mb / restore.seconds),
    restorePeakRSSMB: Math.round(restore.peakBytes / 1e6),
    restoredEqualsSource: JSON.stringify(source) === JSON.stringify(restored) &&
      source.integrity === "ok",
  };
}
