/**
 * Directory replication end to end: `sluice replicate -c CONFIG` with a `dir:` entry runs as a
 * subprocess while this test creates, writes (scripts/writer.ts processes), renames and
 * deletes databases; every scenario ends by restoring replicas and checking their rows.
 * These are the nine scenarios of Litestream's directory-watcher integration suite, plus
 * directories created on the fly (`mkdir -p a/b/c` then at once a database in c), renames of
 * directories and across the tree's border, atomic replacement, and directory deletion.
 *
 * Each database's replica is the configured replica path plus its path relative to `dir`.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import {
  createDatabase,
  distinct,
  hasReplica,
  range,
  replicaFiles,
  replicatedDatabases,
  restoredRows,
  sleep,
  SluiceProcess,
  waitFor,
  withTempDir,
  writeDirConfig,
  WriterProcess,
} from "./_monitor_helpers.ts";

interface Setup {
  tmp: string;
  dir: string;
  replica: string;
  config: string;
  /** The replica directory of the database at `rel` (relative to dir). */
  rep(rel: string): string;
  /** Waits until the database at `rel` has a file on its replica. */
  replicated(rel: string, timeoutMs?: number): Promise<number>;
}

async function setup(
  tmp: string,
  options: { pattern?: string; recursive?: boolean; watch?: boolean } = {},
): Promise<Setup> {
  const dir = join(tmp, "tenants");
  const replica = join(tmp, "replica");
  await Deno.mkdir(dir, { recursive: true });
  const config = await writeDirConfig(join(tmp, "sluice.yml"), dir, replica, options);
  const rep = (rel: string) => join(replica, rel);
  return {
    tmp,
    dir,
    replica,
    config,
    rep,
    replicated: (rel, timeoutMs = 10_000) =>
      waitFor(`${rel} on the replica`, () => hasReplica(rep(rel)), timeoutMs),
  };
}

Deno.test("monitor cli: lifecycle: databases created, written and deleted while replicating", async () => {
  await withTempDir(async (tmp) => {
    const s = await setup(tmp, { recursive: true });
    const sluice = await SluiceProcess.start(s.config);
    try {
      createDatabase(join(s.dir, "tenant1", "app.db"), 1);
      createDatabase(join(s.dir, "tenant2", "app.db"), 1);
      await s.replicated("tenant1/app.db");
      await s.replicated("tenant2/app.db");

      assert.equal(await WriterProcess.run(join(s.dir, "tenant1", "app.db"), 30), 31);
      assert.equal(await WriterProcess.run(join(s.dir, "tenant2", "app.db"), 20), 21);

      createDatabase(join(s.dir, "tenant3", "app.db"), 2);
      createDatabase(join(s.dir, "standalone.db"), 3);
      createDatabase(join(s.dir, "tenant4", "data.db"), 4);
      for (const rel of ["tenant3/app.db", "standalone.db", "tenant4/data.db"]) {
        await s.replicated(rel);
      }

      // Deleted: replication stops and every descriptor on it is released; the replica stays.
      const standalone = join(s.dir, "standalone.db");
      assert.equal(await sluice.holds(standalone), true);
      await Deno.remove(standalone);
      await sluice.waitFor(
        "sluice to release standalone.db",
        async () => !(await sluice.holds(standalone)),
        30_000,
      );
      assert.equal(hasReplica(s.rep("standalone.db")), true);
    } finally {
      await sluice.stop();
    }
    assert.deepEqual(replicatedDatabases(s.replica), [
      "standalone.db",
      "tenant1/app.db",
      "tenant2/app.db",
      "tenant3/app.db",
      "tenant4/data.db",
    ]);
    assert.deepEqual(distinct(await restoredRows(s.rep("tenant1/app.db"))), range(31));
    assert.deepEqual(distinct(await restoredRows(s.rep("tenant2/app.db"))), range(21));
    assert.deepEqual(distinct(await restoredRows(s.rep("tenant3/app.db"))), range(2));
    assert.deepEqual(distinct(await restoredRows(s.rep("standalone.db"))), range(3));
    assert.deepEqual(distinct(await restoredRows(s.rep("tenant4/data.db"))), range(4));
  });
});

