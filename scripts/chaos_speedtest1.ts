/**
 * Campaign (e), SQLite's own benchmark as the application (issue 21 item 1): `speedtest1`
 * (the SQLite project's test/speedtest1.c, built by scripts/speedtest1.sh against Debian's
 * libsqlite3) runs test sets with VACUUM modes, big transactions, checkpoints and 64 KiB pages
 * on `app.db` while `sluice replicate app.db file://…` runs; then sluice gets SIGTERM.
 * Checked after every run: speedtest1 exited 0 (runs with a busy timeout; a run without one
 * may end in SQLITE_BUSY, counted as a note: issue 21 item 5), its database has the content
 * speedtest1 leaves without sluice (it is deterministic), sluice exited 0, the source
 * passes `integrity_check`, and both sluice's restore and Litestream's restore of the replica
 * have the source's content.
 *
 * The last variant runs several test sets; between two, speedtest1 drops every table of the
 * database, sluice's `_litestream_seq` and `_litestream_lock` included.
 *
 * speedtest1 deletes and recreates its database when it starts, so sluice is started once
 * the new database is in WAL mode: speedtest1 is paused (SIGSTOP) from then until sluice holds
 * its SHARED lock on the file, so that every run overlaps with sluice whatever the machine's
 * speed.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { litestreamRestore, oracleAvailable } from "../tests/_oracle.ts";
import {
  campaign,
  type CampaignResult,
  holdsSharedLock,
  type Log,
  replicaPosition,
  Rng,
  runSluice,
  sleep,
  type SluiceProcess,
  spawnSluice,
  until,
} from "./chaos_lib.ts";

/** Where scripts/speedtest1.sh puts the binary (SPEEDTEST1 overrides it). */
export function speedtest1Path(): string {
  const fromEnv = Deno.env.get("SPEEDTEST1");
  if (fromEnv) return fromEnv;
  const cache = Deno.env.get("SLUICE_CACHE_DIR") ??
    join(
      Deno.env.get("XDG_CACHE_HOME") ?? join(Deno.env.get("HOME") ?? "/tmp", ".cache"),
      "sluice",
    );
  return join(cache, "speedtest1", "speedtest1");
}

/** Why speedtest1 cannot run here, or undefined when it can. */
export function speedtest1Missing(): string | undefined {
  const path = speedtest1Path();
  try {
    if (Deno.statSync(path).isFile) return undefined;
  } catch { /* missing */ }
  return `${path} not built: run scripts/speedtest1.sh (needs apt-get with Debian's sqlite3 ` +
    "source package, libsqlite3-dev and gcc)";
}

/** speedtest1 options of the campaign's runs (each also gets `--journal wal`). */
export const SPEEDTEST1_VARIANTS: readonly (readonly string[])[] = [
  ["--size", "50", "--autovacuum"], // issue 21's command
  // Smaller sizes: with the lock bug, these corrupted the source every time; size 50 rarely.
  ["--size", "25", "--incrvacuum"],
  ["--size", "25", "--big-transactions"],
  ["--size", "25", "--checkpoint"],
  ["--size", "25", "--pagesize", "65536"],
  ["--size", "25", "--testset", "orm"],
  ["--size", "25", "--without-rowid", "--incrvacuum"],
  ["--size", "25", "--testset", "fp"],
  ["--size", "15", "--testset", "rtree"],
  ["--size", "20", "--testset", "main,orm,fp", "--autovacuum", "--big-transactions"],
];

/** The logical content of a database and its `integrity_check`. */
export interface ContentDigest {
  /** `ok`, or the first lines `integrity_check` (or opening the file) reported. */
  integrity: string;
  /** Tables hashed (virtual tables' shadow tables included, sluice's own excluded). */
  tables: number;
  rows: number;
  /** SHA-256 over the schema and every row of every table, values with their types. */
  sha256: string;
}

/** A LIKE pattern (with its ESCAPE) matching the names of sluice's own tables. */
const OURS = "'\\_litestream\\_%' ESCAPE '\\'";

/**
 * Hashes the schema and every row of every table of `path` (read-only), so two databases
 * compare by content whatever their page layout. sluice's own tables (`_litestream_*`, and
 * their rows in `sqlite_stat*` when the application ran ANALYZE) are left out: they are
 * sluice's bookkeeping, and a sequence bump it writes after its final sync is not the
 * application's content. A file SQLite cannot read yields its error as `integrity`.
 */
