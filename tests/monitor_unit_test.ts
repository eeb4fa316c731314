/**
 * DirectoryMonitor in process, driving a real Store that replicates to a file replica.
 * Databases are created and written by child processes: this process replicates them, so it
 * must not open and close descriptors on them itself (POSIX locks).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { DirectoryMonitor, MonitorError } from "../src/discovery/mod.ts";
import { Store } from "../src/engine/mod.ts";
import { FileReplicaClient } from "../src/replica/mod.ts";
import { silentLogger } from "../src/log/mod.ts";
import { metaDirFor, relativeInside } from "../src/config/mod.ts";
import {
  createDatabasesInChild,
  distinct,
  hasReplica,
  range,
  replicaFiles,
  restoredRows,
  sleep,
  waitFor,
  withTempDir,
  WriterProcess,
} from "./_monitor_helpers.ts";

interface Harness {
  dir: string;
  replica: string;
  store: Store;
  monitor: DirectoryMonitor;
  close(): Promise<void>;
}

/**
 * A store plus a monitor over `<tmp>/dbs`, replicating to `<tmp>/replica/<rel path>`. The
 * safety-net poll is a minute, so only the monitor's watcher can wake a sync quickly.
 */
function harness(
  tmp: string,
  options: { watch: boolean; recursive?: boolean; reconcileInterval?: number },
): Harness {
  const dir = join(tmp, "dbs");
  const replica = join(tmp, "replica");
  const store = new Store({ logger: silentLogger, watchWAL: false, openRetryDelay: 200 });
  const monitor = new DirectoryMonitor({
    dir,
    pattern: "*.db",
    recursive: options.recursive ?? false,
    watch: options.watch,
    reconcileInterval: options.reconcileInterval ?? 30_000,
    store,
    logger: silentLogger,
    entryFor: (path) => ({
      path,
      metaDir: metaDirFor(path, { dir }),
      createClient: () => new FileReplicaClient(join(replica, relativeInside(dir, path)!)),
      syncInterval: 10,
      monitorInterval: 60_000,
    }),
  });
  return {
    dir,
    replica,
    store,
    monitor,
    async close() {
      await monitor.close();
      await store.close();
    },
  };
}

Deno.test("monitor start: a missing directory, or with watch: false an empty one, is an error saying what is missing", async () => {
  await withTempDir(async (tmp) => {
    const missing = harness(tmp, { watch: true });
    await assert.rejects(missing.monitor.start(), (err: Error) => {
      assert.ok(err instanceof MonitorError);
      assert.match(err.message, new RegExp(`directory ${missing.dir} .*does not exist`));
      return true;
    });
    await missing.close();

    await Deno.mkdir(join(tmp, "dbs", "sub"), { recursive: true });
    await createDatabasesInChild([join(tmp, "dbs", "sub", "only.db")], 1);
    await Deno.writeTextFile(join(tmp, "dbs", "notes.db"), "not a database");
    const empty = harness(tmp, { watch: false });
    await assert.rejects(empty.monitor.start(), (err: Error) => {
      assert.ok(err instanceof MonitorError);
      assert.match(err.message, /no SQLite database matching pattern "\*\.db"/);
      assert.match(err.message, /recursive is false/);
      assert.match(err.message, /watch: false/);
      return true;
    });
    await empty.close();

    // Watching, an empty directory is fine: databases may come later.
    const watching = harness(tmp, { watch: true });
    assert.equal(await watching.monitor.start(), 0);
    await watching.close();
  });
});

