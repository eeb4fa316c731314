/**
 * `sluice snapshot` and `sluice restore` of a large database to and from a file replica, as
 * throughput against `cp` of the same database file in the same run (goal: within 2x, i.e. a
 * ratio of at least 0.5).
 *
 *   deno run -A scripts/bench/snapshot_restore.ts [--quick]   # 1 GiB; --quick: 64 MiB
 *
 * The database is filled with rows of random (incompressible) blobs, the worst case for LZ4,
 * and checkpointed so every page is in the database file. Every figure is measured with a warm
 * page cache (the file is read once first), and each command runs as the user would run it: a
 * fresh `deno run` process of sluice (its start-up time included), `cp` as a process. `cp`
 * neither compresses nor fsyncs; sluice does both (snapshot: LZ4 + checksum + fsync + rename;
 * restore: decode + checksum verification + fsync + rename). Restore runs with
 * `--integrity-check none`, so it does the same amount of work as the copy it is compared to.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { type BenchOptions, type BenchResult, progress, result, ROOT } from "./_common.ts";

const MIB = 1 << 20;

/** Runs the benchmark; returns the snapshot and restore rows. */
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

    const cpSeconds: number[] = [];
    const snapshotSeconds: number[] = [];
    const restoreSeconds: number[] = [];
    for (let i = 0; i < repeats; i++) {
      const copy = join(dir, `copy-${i}.db`);
      cpSeconds.push(await timed("cp", [dbPath, copy]));
      await Deno.remove(copy);

      // A fresh replica each time: the snapshot is the first one (no meta dir, no L0 yet).
      const replica = join(dir, `replica-${i}`);
      await Deno.remove(join(dir, ".big.db-sluice"), { recursive: true }).catch(() => {});
      snapshotSeconds.push(
        await timed(Deno.execPath(), [
          "run",
          "-A",
          join(ROOT, "main.ts"),
          "snapshot",
          dbPath,
          `file://${replica}`,
        ]),
      );
      const out = join(dir, `restored-${i}.db`);
      restoreSeconds.push(
        await timed(Deno.execPath(), [
          "run",
          "-A",
          join(ROOT, "main.ts"),
          "restore",
          "--integrity-check",
          "none",
          "-o",
          out,
          `file://${replica}`,
        ]),
      );
      // sluice adds its two small helper tables on the first snapshot: a page or two more.
      const restoredSize = (await Deno.stat(out)).size;
      if (restoredSize < size || restoredSize > size + 4 * 4096) {
        throw new Error(`restore produced ${restoredSize} bytes, expected about ${size}`);
      }
      await Deno.remove(out);
      await Deno.remove(replica, { recursive: true });
      progress(
        `snapshot_restore: run ${i + 1}: cp ${cpSeconds[i].toFixed(2)} s, snapshot ` +
          `${snapshotSeconds[i].toFixed(2)} s, restore ${restoreSeconds[i].toFixed(2)} s`,
      );
    }
    const best = (values: number[]) => Math.min(...values);
    const cpRate = mb / best(cpSeconds);
    const label = `${Math.round(size / MIB)} MiB`;
    const note = "best of " + repeats + ", warm cache, process start-up included; cp does not " +
      "fsync, sluice compresses/verifies and fsyncs";
    return [
      result(
        `snapshot ${label} to file replica`,
        "MB/s",
        mb / best(snapshotSeconds),
        cpRate,
        "cp",
        note,
      ),
      result(
        `restore ${label} from file replica`,
        "MB/s",
        mb / best(restoreSeconds),
        cpRate,
        "cp",
        note,
      ),
    ];
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** A WAL-mode database of about `targetBytes`, all pages checkpointed into the file. */
function buildDatabase(path: string, targetBytes: number): number {
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
async function warm(path: string): Promise<void> {
  const file = await Deno.open(path);
  try {
    const buffer = new Uint8Array(4 * MIB);
    while ((await file.read(buffer)) !== null) { /* read through */ }
  } finally {
    file.close();
  }
}

/** Runs a command to completion and returns its wall time in seconds. */
async function timed(command: string, args: string[]): Promise<number> {
  const started = performance.now();
  const out = await new Deno.Command(command, { args, stdout: "null", stderr: "piped" }).output();
  const seconds = (performance.now() - started) / 1000;
  if (!out.success) {
    throw new Error(
      `${command} ${args.join(" ")} failed (${out.code}): ${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return seconds;
}

if (import.meta.main) {
  const results = await run({ quick: Deno.args.includes("--quick") });
  console.log(JSON.stringify(results, null, 2));
}