Deno.test("monitor cli: 20 databases created at the same instant are all replicated", async () => {
  await withTempDir(async (tmp) => {
    const s = await setup(tmp);
    const sluice = await SluiceProcess.start(s.config);
    const names = range(20).map((i) => `db${String(i).padStart(2, "0")}.db`);
    try {
      names.forEach((name, i) => createDatabase(join(s.dir, name), i + 1));
      for (const name of names) await s.replicated(name);
    } finally {
      await sluice.stop();
    }
    assert.deepEqual(replicatedDatabases(s.replica), names);
    for (const i of [0, 9, 19]) {
      assert.deepEqual(distinct(await restoredRows(s.rep(names[i]))), range(i + 1));
    }
  });
});

Deno.test("monitor cli: recursive: nested databases, mkdir -p a/b/c then at once a database in c, a deleted directory", async () => {
  await withTempDir(async (tmp) => {
    const s = await setup(tmp, { recursive: true });
    createDatabase(join(s.dir, "level1", "db2.db"), 2); // present at start
    const sluice = await SluiceProcess.start(s.config);
    try {
      createDatabase(join(s.dir, "db1.db"), 1);
      createDatabase(join(s.dir, "level1", "level2", "db3.db"), 3);
      for (const rel of ["db1.db", "level1/db2.db", "level1/level2/db3.db"]) {
        await s.replicated(rel);
      }

      // Databases arrive right after their directories, before a watch on them can exist,
      // in one step (copied from a template, or renamed in) so no later event reveals them:
      // found by the scan of the new directory (the reconcile scan is 30 s away).
      for (let k = 0; k < 10; k++) createDatabase(join(tmp, "templates", `t${k}.db`), k + 1);
      for (let k = 0; k < 10; k++) {
        await Deno.mkdir(join(s.dir, `a${k}`, "b", "c"), { recursive: true });
        const target = join(s.dir, `a${k}`, "b", "c", "db.db");
        if (k % 2 === 0) await Deno.copyFile(join(tmp, "templates", `t${k}.db`), target);
        else await Deno.rename(join(tmp, "templates", `t${k}.db`), target);
      }
      for (let k = 0; k < 10; k++) await s.replicated(`a${k}/b/c/db.db`, 5000);

      // A deleted directory takes its databases with it (the replicas stay).
      await Deno.remove(join(s.dir, "level1"), { recursive: true });
      await sluice.waitFor(
        "sluice to release level1's databases",
        async () =>
          !(await sluice.holds(join(s.dir, "level1", "db2.db"))) &&
          !(await sluice.holds(join(s.dir, "level1", "level2", "db3.db"))),
        30_000, // usually 0.1–0.5 s; CI's parallel run once took over 10 s
      );
      assert.equal(hasReplica(s.rep("level1/level2/db3.db")), true);
    } finally {
      await sluice.stop();
    }
    assert.equal(replicatedDatabases(s.replica).length, 13);
    for (let k = 0; k < 10; k++) {
      assert.deepEqual(distinct(await restoredRows(s.rep(`a${k}/b/c/db.db`))), range(k + 1));
    }
    assert.deepEqual(distinct(await restoredRows(s.rep("level1/db2.db"))), range(2));
    assert.deepEqual(distinct(await restoredRows(s.rep("level1/level2/db3.db"))), range(3));
  });
});