Deno.test("monitor watch: false: the set found at start is fixed, and the watcher still wakes their syncs", async () => {
  await withTempDir(async (tmp) => {
    const h = harness(tmp, { watch: false });
    await createDatabasesInChild([join(h.dir, "a.db"), join(h.dir, "b.db")], 3);
    try {
      assert.equal(await h.monitor.start(), 2);
      assert.deepEqual(h.store.paths.sort(), [join(h.dir, "a.db"), join(h.dir, "b.db")]);
      await waitFor("a.db on the replica", () => hasReplica(join(h.replica, "a.db")));

      // A write reaches the replica through the watcher's -wal event (the poll is a minute).
      const last = await WriterProcess.run(join(h.dir, "a.db"), 5);
      assert.equal(last, 8);
      await waitFor(
        "a.db's new transactions on the replica",
        async () => distinct(await restoredRows(join(h.replica, "a.db"))).length === 8,
        5000,
      );

      // Not watching for new databases. The watcher delivers c.db's events before the -wal
      // event of the next write to a.db: once that write is on the replica, c.db's creation
      // has been seen (and ignored).
      await createDatabasesInChild([join(h.dir, "c.db")], 1);
      assert.equal(await WriterProcess.run(join(h.dir, "a.db"), 2), 10);
      await waitFor(
        "a.db's write after c.db's creation on the replica",
        async () => distinct(await restoredRows(join(h.replica, "a.db"))).length === 10,
        5000,
      );
      assert.equal(h.store.paths.length, 2);
      assert.equal(hasReplica(join(h.replica, "c.db")), false);
    } finally {
      await h.close();
    }
    assert.deepEqual(distinct(await restoredRows(join(h.replica, "b.db"))), range(3));
  });
});

Deno.test("monitor: an empty file that becomes a database later is picked up; subdirectories ignored when not recursive", async () => {
  await withTempDir(async (tmp) => {
    const h = harness(tmp, { watch: true });
    await Deno.mkdir(join(h.dir, "sub"), { recursive: true });
    await createDatabasesInChild([join(h.dir, "sub", "early.db")], 1);
    try {
      assert.equal(await h.monitor.start(), 0);
      await Deno.writeFile(join(h.dir, "late.db"), new Uint8Array());
      await createDatabasesInChild([join(h.dir, "sub", "deep.db")], 1);
      // A full scan resolves once every probe it started, or shared, has settled: the empty
      // file and the database in a subdirectory have been looked at and left out.
      assert.equal(await h.monitor.reconcile(), 0);
      assert.deepEqual(h.store.paths, []);

      // The application now writes the header: picked up from its modify events.
      await createDatabasesInChild([join(h.dir, "late.db")], 4);
      await waitFor("late.db on the replica", () => hasReplica(join(h.replica, "late.db")));
      assert.deepEqual(h.monitor.databases, [join(h.dir, "late.db")]);
      assert.equal(hasReplica(join(h.replica, "sub", "early.db")), false);
      assert.equal(hasReplica(join(h.replica, "sub", "deep.db")), false);
    } finally {
      await h.close();
    }
    assert.deepEqual(distinct(await restoredRows(join(h.replica, "late.db"))), range(4));
  });
});

Deno.test("monitor: the directory removed and created again: its databases stop, the new ones are found by the reconcile scan", async () => {
  await withTempDir(async (tmp) => {
    const h = harness(tmp, { watch: true, recursive: true, reconcileInterval: 300 });
    await createDatabasesInChild([join(h.dir, "t1", "a.db")], 2);
    try {
      assert.equal(await h.monitor.start(), 1);
      await waitFor("t1/a.db on the replica", () => hasReplica(join(h.replica, "t1", "a.db")));

      await Deno.remove(h.dir, { recursive: true });
      await waitFor("the store to drop t1/a.db", () => h.store.paths.length === 0);
      assert.deepEqual(h.monitor.databases, []);

      // A new directory: the old watch died with the old inode; the reconcile scan finds the
      // database and watches the new directory.
      await createDatabasesInChild([join(h.dir, "t2", "b.db")], 3);
      await waitFor("t2/b.db on the replica", () => hasReplica(join(h.replica, "t2", "b.db")));
      await sleep(1200); // past the watcher restart throttle: the next scan re-watches
      await createDatabasesInChild([join(h.dir, "t3", "c.db")], 5);
      await waitFor("t3/c.db on the replica", () => hasReplica(join(h.replica, "t3", "c.db")));
    } finally {
      await h.close();
    }
    // The replica of the removed database is kept.
    assert.deepEqual(distinct(await restoredRows(join(h.replica, "t1", "a.db"))), range(2));
    assert.deepEqual(distinct(await restoredRows(join(h.replica, "t2", "b.db"))), range(3));
    assert.deepEqual(distinct(await restoredRows(join(h.replica, "t3", "c.db"))), range(5));
    assert.ok(replicaFiles(join(h.replica, "t3", "c.db")).length >= 1);
  });
});
