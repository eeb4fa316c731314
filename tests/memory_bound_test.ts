/**
 * Memory is bounded by design, not by database size (issue 15, item 3): `sluice snapshot` and
 * `sluice restore` of a ~256 MiB database run as real processes while their peak RSS (VmHWM
 * of /proc/<pid>/status) is sampled, and the restore must equal the source byte for byte. The
 * issue's target is 150 MB for 1 GiB (a bench row); the bound here is generous for a shared
 * 2-core runner. A second test restores in this process with a 5 ms timer running: the codec
 * works on a worker, so the event loop stays responsive (the bound of tests/event_loop_test.ts).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ROOT } from "./_sluice.ts";
import { FileReplicaClient } from "../src/replica/mod.ts";
import { restore } from "../src/restore/mod.ts";
import { runningWorkers } from "../src/pipeline/mod.ts";

const MIB = 1 << 20;
const DATABASE_BYTES = 256 * MIB;
/**
 * Peak RSS allowed for a snapshot of the 256 MiB database. Measured: 140–165 MB. A process
 * that held the database would need more than 330 MB.
 */
const RSS_LIMIT_BYTES = 220 * 1e6;
/**
 * Peak RSS allowed for a restore of it. Measured: 125–141 MB since the decoder writes pages
 * into reused buffers (175–180 MB before, when every page was a fresh array); most of it is
 * the runtime (72 MB for `sluice restore --help`) and the codec worker's isolate.
 */
const RESTORE_RSS_LIMIT_BYTES = 180 * 1e6;
/** The bound of tests/event_loop_test.ts: 50 ms plus the shared runner's scheduling noise. */
const STALL_LIMIT_MS = 150;

/** Builds a WAL-mode database of about `bytes` of random blobs in another process, checkpointed. */
async function buildDatabase(path: string, bytes: number): Promise<void> {
  const script = `
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA page_size = 4096")
db.execute("PRAGMA journal_mode = wal")
db.execute("PRAGMA synchronous = off")
db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload BLOB)")
written = 0
while written < int(sys.argv[2]):
    db.execute("BEGIN")
    for _ in range(128):
        db.execute("INSERT INTO t (payload) VALUES (randomblob(65536))")
    db.execute("COMMIT")
    written += 128 * 65536
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
db.close()
`;
  await runOK("python3", ["-c", script, path, String(bytes)]);
}

/** Checkpoints what sluice left in the WAL (its helper tables) into the database file. */
async function checkpoint(path: string): Promise<void> {
  await runOK("python3", [
    "-c",
    "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); " +
    "db.execute('PRAGMA wal_checkpoint(TRUNCATE)'); db.close()",
    path,
  ]);
}