Deno.test("monitor cli: pattern: *.db and *.sqlite pick their own files; side, temp and hidden files never", async () => {
  await withTempDir(async (tmp) => {
    const s = await setup(tmp);
    createDatabase(join(s.dir, "test.sqlite"), 2);
    createDatabase(join(s.dir, ".hidden.db"), 1);
    createDatabase(join(s.dir, "copy.db.tmp"), 1);
    for (const name of ["test.db.backup", "other.db-wal", "other.db-shm", "other.db-journal"]) {
      await Deno.writeFile(join(s.dir, name), new Uint8Array());
    }
    const sluice = await SluiceProcess.start(s.config);
    try {
      // later.sqlite first: the watcher delivers its events before test.db's, and a name that
      // does not match the pattern is dismissed at once, so once test.db is on the replica,
      // later.sqlite has been seen and left out. The files above were decided by the start scan.
      createDatabase(join(s.dir, "later.sqlite"), 1);
      createDatabase(join(s.dir, "test.db"), 3);
      await s.replicated("test.db");
    } finally {
      await sluice.stop();
    }
    assert.deepEqual(replicatedDatabases(s.replica), ["test.db"]);
    assert.deepEqual(distinct(await restoredRows(s.rep("test.db"))), range(3));

    // The same directory with pattern *.sqlite.
    const replica2 = join(tmp, "replica2");
    const config2 = await writeDirConfig(join(tmp, "sqlite.yml"), s.dir, replica2, {
      pattern: "*.sqlite",
    });
    const sluice2 = await SluiceProcess.start(config2);
    try {
      createDatabase(join(s.dir, "new.sqlite"), 4);
      // The *.db files were left out by the start scan; the three *.sqlite are replicated.
      for (const name of ["new.sqlite", "later.sqlite", "test.sqlite"]) {
        await waitFor(`${name} on the replica`, () => hasReplica(join(replica2, name)));
      }
    } finally {
      await sluice2.stop();
    }
    assert.deepEqual(replicatedDatabases(replica2), ["later.sqlite", "new.sqlite", "test.sqlite"]);
    assert.deepEqual(distinct(await restoredRows(join(replica2, "test.sqlite"))), range(2));
    assert.deepEqual(distinct(await restoredRows(join(replica2, "new.sqlite"))), range(4));
  });
});

Deno.test("monitor cli: non-SQLite files are ignored; an empty file is picked up once it becomes a database", async () => {
  await withTempDir(async (tmp) => {
    const s = await setup(tmp);
    const sluice = await SluiceProcess.start(s.config);
    try {
      await Deno.writeTextFile(join(s.dir, "fake.db"), "this is not a sqlite file");
      await Deno.writeFile(join(s.dir, "empty.db"), new Uint8Array());
      const wrongVersion = new Uint8Array(4096);
      wrongVersion.set(new TextEncoder().encode("SQLite format 2\0"));
      await Deno.writeFile(join(s.dir, "text.db"), wrongVersion);
      await Deno.writeFile(join(s.dir, "random.db"), crypto.getRandomValues(new Uint8Array(8192)));
      createDatabase(join(s.dir, "valid.db"), 2);
      await s.replicated("valid.db");
      // The monitor's decision on each file, once its grace for files still being written is
      // over: the one line it logs when it skips a file (a readiness signal, not an assertion).
      for (const name of ["fake.db", "empty.db", "text.db", "random.db"]) {
        await waitFor(
          `${name} skipped`,
          () =>
            sluice.log.split("\n").some((line) =>
              line.includes("not a SQLite database; skipped") && line.includes(join(s.dir, name))
            ),
        );
      }
      assert.deepEqual(replicatedDatabases(s.replica), ["valid.db"]);

      // The application now creates its database in the empty file.
      createDatabase(join(s.dir, "empty.db"), 3);
      await s.replicated("empty.db");
    } finally {
      await sluice.stop();
    }
    assert.deepEqual(replicatedDatabases(s.replica), ["empty.db", "valid.db"]);
    assert.deepEqual(distinct(await restoredRows(s.rep("valid.db"))), range(2));
    assert.deepEqual(distinct(await restoredRows(s.rep("empty.db"))), range(3));
  });
});

