/**
 * A TRUNCATE checkpoint that restarts the WAL needs no full snapshot when nothing was committed
 * that sluice had not synced (RELIABILITY F11, issue 15): the checkpoint worker takes the write
 * lock, sluice syncs to the WAL's end under it, and the worker gives the lock up and truncates
 * in one synchronous step, with `PRAGMA data_version` before and after to detect a commit that
 * slipped in. Before, every TRUNCATE that restarted the WAL was followed by an L0 file holding
 * the whole database.
 *
 * Three parts: the decision as a pure function; the SQLite facts it rests on (`data_version`
 * across our own ROLLBACK + TRUNCATE, and with another connection's commit on either side of
 * the checkpoint); and a real run: a writer in another process plus short-lived writers that
 * commit and exit, a `DB` whose small `truncatePageN` makes it truncate every second, and
 * restores (sluice's and Litestream's) compared with the source.
 */

import { PYTHON } from "./_python.ts";
import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { createDatabase, digest, runWriter } from "./_sluice.ts";
import { shipAndCheckRestore } from "./_ship.ts";
import { startWriter } from "../scripts/chaos_lib.ts";
import { DB, decideAfterTruncate, type TruncateObservation } from "../src/engine/mod.ts";
import { decodeHeader, decodePageIndex, type Header, HEADER_SIZE } from "../src/ltx/mod.ts";
import { litestreamRestore, oracleAvailable } from "./_oracle.ts";
import { walHeaderOf } from "./_monitor_helpers.ts";

const checkpoint = { busy: 0, dataVersionLocked: 7, dataVersionAfter: 7 };
const clean: TruncateObservation = {
  syncedToEnd: true,
  locked: { salt1: 10, salt2: 99 },
  after: { salt1: 11, salt2: 1234 },
  checkpoint,
};

Deno.test("decideAfterTruncate: continue only when everything discarded was synced", () => {
  assert.deepEqual(decideAfterTruncate(clean), { kind: "continue" });
  // Any change of salts is the restart.
  assert.deepEqual(
    decideAfterTruncate({
      ...clean,
      locked: { salt1: 0xffffffff, salt2: 1 },
      after: { salt1: 0, salt2: 2 },
    }),
    { kind: "continue" },
  );
  // Not restarted (busy, or a reader in the way): the next sync goes on in the same WAL.
  assert.deepEqual(
    decideAfterTruncate({ ...clean, after: clean.locked, checkpoint: { ...checkpoint, busy: 1 } }),
    { kind: "not-restarted" },
  );
  assert.deepEqual(decideAfterTruncate({ ...clean, after: clean.locked, checkpoint: undefined }), {
    kind: "not-restarted",
  });
  const snapshot = (seen: TruncateObservation) => decideAfterTruncate(seen).kind === "snapshot";
  // A commit after the lock was given up (before the checkpoint, or after it).
  assert.ok(snapshot({ ...clean, checkpoint: { ...checkpoint, dataVersionAfter: 8 } }));
  // Restarted although our TRUNCATE was busy: someone else restarted it.
  assert.ok(snapshot({ ...clean, checkpoint: { ...checkpoint, busy: 1 } }));
  // Outcome unknown (worker failed, lock expired) and restarted.
  assert.ok(snapshot({ ...clean, checkpoint: undefined }));
  // The sync under the lock did not reach the WAL's end.
  assert.ok(snapshot({ ...clean, syncedToEnd: false }));
  // Random salts after the restart (the next writer's connection did not restart the WAL
  // itself): still a continuation; only the salts' change is evidence of the restart.
  assert.deepEqual(decideAfterTruncate({ ...clean, after: { salt1: 777, salt2: 5 } }), {
    kind: "continue",
  });
  assert.deepEqual(decideAfterTruncate({ ...clean, after: { salt1: 10, salt2: 5 } }), {
    kind: "continue",
  });
  // No WAL header under the lock, or none after.
  assert.ok(snapshot({ ...clean, locked: undefined }));
  assert.ok(snapshot({ ...clean, after: undefined }));
});

function dataVersion(conn: DatabaseSync): number {
  return Number(
    (conn.prepare("PRAGMA data_version").get() as { data_version: number })
      .data_version,
  );
}

function truncate(conn: DatabaseSync): { busy: number; log: number; checkpointed: number } {
  return conn.prepare("PRAGMA wal_checkpoint(TRUNCATE)").get() as {
    busy: number;
    log: number;
    checkpointed: number;
  };
}

/** What the worker does after the TRUNCATE: a read transaction, data_version read in it. */
function readAfter(conn: DatabaseSync): number {
  conn.exec("BEGIN");
  return dataVersion(conn);
}

function walSalt1(path: string): number {
  const header = walHeaderOf(path);
  assert.ok(header, `${path}-wal has a valid header`);
  return header.salt1;
}

