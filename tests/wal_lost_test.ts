/**
 * A WAL deleted or replaced behind sluice (issue 20, item 3). sluice's SHARED lock normally
 * keeps the application's last connection from deleting the WAL; when something drops that
 * lock anyway (an application in exclusive locking mode, a file system without POSIX locks, a
 * tool that opens and closes the database inside the sluice process), the WAL can be
 * checkpointed and deleted under sluice. Before the fix sluice kept reading the unlinked old
 * WAL, saw nothing new, and the replica silently stopped. Now the next sync notices that the
 * WAL at the path is another file, re-attaches and takes a snapshot.
 *
 * The lock is dropped the way a careless in-process tool would drop it: the test process runs
 * the Store and opens and closes a descriptor of the database itself. The writers are Python
 * processes that commit and exit.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { digest, restoreTo, waitFor } from "./_sluice.ts";
import { FileReplicaClient } from "../src/replica/mod.ts";
import { type DatabaseEntry, Store } from "../src/engine/mod.ts";
import { createLogger } from "../src/log/mod.ts";
import { DB } from "../src/engine/mod.ts";

async function python(db: string, code: string): Promise<void> {
  const out = await new Deno.Command("python3", {
    args: ["-c", `import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\n${code}\nc.close()`, db],
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`python3 failed: ${new TextDecoder().decode(out.stderr)}`);
}

/** One short-lived writer: a connection, `rows` inserts, commit, close, exit. */
function commitAndExit(db: string, rows: number): Promise<void> {
  return python(
    db,
    `c.executemany("INSERT INTO t(n, payload) VALUES (?, randomblob(100))", ` +
      `[(i,) for i in range(${rows})])\nc.commit()`,
  );
}

/** Read through a call: `assert.equal(x, undefined)` narrows a property for good. */
function stalledSince(db: DB): Date | undefined {
  return db.stats.stalledSince;
}

async function exists(path: string): Promise<boolean> {
  return await Deno.lstat(path).then(() => true, () => false);
}

Deno.test("a WAL deleted behind sluice is noticed at the next sync and snapshotted", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-wal-lost-" });
  const store = new Store({ logger: createLogger({ level: "error", type: "text" }) });
  const path = join(dir, "app.db");
  const replicaDir = join(dir, "replica");
  try {
    await python(
      path,
      "c.execute('PRAGMA journal_mode=wal')\n" +
        "c.execute('CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, payload BLOB)')",
    );
    const entry: DatabaseEntry = {
      path,
      metaDir: join(dir, ".app.db-sluice"),
      createClient: () => new FileReplicaClient(replicaDir),
      syncInterval: 20,
      monitorInterval: 100,
    };
    assert.equal(await store.add(entry), true);
    const replicated = async () => {
      const out = join(dir, `check-${crypto.randomUUID()}.db`);
      await restoreTo(replicaDir, out, "--integrity-check", "none");
      const [a, b] = await Promise.all([digest(out), digest(path)]);
      await Deno.remove(out);
      return a.sha256 === b.sha256 && a.rows === b.rows;
    };
    await commitAndExit(path, 5);
    await waitFor("the first rows on the replica", replicated);

    // Drop this process's locks on the database: open and close a descriptor of it. Nothing
    // holds a SHARED lock then, and the writer's close checkpoints and deletes the WAL, unless
    // sluice happened to open a connection in between (its checkpoint or helper-table writer
    // takes the lock afresh): then drop it again.
    let rows = 5;
    for (let attempt = 1;; attempt++) {
      Deno.openSync(path, { read: true }).close();
      await commitAndExit(path, 7);
      rows += 7;
      if (!await exists(path + "-wal")) break;
      assert.ok(attempt < 20, "precondition: the WAL was deleted after a lock drop");
    }
    await commitAndExit(path, 9); // a new WAL, another inode
    rows += 9;
    await waitFor("the rows written after the WAL was lost", replicated, 15_000);

    // Re-attached: sluice holds its lock again, so a writer's exit leaves the WAL in place.
    await commitAndExit(path, 3);
    rows += 3;
    assert.equal(await exists(path + "-wal"), true, "sluice holds its SHARED lock again");
    await waitFor("the last rows", replicated);
    await store.close();
    const out = join(dir, "final.db");
    await restoreTo(replicaDir, out);
    const [restored, source] = await Promise.all([digest(out), digest(path)]);
    assert.equal(restored.integrity, "ok");
    assert.equal(restored.rows, rows);
    assert.deepEqual(restored, source);
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a WAL change that no sync picks up is reported as a stall until a sync catches up", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-stall-" });
  const path = join(dir, "app.db");
  const db = new DB(path, { metaDir: join(dir, ".app.db-sluice"), stallAfter: 1000 });
  try {
    await python(
      path,
      "c.execute('PRAGMA journal_mode=wal')\n" +
        "c.execute('CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, payload BLOB)')",
    );
    await db.open();
    await db.sync();
    const walInfo = () => Deno.stat(path + "-wal");
    const t0 = Date.now();
    db.observeWAL(await walInfo(), t0);
    assert.equal(db.stats.stalledSince, undefined, "the WAL as the last sync saw it");
    await commitAndExit(path, 4); // the WAL changes; no sync runs
    const changed = await walInfo();
    db.observeWAL(changed, t0 + 10);
    db.observeWAL(changed, t0 + 900);
    assert.equal(db.stats.stalledSince, undefined, "not before stallAfter");
    db.observeWAL(changed, t0 + 1100);
    assert.equal(stalledSince(db)?.getTime(), t0 + 10);
    const result = await db.sync();
    assert.ok(result.txid !== undefined);
    assert.equal(db.stats.stalledSince, undefined, "a sync from that state clears it");
  } finally {
    await db.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an application that drops sluice's helper tables does not stop replication", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-helper-tables-" });
  const store = new Store({ logger: createLogger({ level: "error", type: "text" }) });
  const path = join(dir, "app.db");
  const replicaDir = join(dir, "replica");
  try {
    await python(
      path,
      "c.execute('PRAGMA journal_mode=wal')\n" +
        "c.execute('CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, payload BLOB)')",
    );
    assert.equal(
      await store.add({
        path,
        metaDir: join(dir, ".app.db-sluice"),
        createClient: () => new FileReplicaClient(replicaDir),
        syncInterval: 20,
        monitorInterval: 100,
      }),
      true,
    );
    await commitAndExit(path, 5);
    // As speedtest1 does between its test sets.
    await python(
      path,
      "c.execute('DROP TABLE _litestream_seq')\nc.execute('DROP TABLE _litestream_lock')",
    );
    // Past the 1,000-page checkpoint threshold: the checkpoint needs the lock table.
    await python(
      path,
      `c.executemany("INSERT INTO t(n, payload) VALUES (?, randomblob(8000))", ` +
        `[(i,) for i in range(700)])\nc.commit()`,
    );
    await commitAndExit(path, 9);
    const failures = await store.close();
    assert.deepEqual(failures, [], "the final sync succeeded");
    const out = join(dir, "final.db");
    await restoreTo(replicaDir, out);
    const [restored, source] = await Promise.all([digest(out), digest(path)]);
    assert.equal(restored.rows, 714);
    assert.deepEqual(restored, source);
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});