Deno.test("monitor cli: databases with active writers are discovered and every acknowledged transaction is replicated", async () => {
  await withTempDir(async (tmp) => {
    const s = await setup(tmp);
    const active = join(s.dir, "active.db");
    const writer1 = WriterProcess.start(active, { rate: 50 });
    let writer2: WriterProcess | undefined;
    let last1 = 0, last2 = 0;
    try {
      await waitFor("the first writer to commit", async () => (await writer1.acknowledged()) > 3);
      const sluice = await SluiceProcess.start(s.config);
      try {
        await s.replicated("active.db");
        writer2 = WriterProcess.start(join(s.dir, "active2.db"), { rate: 30 });
        await s.replicated("active2.db");
        await sleep(1500);
      } finally {
        last1 = await writer1.stop();
        last2 = await writer2!.stop();
        await sluice.stop();
      }
    } finally {
      await writer1.child.status;
    }
    assert.ok(last1 > 50 && last2 > 20, `writers committed ${last1} and ${last2}`);
    assert.deepEqual(replicatedDatabases(s.replica), ["active.db", "active2.db"]);
    assert.deepEqual(distinct(await restoredRows(s.rep("active.db"))), range(last1));
    assert.deepEqual(distinct(await restoredRows(s.rep("active2.db"))), range(last2));
  });
});

Deno.test("monitor cli: restart: existing databases resume, ones created while stopped are found", async () => {
  await withTempDir(async (tmp) => {
    const s = await setup(tmp);
    for (const i of [1, 2, 3]) createDatabase(join(s.dir, `db${i}.db`), 2);
    let sluice = await SluiceProcess.start(s.config);
    try {
      for (const i of [1, 2, 3]) await s.replicated(`db${i}.db`);
      createDatabase(join(s.dir, "db4.db"), 4);
      createDatabase(join(s.dir, "db5.db"), 5);
      await s.replicated("db4.db");
      await s.replicated("db5.db");
    } finally {
      await sluice.stop();
    }

    // While stopped: a new database, and writes to an existing one.
    createDatabase(join(s.dir, "db6.db"), 6);
    assert.equal(await WriterProcess.run(join(s.dir, "db1.db"), 10), 12);

    sluice = await SluiceProcess.start(s.config);
    try {
      await s.replicated("db6.db");
      createDatabase(join(s.dir, "db7.db"), 7);
      await s.replicated("db7.db");
    } finally {
      await sluice.stop();
    }
    assert.deepEqual(replicatedDatabases(s.replica), range(7).map((i) => `db${i}.db`));
    assert.deepEqual(distinct(await restoredRows(s.rep("db1.db"))), range(12));
    assert.deepEqual(distinct(await restoredRows(s.rep("db2.db"))), range(2));
    assert.deepEqual(distinct(await restoredRows(s.rep("db6.db"))), range(6));
    assert.deepEqual(distinct(await restoredRows(s.rep("db7.db"))), range(7));
  });
});