/** A commit by another process (python3), synchronously: nothing else runs meanwhile. */
function commitInAnotherProcess(path: string): void {
  const out = new Deno.Command(PYTHON!, {
    args: [
      "-c",
      "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\n" +
      "c.execute('INSERT INTO t (n) VALUES (3)')\nc.commit()\nc.close()",
      path,
    ],
    stderr: "piped",
  }).outputSync();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
}

Deno.test("data_version: what the TRUNCATE's slip detection relies on (SQLite facts)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-data-version-" });
  const path = join(dir, "app.db");
  createDatabase(path);
  const other = new DatabaseSync(path);
  const walSize = () => Deno.statSync(`${path}-wal`).size;
  const count = () =>
    Number((other.prepare("SELECT count(*) AS n FROM t").get() as { n: number }).n);
  try {
    other.exec("PRAGMA wal_autocheckpoint = 0");
    other.exec("INSERT INTO t (n) VALUES (1)");
    // (a) Our own lock, ROLLBACK and TRUNCATE do not move data_version: on a fresh connection,
    // as the worker opens one per TRUNCATE, with frames of another connection in the WAL.
    {
      const w = new DatabaseSync(path);
      w.exec("BEGIN IMMEDIATE");
      const d1 = dataVersion(w);
      w.exec("ROLLBACK");
      const salt1 = walSalt1(path);
      assert.equal(truncate(w).busy, 0);
      assert.equal(readAfter(w), d1, "(a) own ROLLBACK + TRUNCATE");
      assert.equal(walSize(), 0);
      // While that read transaction (read lock 0, on the emptied WAL) lasts, another
      // connection's commits stay in the WAL: no checkpoint backfills them, so the WAL cannot
      // restart again.
      other.exec("INSERT INTO t (n) VALUES (1)");
      const newSalt1 = walSalt1(path);
      other.exec("PRAGMA wal_checkpoint(PASSIVE)");
      other.exec("INSERT INTO t (n) VALUES (1)");
      assert.equal(walSalt1(path), newSalt1, "no restart while the worker's reader holds");
      // And the new WAL's salt-1 is random, not the old one + 1: the writer that started it
      // had not restarted the WAL itself (wal.c). (1 in 2^32 that it is + 1 by chance.)
      assert.notEqual(newSalt1, (salt1 + 1) >>> 0, "salt-1 after another connection's TRUNCATE");
      w.exec("COMMIT");
      w.close();
    }
    // (b) Another connection's commit between our ROLLBACK and the checkpoint: data_version
    // moves. The checkpoint backfills that commit and discards it with the WAL, the loss the
    // check exists for.
    {
      other.exec("INSERT INTO t (n) VALUES (2)");
      const w = new DatabaseSync(path);
      w.exec("BEGIN IMMEDIATE");
      const d1 = dataVersion(w);
      w.exec("ROLLBACK");
      const before = count();
      other.exec("INSERT INTO t (n) VALUES (2)");
      assert.equal(truncate(w).busy, 0);
      assert.notEqual(readAfter(w), d1, "(b) a commit between ROLLBACK and TRUNCATE");
      w.exec("COMMIT");
      assert.equal(walSize(), 0, "the commit went into the database file, unseen in any WAL");
      assert.equal(count(), before + 1);
      w.close();
    }
    // (c) A commit after the checkpoint (into the new WAL): data_version moves too (the safe
    // direction: a snapshot that was not needed).
    {
      const w = new DatabaseSync(path);
      w.exec("BEGIN IMMEDIATE");
      const d1 = dataVersion(w);
      w.exec("ROLLBACK");
      assert.equal(truncate(w).busy, 0);
      other.exec("INSERT INTO t (n) VALUES (2)");
      assert.notEqual(readAfter(w), d1, "(c) a commit after the TRUNCATE");
      w.exec("COMMIT");
      w.close();
    }
    // (b) and (c) with the commit in another process.
    if (PYTHON) {
      for (const when of ["before", "after"]) {
        const w = new DatabaseSync(path);
        w.exec("BEGIN IMMEDIATE");
        const d1 = dataVersion(w);
        w.exec("ROLLBACK");
        if (when === "before") commitInAnotherProcess(path);
        assert.equal(truncate(w).busy, 0);
        if (when === "after") commitInAnotherProcess(path);
        assert.notEqual(readAfter(w), d1, `a commit by another process ${when} the TRUNCATE`);
        w.exec("COMMIT");
        w.close();
      }
    }
    // A reader elsewhere makes the TRUNCATE busy and leaves the WAL (and its salts) alone.
    {
      other.exec("INSERT INTO t (n) VALUES (4)");
      other.exec("BEGIN");
      count();
      const w = new DatabaseSync(
        path,
        { timeout: 0 } as ConstructorParameters<
          typeof DatabaseSync
        >[1],
      );
      w.exec("PRAGMA busy_timeout = 0");
      const size = walSize();
      assert.equal(truncate(w).busy, 1, "a reader holds the TRUNCATE up");
      assert.equal(walSize(), size);
      other.exec("COMMIT");
      w.close();
    }
  } finally {
    other.close();
    await Deno.remove(dir, { recursive: true });
  }
});

