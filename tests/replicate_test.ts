/**
 * Live replication end to end: a writer process commits while `sluice replicate` runs; the
 * restore must equal the source, Litestream must restore the same bytes, and every restore at
 * an intermediate TXID must be a committed prefix.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  createDatabase,
  digest,
  replicaTXID,
  restoreTo,
  runWriter,
  startReplicate,
  waitFor,
} from "./_sluice.ts";
import { litestreamRestore, oracleAvailable } from "./_oracle.ts";
import { readLockHolder } from "../src/engine/mod.ts";

/** A restore at any TXID holds exactly the transactions 1..m of the writer. */
function assertCommittedPrefix(d: Awaited<ReturnType<typeof digest>>, where: string) {
  assert.equal(d.integrity, "ok", `${where}: integrity`);
  assert.equal(d.distinctN, d.maxN, `${where}: transactions 1..${d.maxN} all present`);
}

Deno.test("replicate: writer with large transactions → restore equals source, Litestream agrees", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-replicate-" });
  try {
    const dbPath = join(dir, "app.db");
    const replica = join(dir, "replica");
    createDatabase(dbPath);
    const sluice = startReplicate(dbPath, `file://${replica}`);
    await waitFor("first snapshot on the replica", async () => (await replicaTXID(replica)) >= 1);

    // Sample replica positions while the writer runs, to restore them afterwards.
    const samples: number[] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        samples.push(await replicaTXID(replica));
        await new Promise((r) => setTimeout(r, 150));
      }
    })();
    const summary = await runWriter(
      "--db",
      dbPath,
      "--rate",
      "300",
      "--count",
      "400",
      "--big-every",
      "150",
      "--big-pages",
      "1100",
    );
    sampling = false;
    await sampler;
    const stopped = await sluice.stop("SIGTERM");
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.equal(summary.busyErrors, 0, "the writer never saw SQLITE_BUSY");

    const restored = join(dir, "restored.db");
    await restoreTo(replica, restored);
    const [source, copy] = [await digest(dbPath), await digest(restored)];
    assert.equal(copy.integrity, "ok");
    assert.equal(copy.sha256, source.sha256, "restored rows equal the source's");
    assert.equal(copy.maxN, 400);

    // Litestream's own restore of the same replica is byte-identical to ours.
    if (oracleAvailable()) {
      const oracleOut = join(dir, "oracle.db");
      await litestreamRestore(replica, oracleOut);
      assert.deepEqual(await Deno.readFile(oracleOut), await Deno.readFile(restored));
    }

    // Restores at TXIDs seen during the run are committed prefixes, growing with the TXID.
    const txids = [...new Set(samples.filter((t) => t > 0))].sort((a, b) => a - b);
    assert.ok(txids.length >= 3, `sampled ${txids.length} replica positions`);
    let previous = -1;
    for (const txid of txids.slice(-6)) {
      const out = join(dir, `at-${txid}.db`);
      await restoreTo(replica, out, "--txid", txid.toString(16).padStart(16, "0"));
      const d = await digest(out);
      assertCommittedPrefix(d, `txid ${txid}`);
      assert.ok(d.maxN >= previous, `txid ${txid}: prefix does not shrink`);
      previous = d.maxN;
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("replicate: the application's own TRUNCATE checkpoints lose nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-truncate-" });
  try {
    const dbPath = join(dir, "app.db");
    const replica = join(dir, "replica");
    createDatabase(dbPath);
    const sluice = startReplicate(dbPath, `file://${replica}`);
    await waitFor("first snapshot", async () => (await replicaTXID(replica)) >= 1);
    await runWriter(
      "--db",
      dbPath,
      "--rate",
      "200",
      "--count",
      "200",
      "--checkpoint-mode",
      "random",
      "--checkpoint-every",
      "15",
      "--busy-timeout",
      "50",
    );
    const stopped = await sluice.stop();
    assert.equal(stopped.code, 0, stopped.stderr);
    const restored = join(dir, "restored.db");
    await restoreTo(replica, restored);
    assert.equal((await digest(restored)).sha256, (await digest(dbPath)).sha256);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("replicate: stopped while the app writes and checkpoints, then restarted", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-restart-" });
  try {
    const dbPath = join(dir, "app.db");
    const replica = join(dir, "replica");
    createDatabase(dbPath);
    let sluice = startReplicate(dbPath, `file://${replica}`);
    await waitFor("first snapshot", async () => (await replicaTXID(replica)) >= 1);
    await runWriter("--db", dbPath, "--rate", "0", "--count", "100");
    assert.equal((await sluice.stop()).code, 0);
    // While sluice is down: more writes, and checkpoints of every kind.
    await runWriter(
      "--db",
      dbPath,
      "--count",
      "150",
      "--checkpoint-mode",
      "random",
      "--checkpoint-every",
      "10",
    );
    const before = await replicaTXID(replica);
    sluice = startReplicate(dbPath, `file://${replica}`);
    await waitFor("catch-up after restart", async () => (await replicaTXID(replica)) > before);
    await runWriter("--db", dbPath, "--rate", "300", "--count", "100");
    assert.equal((await sluice.stop()).code, 0);
    const restored = join(dir, "restored.db");
    await restoreTo(replica, restored);
    const d = await digest(restored);
    assert.equal(d.maxN, 350);
    assert.equal(d.sha256, (await digest(dbPath)).sha256);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("replicate: SIGKILL mid-write and restart, 10 times, loses nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-kill-" });
  try {
    const dbPath = join(dir, "app.db");
    const replica = join(dir, "replica");
    createDatabase(dbPath);
    for (let cycle = 0; cycle < 10; cycle++) {
      const sluice = startReplicate(dbPath, `file://${replica}`);
      const writing = runWriter(
        "--db",
        dbPath,
        "--rate",
        "400",
        "--count",
        "60",
        "--big-every",
        cycle % 3 === 0 ? "30" : "0",
        "--big-pages",
        "300",
      );
      await new Promise((r) => setTimeout(r, 250 + ((cycle * 97) % 400)));
      await sluice.stop("SIGKILL");
      await writing;
    }
    const sluice = startReplicate(dbPath, `file://${replica}`);
    // Attached (its signal handlers are in place by then): SIGTERM means a final sync.
    await waitFor(
      "the last sluice to take the meta dir",
      async () => (await readLockHolder(join(dir, ".app.db-sluice")))?.pid === sluice.process.pid,
    );
    assert.equal((await sluice.stop()).code, 0);
    const restored = join(dir, "restored.db");
    await restoreTo(replica, restored);
    const d = await digest(restored);
    assert.equal(d.integrity, "ok");
    assert.equal(d.maxN, 600);
    assert.equal(d.sha256, (await digest(dbPath)).sha256);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("replicate: database replaced by mv, and restored from an older backup", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-replace-" });
  try {
    const dbPath = join(dir, "app.db");
    const replica = join(dir, "replica");
    createDatabase(dbPath);
    let sluice = startReplicate(dbPath, `file://${replica}`);
    await waitFor("first snapshot", async () => (await replicaTXID(replica)) >= 1);
    await runWriter("--db", dbPath, "--rate", "0", "--count", "50");
    // An older backup: a consistent copy taken now.
    const backup = join(dir, "backup.db");
    await restoreTo(replica, backup, "--integrity-check", "none");
    // Whatever the replica held at that moment (under load it may trail the writer by a few).
    const backupMaxN = (await digest(backup)).maxN;
    await runWriter("--db", dbPath, "--rate", "0", "--count", "50");

    // Replace the live file with another database (a copy of the backup plus new rows).
    const other = join(dir, "other.db");
    await Deno.copyFile(backup, other);
    await runWriter("--db", other, "--rate", "0", "--count", "20");
    {
      const { DatabaseSync } = await import("node:sqlite");
      const db = new DatabaseSync(other);
      db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
      db.close();
    }
    const replacement = (await digest(other)).sha256;
    await Deno.rename(other, dbPath);
    // The 1 s poll notices the new inode, sets the old WAL aside and snapshots the new file:
    // once the replica restores to it, the writes below go to a file sluice follows.
    let attempt = 0;
    await waitFor("the replacement's snapshot on the replica", async () => {
      const out = join(dir, `replaced-${attempt++}.db`);
      await restoreTo(replica, out, "--integrity-check", "none");
      return (await digest(out)).sha256 === replacement;
    }, 20_000);
    await runWriter("--db", dbPath, "--rate", "0", "--count", "10");
    const first = await sluice.stop();
    assert.equal(first.code, 0, first.stderr);
    let restored = join(dir, "restored-1.db");
    await restoreTo(replica, restored);
    assert.equal((await digest(restored)).sha256, (await digest(dbPath)).sha256);

    // Restored from an older backup while sluice is stopped: TXIDs keep increasing and the
    // replica then restores to the backup's contents plus what is written after.
    const before = await replicaTXID(replica);
    await Deno.copyFile(backup, dbPath);
    for (const suffix of ["-wal", "-shm"]) await Deno.remove(dbPath + suffix).catch(() => {});
    sluice = startReplicate(dbPath, `file://${replica}`);
    await waitFor(
      "the snapshot after the replica",
      async () => (await replicaTXID(replica)) > before,
    );
    await runWriter("--db", dbPath, "--rate", "0", "--count", "30");
    assert.equal((await sluice.stop()).code, 0);
    assert.ok((await replicaTXID(replica)) > before, "TXIDs continue after the replica's");
    restored = join(dir, "restored-2.db");
    await restoreTo(replica, restored);
    const d = await digest(restored);
    assert.equal(d.sha256, (await digest(dbPath)).sha256);
    assert.equal(d.maxN, backupMaxN + 30, "the backup's transactions plus the 30 after it");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