export function contentDigest(path: string): ContentDigest {
  let db: DatabaseSync | undefined;
  try {
    db = new DatabaseSync(path, { readOnly: true });
    const problems = db.prepare("PRAGMA integrity_check(20)").all()
      .map((row) => String((row as { integrity_check: string }).integrity_check));
    const integrity = problems.join("; ");
    const hash = createHash("sha256");
    const schema = db.prepare(
      "SELECT type, name, tbl_name, sql FROM sqlite_schema " +
        `WHERE name NOT LIKE ${OURS} ORDER BY type, name`,
    ).all() as { type: string; name: string; tbl_name: string; sql: string | null }[];
    let tables = 0;
    let rows = 0;
    for (const entry of schema) {
      hash.update(`${entry.type}\0${entry.name}\0${entry.tbl_name}\0${entry.sql ?? ""}\0`);
      if (entry.type !== "table" || /^CREATE VIRTUAL/i.test(entry.sql ?? "")) continue;
      tables++;
      const name = `"${entry.name.replaceAll('"', '""')}"`;
      // ANALYZE also describes sluice's tables: not the application's statistics.
      const where = /^sqlite_stat[0-9]$/.test(entry.name) ? ` WHERE tbl NOT LIKE ${OURS}` : "";
      let select;
      try {
        select = db.prepare(`SELECT * FROM ${name}${where} ORDER BY rowid`);
      } catch { // WITHOUT ROWID: a scan is in primary key order
        select = db.prepare(`SELECT * FROM ${name}${where}`);
      }
      select.setReadBigInts(true);
      for (const row of select.iterate()) {
        rows++;
        for (const value of Object.values(row as Record<string, unknown>)) hashValue(hash, value);
        hash.update("\n");
      }
    }
    return { integrity, tables, rows, sha256: hash.digest("hex") };
  } catch (err) {
    return { integrity: (err as Error).message, tables: 0, rows: 0, sha256: "" };
  } finally {
    db?.close();
  }
}

function hashValue(hash: ReturnType<typeof createHash>, value: unknown): void {
  if (value === null) hash.update("n;");
  else if (typeof value === "bigint") hash.update(`i${value};`);
  else if (typeof value === "number") hash.update(`f${Object.is(value, -0) ? "-0" : value};`);
  else if (typeof value === "string") hash.update(`s${value.length}:${value};`);
  else if (value instanceof Uint8Array) {
    hash.update(`b${value.length}:`);
    hash.update(value);
  } else throw new Error(`unexpected SQLite value ${String(value)}`);
}

/** Options of {@linkcode runSpeedtest1}. */
export interface Speedtest1RunOptions {
  /** An empty directory: the database, the replica and the restores go there. */
  dir: string;
  /** speedtest1 options (besides `--journal wal` and the database). */
  args: readonly string[];
  /** Busy timeout speedtest1 sets, ms (0: none, as upstream's speedtest1). */
  busyTimeoutMs: number;
  /** Wait after speedtest1 exits, before sluice's SIGTERM, ms. Default 500. */
  settleMs?: number;
  /** Also restore with Litestream (when available). Default true. */
  litestream?: boolean;
  /** Pause speedtest1 until sluice holds its lock (see the module documentation). Default true. */
  pause?: boolean;
  /**
   * The content speedtest1 leaves without sluice ({@linkcode speedtest1Reference}): when
   * speedtest1 exits 0, the source must have it (speedtest1's data is deterministic).
   */
  expected?: ContentDigest;
}

/** What one run found. */
export interface Speedtest1RunResult {
  /** speedtest1's exit code and, when not 0, its last output line. */
  speedtestCode: number;
  speedtestError?: string;
  /** speedtest1 failed with SQLITE_BUSY ("database is locked"). */
  busy: boolean;
  sluiceCode: number;
  /** The problems found; empty when the run passed. */
  failures: string[];
  source: ContentDigest;
  /** TXID of the replica after the run. */
  txid: number;
  /** Whether Litestream's restore was compared. */
  litestreamChecked: boolean;
  durationMs: number;
  /** sluice's stderr (for failure reports). */
  sluiceLog: string;
}

/**
 * Runs speedtest1 with `args` alone (no sluice) in `dir` and returns the content it leaves.
 * @throws Error when speedtest1 fails.
 */