async function runOK(command: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(command, { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${command} failed (${out.code}): ${new TextDecoder().decode(out.stderr)}`);
  }
}

/**
 * Runs `sluice <args>` as a process and returns its peak RSS in bytes, as the kernel kept it
 * (`ru_maxrss` of the reaped child, through python3's `resource`): exact, where sampling
 * `/proc/<pid>/status` can miss a short peak, and reads whatever process holds the pid once the
 * child is gone (a CI run once reported 1.5 GB for a restore that measures 111 MB every time
 * here, alone and under CPU and disk load).
 */
async function peakRSS(...args: string[]): Promise<number> {
  const script = "import resource, subprocess, sys\n" +
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n" +
    "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n";
  const out = await new Deno.Command("python3", {
    args: ["-c", script, Deno.execPath(), "run", "-A", join(ROOT, "main.ts"), ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const [code, maxKB] = new TextDecoder().decode(out.stdout).trim().split(" ").map(Number);
  assert.equal(
    code,
    0,
    `sluice ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`,
  );
  assert.ok(maxKB > 0, `no peak RSS for sluice ${args.join(" ")}`);
  return maxKB * 1024;
}

/** Whether two files have the same bytes, compared 1 MiB at a time. */
async function sameBytes(a: string, b: string): Promise<boolean> {
  const [fa, fb] = await Promise.all([Deno.open(a), Deno.open(b)]);
  try {
    if ((await fa.stat()).size !== (await fb.stat()).size) return false;
    const ba = new Uint8Array(MIB);
    const bb = new Uint8Array(MIB);
    for (;;) {
      const [na, nb] = await Promise.all([readFull(fa, ba), readFull(fb, bb)]);
      if (na !== nb) return false;
      if (na === 0) return true;
      for (let i = 0; i < na; i++) if (ba[i] !== bb[i]) return false;
    }
  } finally {
    fa.close();
    fb.close();
  }
}

async function readFull(file: Deno.FsFile, buffer: Uint8Array): Promise<number> {
  let at = 0;
  while (at < buffer.length) {
    const n = await file.read(buffer.subarray(at));
    if (n === null) break;
    at += n;
  }
  return at;
}

/** A ~256 MiB database and a snapshot of it in a file replica, shared by the tests below. */
let fixture: Promise<{ dir: string; dbPath: string; replica: string }> | undefined;
function sharedFixture(): Promise<{ dir: string; dbPath: string; replica: string }> {
  fixture ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "sluice-memory-" });
    const dbPath = join(dir, "big.db");
    await buildDatabase(dbPath, DATABASE_BYTES);
    return { dir, dbPath, replica: join(dir, "replica") };
  })();
  return fixture;
}

const canRun = Deno.build.os === "linux";

Deno.test({
  name: "memory: snapshot and restore of a 256 MiB database stay under the RSS bound",
  ignore: !canRun,
  async fn() {
    const { dir, dbPath, replica } = await sharedFixture();
    const snapshotPeak = await peakRSS("snapshot", dbPath, `file://${replica}`);
    const out = join(dir, "restored.db");
    const restorePeak = await peakRSS(
      "restore",
      "--integrity-check",
      "quick",
      "-o",
      out,
      `file://${replica}`,
    );
    console.log(
      `peak RSS: snapshot ${(snapshotPeak / 1e6).toFixed(0)} MB, restore ` +
        `${(restorePeak / 1e6).toFixed(0)} MB (database ${DATABASE_BYTES / MIB} MiB)`,
    );
    // The snapshot added sluice's helper tables to the WAL; with them in the file, the source
    // must equal the restored database byte for byte.
    await checkpoint(dbPath);
    assert.ok(await sameBytes(dbPath, out), "the restored database differs from the source");
    await Deno.remove(out);
    assert.ok(snapshotPeak < RSS_LIMIT_BYTES, `snapshot peaked at ${snapshotPeak} bytes`);
    assert.ok(restorePeak < RESTORE_RSS_LIMIT_BYTES, `restore peaked at ${restorePeak} bytes`);
  },
});

Deno.test({
  name: "memory: a large restore leaves the event loop responsive and stops its workers",
  ignore: !canRun,
  async fn() {
    const { dir, dbPath, replica } = await sharedFixture();
    try {
      if (!(await Deno.stat(join(replica, "ltx")).catch(() => undefined))) {
        await runOK(Deno.execPath(), [
          "run",
          "-A",
          join(ROOT, "main.ts"),
          "snapshot",
          dbPath,
          `file://${replica}`,
        ]);
        await checkpoint(dbPath);
      }
      const out = join(dir, "in-process.db");
      const delays: number[] = [];
      let last = performance.now();
      const timer = setInterval(() => {
        const now = performance.now();
        delays.push(now - last - 5);
        last = now;
      }, 5);
      let result;
      try {
        result = await restore(new FileReplicaClient(replica), { outputPath: out });
      } finally {
        clearInterval(timer);
      }
      assert.equal(runningWorkers(), 0, "codec workers still running after the restore");
      const worst = Math.max(...delays);
      console.log(
        `restore of ${(result.bytes / MIB).toFixed(0)} MiB in-process: ${delays.length} ticks, ` +
          `worst timer delay ${worst.toFixed(1)} ms`,
      );
      assert.ok(await sameBytes(dbPath, out), "the restored database differs from the source");
      assert.ok(worst < STALL_LIMIT_MS, `the event loop stalled for ${worst.toFixed(1)} ms`);
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