Deno.test("monitor cli: renames: of a database, of its directory, into and out of the tree, and over a replicated database", async () => {
  await withTempDir(async (tmp) => {
    const s = await setup(tmp, { recursive: true });
    const sluice = await SluiceProcess.start(s.config);
    try {
      createDatabase(join(s.dir, "original.db"), 3);
      await s.replicated("original.db");
      // Level 0 only: a compaction that started before the rename may still add its output.
      const l0Files = (path: string) => replicaFiles(path).filter((f) => f.startsWith("0/"));
      const originalFiles = l0Files(s.rep("original.db"));

      // Renamed: replicated under the new name (a new replica), no longer under the old one.
      await Deno.rename(join(s.dir, "original.db"), join(s.dir, "renamed.db"));
      await s.replicated("renamed.db");
      assert.equal(await WriterProcess.run(join(s.dir, "renamed.db"), 5), 8);
      await waitFor(
        "renamed.db's writes on the replica",
        async () => distinct(await restoredRows(s.rep("renamed.db"))).length === 8,
      );
      assert.deepEqual(l0Files(s.rep("original.db")), originalFiles);

      // A directory renamed: its database moves with it.
      createDatabase(join(s.dir, "t1", "app.db"), 2);
      await s.replicated("t1/app.db");
      await Deno.rename(join(s.dir, "t1"), join(s.dir, "t9"));
      await s.replicated("t9/app.db");

      // Into the tree from outside, and out of it.
      createDatabase(join(tmp, "outside.db"), 4);
      await Deno.rename(join(tmp, "outside.db"), join(s.dir, "inside.db"));
      await s.replicated("inside.db");
      await Deno.rename(join(s.dir, "inside.db"), join(tmp, "gone.db"));
      await waitFor(
        "sluice to release the database renamed out",
        async () => !(await sluice.holds(join(tmp, "gone.db"))),
      );

      // Atomically replaced by another database: the replica continues with the new content.
      createDatabase(join(tmp, "new.db"), 5, 100);
      await Deno.rename(join(tmp, "new.db"), join(s.dir, "renamed.db"));
      await waitFor(
        "the replacement's rows on renamed.db's replica",
        async () => distinct(await restoredRows(s.rep("renamed.db")))[0] === 100,
      );
    } finally {
      await sluice.stop();
    }
    assert.deepEqual(distinct(await restoredRows(s.rep("renamed.db"))), range(5, 100));
    // The replacing database itself is intact: the replaced one's WAL, which sluice's
    // connection had kept alive at this path, was set aside instead of being applied to it.
    const live = new DatabaseSync(join(s.dir, "renamed.db"));
    try {
      assert.equal(live.prepare("PRAGMA integrity_check").get()?.integrity_check, "ok");
      const rows = live.prepare("SELECT DISTINCT n FROM t ORDER BY n").all().map((r) => r.n);
      assert.deepEqual(rows, range(5, 100));
    } finally {
      live.close();
    }
    assert.deepEqual(distinct(await restoredRows(s.rep("original.db"))), range(3));
    assert.deepEqual(distinct(await restoredRows(s.rep("t9/app.db"))), range(2));
    assert.deepEqual(distinct(await restoredRows(s.rep("inside.db"))), range(4));
  });
});

Deno.test("monitor cli: continuous writes to several databases while others are created", async () => {
  await withTempDir(async (tmp) => {
    const s = await setup(tmp);
    for (const i of [1, 2, 3]) createDatabase(join(s.dir, `db${i}.db`), 5);
    const sluice = await SluiceProcess.start(s.config);
    const writers: WriterProcess[] = [];
    const last: number[] = [];
    try {
      for (const [i, rate] of [[1, 40], [2, 30], [3, 20]]) {
        writers.push(WriterProcess.start(join(s.dir, `db${i}.db`), { rate }));
      }
      await sleep(700);
      for (const i of [4, 5]) {
        createDatabase(join(s.dir, `db${i}.db`), 1);
        writers.push(WriterProcess.start(join(s.dir, `db${i}.db`), { rate: 20 }));
      }
      for (const i of [1, 2, 3, 4, 5]) await s.replicated(`db${i}.db`);
      await sleep(1500);
    } finally {
      for (const writer of writers) last.push(await writer.stop());
      await sluice.stop();
    }
    assert.deepEqual(replicatedDatabases(s.replica), range(5).map((i) => `db${i}.db`));
    for (const [k, i] of [1, 2, 3, 4, 5].entries()) {
      assert.ok(last[k] > (i <= 3 ? 5 : 1), `db${i}.db: writer committed up to ${last[k]}`);
      assert.deepEqual(distinct(await restoredRows(s.rep(`db${i}.db`))), range(last[k]));
    }
  });
});