export async function speedtest1Reference(
  args: readonly string[],
  dir: string,
): Promise<ContentDigest> {
  const dbPath = join(dir, "reference.db");
  const out = await new Deno.Command(speedtest1Path(), {
    args: ["--journal", "wal", ...args, dbPath],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(
      `speedtest1 ${args.join(" ")} failed alone (${out.code}): ${
        new TextDecoder().decode(out.stderr).trim()
      }`,
    );
  }
  const digest = contentDigest(dbPath);
  for (const suffix of ["", "-wal", "-shm"]) await Deno.remove(dbPath + suffix).catch(() => {});
  if (digest.integrity !== "ok") throw new Error(`speedtest1 alone: ${digest.integrity}`);
  return digest;
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

/**
 * One run: speedtest1 on `dir/app.db` while sluice replicates it to `dir/replica`, then the
 * checks of the module documentation. Never throws for a failed check: the result lists them.
 * @throws Error when speedtest1 is not built or a process cannot be started.
 */
export async function runSpeedtest1(options: Speedtest1RunOptions): Promise<Speedtest1RunResult> {
  const started = performance.now();
  const { dir } = options;
  const dbPath = join(dir, "app.db");
  const replica = join(dir, "replica");
  const failures: string[] = [];
  const env: Record<string, string> = {};
  if (options.busyTimeoutMs > 0) env.SPEEDTEST1_BUSY_TIMEOUT = String(options.busyTimeoutMs);
  const app = new Deno.Command(speedtest1Path(), {
    args: ["--journal", "wal", ...options.args, dbPath],
    cwd: dir,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const appOutput = app.output();
  let sluice: SluiceProcess | undefined;
  let paused = false;
  try {
    let exited = false;
    appOutput.then(() => exited = true, () => exited = true);
    await until(
      "speedtest1 to put app.db in WAL mode",
      async () => exited || await exists(`${dbPath}-wal`),
      20_000,
      2,
    );
    if (!exited) {
      const pause = options.pause ?? true;
      if (pause) app.kill("SIGSTOP");
      paused = pause;
      sluice = spawnSluice(["replicate", dbPath, `file://${replica}`]);
      const s = sluice;
      // sluice's read connection gets its SHARED lock even while speedtest1 (paused) holds
      // the write lock; its first snapshot waits for speedtest1 to go on.
      await until(
        "sluice to hold its lock on app.db",
        async () =>
          await holdsSharedLock(s.pid, dbPath) ||
          await replicaPosition({ type: "file", path: replica }) > 0,
        30_000,
        10,
      ).catch((err) => failures.push(`${(err as Error).message}; sluice log: ${s.stderr()}`));
      if (pause) app.kill("SIGCONT");
      paused = false;
    }
    const out = await appOutput;
    if (!sluice) {
      failures.push("speedtest1 exited before it wrote anything (no WAL): nothing tested");
    }
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    const lastLine = text.trim().split("\n").filter((l) => !/^\s*$/.test(l)).pop() ?? "";
    const busy = !out.success && /database is locked|SQLITE_BUSY/i.test(text);
    if (!out.success && !(busy && options.busyTimeoutMs === 0)) {
      failures.push(`speedtest1 exited ${out.code}: ${lastLine}`);
    }
    await sleep(options.settleMs ?? 500);
    let sluiceCode = -1;
    let sluiceLog = "";
    if (sluice) {
      const stopped = await sluice.stop("SIGTERM");
      sluiceCode = stopped.code;
      sluiceLog = stopped.stderr;
      if (stopped.code !== 0) failures.push(`sluice exited ${stopped.code} on SIGTERM`);
    }
    const source = contentDigest(dbPath);
    if (source.integrity !== "ok") failures.push(`source integrity_check: ${source.integrity}`);
    else if (options.expected && out.success && source.sha256 !== options.expected.sha256) {
      failures.push(
        `the application's database lost data: its content (${source.tables} tables, ` +
          `${source.rows} rows) differs from speedtest1's without sluice ` +
          `(${options.expected.tables} tables, ${options.expected.rows} rows)`,
      );
    }
    const spec = { type: "file" as const, path: replica };
    const txid = await replicaPosition(spec);
    const restoredPath = join(dir, "restored.db");
    const restored = await runSluice(["restore", "-o", restoredPath, `file://${replica}`]);
    if (restored.code !== 0) {
      failures.push(`sluice restore exited ${restored.code}: ${restored.stderr.trim()}`);
    } else {
      const copy = contentDigest(restoredPath);
      if (copy.integrity !== "ok") failures.push(`sluice's restore: ${copy.integrity}`);
      else if (copy.sha256 !== source.sha256) {
        failures.push(
          `sluice's restore (TXID ${txid}, ${copy.tables} tables, ${copy.rows} rows) differs ` +
            `from the source (${source.tables} tables, ${source.rows} rows)`,
        );
      }
    }
    let litestreamChecked = false;
    if ((options.litestream ?? true) && oracleAvailable()) {
      const oraclePath = join(dir, "litestream.db");
      try {
        await litestreamRestore(replica, oraclePath, { timeoutMs: 120_000 });
        const copy = contentDigest(oraclePath);
        litestreamChecked = true;
        if (copy.integrity !== "ok") failures.push(`Litestream's restore: ${copy.integrity}`);
        else if (copy.sha256 !== source.sha256) {
          failures.push(
            `Litestream's restore (${copy.tables} tables, ${copy.rows} rows) differs from the ` +
              `source (${source.tables} tables, ${source.rows} rows)`,
          );
        }
      } catch (err) {
        failures.push(`Litestream's restore failed: ${(err as Error).message.split("\n")[0]}`);
      }
    }
    return {
      speedtestCode: out.code,
      speedtestError: out.success ? undefined : lastLine,
      busy,
      sluiceCode,
      failures,
      source,
      txid,
      litestreamChecked,
      durationMs: Math.round(performance.now() - started),
      sluiceLog,
    };
  } finally {
    try {
      if (paused) app.kill("SIGCONT");
      app.kill("SIGKILL");
    } catch { /* exited */ }
    await appOutput.catch(() => {});
    await sluice?.stop("SIGKILL");
  }
}

/** Options of {@linkcode speedtest1Campaign}. */
export interface Speedtest1CampaignOptions {
  /** Runs; run i uses variant i mod {@linkcode SPEEDTEST1_VARIANTS}'s length. */
  runs: number;
  seed: number;
  log: Log;
}

/**
 * Runs speedtest1 `runs` times (each in its own directory, removed when it passed). Every
 * third run (the 3rd, 6th, …) uses no busy timeout, as upstream's speedtest1; the others a 5 s
 * one (so the multi-test-set variant, the 10th, runs to its end).
 */
export function speedtest1Campaign(options: Speedtest1CampaignOptions): Promise<CampaignResult> {
  const { runs, log } = options;
  return campaign("speedtest1", log, async (notes) => {
    const missing = speedtest1Missing();
    if (missing) {
      notes.push(`skipped: ${missing}`);
      log(`[speedtest1] skipped: ${missing}`);
      return "skipped";
    }
    const rng = new Rng(options.seed);
    const root = await Deno.makeTempDir({ prefix: "sluice-chaos-speedtest1-" });
    const references = new Map<string, ContentDigest>();
    let busy = 0;
    let busyRuns = 0;
    let oracle = 0;
    const failed: string[] = [];
    for (let i = 0; i < runs; i++) {
      const args = SPEEDTEST1_VARIANTS[i % SPEEDTEST1_VARIANTS.length];
      const busyTimeoutMs = i % 3 === 2 ? 0 : 5000;
      const dir = join(root, `run-${i + 1}`);
      await Deno.mkdir(dir);
      const key = args.join(" ");
      if (!references.has(key)) references.set(key, await speedtest1Reference(args, root));
      const result = await runSpeedtest1({
        dir,
        args,
        busyTimeoutMs,
        expected: references.get(key),
        settleMs: rng.int(0, 2000),
      });
      if (busyTimeoutMs === 0) busyRuns++;
      if (result.busy) busy++;
      if (result.litestreamChecked) oracle++;
      const what = `run ${i + 1}/${runs} (${args.join(" ")}, busy timeout ${busyTimeoutMs} ms)`;
      if (result.failures.length > 0) {
        failed.push(`${what}: ${result.failures.join("; ")} (kept ${dir})`);
        await Deno.writeTextFile(join(dir, "sluice.log"), result.sluiceLog);
      } else {
        await Deno.remove(dir, { recursive: true });
      }
      log(
        `[speedtest1] ${what}: ${
          result.failures.length ? "FAIL " + result.failures.join("; ") : "ok"
        } ` +
          `(speedtest1 ${result.busy ? "SQLITE_BUSY" : `exit ${result.speedtestCode}`}, ` +
          `TXID ${result.txid}, ${result.source.tables} tables, ${result.source.rows} rows, ` +
          `${(result.durationMs / 1000).toFixed(1)} s)`,
      );
    }
    notes.push(
      `${runs} runs: source intact and sluice's restore = source in ${runs - failed.length}; ` +
        `Litestream's restore compared in ${oracle}; speedtest1 without busy timeout ended in ` +
        `SQLITE_BUSY in ${busy} of ${busyRuns} (issue 21 item 5)`,
    );
    if (failed.length > 0) {
      throw new Error(`${failed.length} of ${runs} runs failed:\n${failed.join("\n")}`);
    }
    await Deno.remove(root, { recursive: true });
    return `${runs} runs`;
  });
}