/** An L0 file's header and how many pages it holds (from its page index, not its pages). */
async function l0File(path: string): Promise<{ header: Header; pages: number }> {
  const file = await Deno.open(path);
  try {
    const size = (await file.stat()).size;
    const readAt = async (offset: number, length: number) => {
      const bytes = new Uint8Array(length);
      await file.seek(offset, Deno.SeekMode.Start);
      for (let n = 0; n < length;) {
        const got = await file.read(bytes.subarray(n));
        if (got === null) throw new Error(`${path}: short read`);
        n += got;
      }
      return bytes;
    };
    const header = decodeHeader(await readAt(0, HEADER_SIZE));
    // The last 24 bytes: the index length, then the 16-byte trailer.
    const end = await readAt(size - 24, 24);
    const indexLength = Number(new DataView(end.buffer).getBigUint64(0));
    const tail = await readAt(size - 24 - indexLength, indexLength + 24);
    let pages = 0;
    decodePageIndex(tail, { exact: true, onEntry: () => pages++ });
    return { header, pages };
  } finally {
    file.close();
  }
}

Deno.test({
  name: "checkpoint: a TRUNCATE that restarts the WAL continues without a full snapshot",
  // The checkpoint worker outlives the test by design (it stops when idle for a minute).
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-truncate-continue-" });
  const dbPath = join(dir, "app.db");
  const metaDir = join(dir, ".app.db-sluice");
  const replicaDir = join(dir, "replica");
  createDatabase(dbPath);
  // truncatePageN below minCheckpointPageN: every checkpoint past 300 pages (1.2 MB) is the
  // PASSIVE + TRUNCATE pair, at most one a second.
  const db = new DB(dbPath, { metaDir, truncatePageN: 300, minCheckpointPageN: 1000 });
  await db.open();
  const writer = startWriter([
    "--db",
    dbPath,
    "--row-size",
    "16384",
    "--rate",
    "100",
    "--duration",
    "8",
  ]);
  let writing = true;
  writer.done.finally(() => writing = false).catch(() => {});
  try {
    // Short-lived writers too: each commits a few transactions and exits (its last close
    // cannot checkpoint or delete the WAL while sluice reads it).
    const shortWriters = (async () => {
      while (writing) await runWriter("--db", dbPath, "--count", "5", "--row-size", "4096");
    })();
    let previousWALSize = 0;
    let walShrinks = 0;
    while (writing) {
      await db.sync();
      // Only a TRUNCATE makes the WAL file smaller while connections stay open.
      const size = (await Deno.stat(`${dbPath}-wal`).catch(() => undefined))?.size ?? 0;
      if (size < previousWALSize) walShrinks++;
      previousWALSize = size;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const summary = await writer.done;
    await shortWriters;
    assert.ok(summary.committed > 0);
    // Until a sync finds nothing (the WAL file may be longer than its valid frames).
    while ((await db.sync()).txid !== undefined) { /* more */ }
    const stats = { ...db.stats };
    const txid = db.txid;
    await db.close();

    // Every L0 file after the first: incremental unless a TRUNCATE took a snapshot.
    const names = [...Deno.readDirSync(join(metaDir, "ltx", "0"))].map((e) => e.name)
      .filter((n) => n.endsWith(".ltx")).sort();
    const fullImages: string[] = [];
    let bytes = 0;
    for (const name of names.slice(1)) {
      const { header, pages } = await l0File(join(metaDir, "ltx", "0", name));
      bytes += Deno.statSync(join(metaDir, "ltx", "0", name)).size;
      if (header.commit >= 256 && pages >= header.commit - 1) fullImages.push(name);
    }
    const truncations = stats.truncationsContinued + stats.truncationsSnapshotted;
    const detail = JSON.stringify({ walShrinks, ...stats, files: names.length, bytes, fullImages });
    assert.ok(walShrinks >= 2, `(a) the WAL was truncated at least twice: ${detail}`);
    assert.ok(
      fullImages.length <= (stats.truncationsSnapshotted ?? 0),
      `(c) no full image after the first L0 file but for detected slips: ${detail}`,
    );
    assert.ok(truncations >= 2, `(a) TRUNCATEs that restarted the WAL: ${detail}`);
    assert.ok(stats.truncationsContinued >= 1, `(b) a TRUNCATE continued: ${detail}`);
    console.log(`truncate-continue: ${detail}`);

    // The replica, as a replicate process would have shipped it, restores to the source.
    await shipAndCheckRestore({ metaDir, replicaDir, txid, dbPath, dir });
    if (oracleAvailable()) {
      const theirs = join(dir, "litestream.db");
      await litestreamRestore(replicaDir, theirs);
      assert.deepEqual(await digest(theirs), await digest(dbPath));
    }
  } finally {
    await writer.stop().catch(() => {});
    await db.close();
    await Deno.remove(dir, { recursive: true });
  }
});
