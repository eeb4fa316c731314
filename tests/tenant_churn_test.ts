/**
 * Tenants deleted, moved and re-created under the same names (issue 21, items 4 and 6).
 *
 * A new database at an old tenant's path is a different database. Its replica continues the
 * old one's TXID sequence with a full snapshot, so a restore yields the old database up to
 * that TXID and the new one after it, never a mix of the two. Every tenant database written
 * here carries its own generation number in each row and numbers its rows 1, 2, 3…, so any
 * restored state must pass `integrity_check`, hold one generation only and be a prefix of
 * its rows (scripts/chaos_tenants.ts has the checks and the three-minute version).
 *
 * Every application operation runs in a short-lived python3 process, as a cron job or a CLI
 * would. Log lines are asserted on only where the line is the feature (item 6).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { DB } from "../src/engine/mod.ts";
import { Store } from "../src/engine/mod.ts";
import { DirectoryMonitor } from "../src/discovery/mod.ts";
import { Metrics } from "../src/daemon/mod.ts";
import { FileReplicaClient } from "../src/replica/mod.ts";
import { restore } from "../src/restore/mod.ts";
import { createLogger, silentLogger } from "../src/log/mod.ts";
import { metaDirFor, relativeInside } from "../src/config/mod.ts";
import {
  checkHistory,
  mixProblem,
  readTenant,
  replicaDirs,
  sameContent,
  type TenantContent,
  tenantOp,
} from "../scripts/chaos_tenants.ts";
import { sluice } from "./_sluice.ts";
import { SluiceProcess, waitFor, withTempDir, writeDirConfig } from "./_monitor_helpers.ts";

let nextGen = 1;

/** Creates a tenant database holding `rows` rows of a new generation; returns the generation. */
async function create(path: string, rows = 5, size = 100): Promise<number> {
  const gen = nextGen++;
  await tenantOp(["create", path, `${gen}`, `${rows}`, `${size}`]);
  return gen;
}

/** Appends rows `first`… of generation `gen`. */
async function write(path: string, gen: number, first: number, rows: number): Promise<void> {
  await tenantOp(["write", path, `${gen}`, `${first}`, `${rows}`, "3000"]);
}

/** The latest state of a file replica, restored into `work`. */
async function latest(replicaDir: string, work: string): Promise<TenantContent> {
  const out = join(work, `latest-${crypto.randomUUID()}.db`);
  try {
    await restore(new FileReplicaClient(replicaDir), { outputPath: out });
    return readTenant(out);
  } finally {
    await Deno.remove(out).catch(() => {});
  }
}

/** Waits until the latest restore of `replicaDir` equals the source database at `source`. */
async function caughtUp(source: string, replicaDir: string, work: string): Promise<void> {
  const expected = readTenant(source);
  await waitFor(`${replicaDir} to equal ${source}`, async () => {
    try {
      return sameContent(await latest(replicaDir, work), expected);
    } catch {
      return false; // nothing restorable yet
    }
    // Generous: two test files run at once on 2 cores; a replica that diverged never matches.
  }, 30_000);
}

Deno.test("tenants: the same names deleted, moved and re-created many times, with sluice running and stopped: each replica restores its last database, no point in time mixes two", async () => {
  await withTempDir(async (tmp) => {
    const dir = join(tmp, "tenants");
    const replica = join(tmp, "replica");
    const work = join(tmp, "work");
    await Deno.mkdir(dir);
    await Deno.mkdir(work);
    const config = await writeDirConfig(join(tmp, "sluice.yml"), dir, replica, {
      recursive: true,
    });
    const at = (rel: string) => join(dir, rel);
    const rep = (rel: string) => join(replica, rel);
    const check = async (...rels: string[]) => {
      for (const rel of rels) await caughtUp(at(rel), rep(rel), work);
    };
    let running: SluiceProcess | undefined = await SluiceProcess.start(config);
    try {
      for (let round = 0; round < 3; round++) {
        // The names of the previous round deleted and created again.
        await tenantOp(["delete", at("a.db")]);
        await tenantOp(["delete", at("sub/b.db")]);
        const a = await create(at("a.db"));
        await create(at("sub/b.db"), 4);
        await check("a.db", "sub/b.db");
        for (let n = 6; n < 12; n += 2) {
          await write(at("a.db"), a, n, 2); // each from a new connection that then closes
          await check("a.db");
        }
        // a.db moved to c.db with its side files and a new a.db at once; sub/b.db deleted and
        // created again.
        await tenantOp(["rename", at("a.db"), at("c.db"), `${nextGen++}`, "7", "200"]);
        await tenantOp(["delete", at("sub/b.db")]);
        await create(at("sub/b.db"), 2);
        await check("a.db", "c.db", "sub/b.db");
        // The directory removed with everything in it (meta dirs included) and made again.
        await tenantOp(["rmdir", at("sub")]);
        await create(at("sub/b.db"), 6);
        await check("sub/b.db");
      }
      // Deleted and re-created while sluice is stopped, then found again at start.
      await running.stop();
      running = undefined;
      await tenantOp(["delete", at("a.db")]);
      await create(at("a.db"), 3);
      await tenantOp(["rmdir", at("sub")]);
      await create(at("sub/b.db"), 8);
      await tenantOp(["rename", at("a.db"), at("c.db")]);
      await create(at("a.db"), 9);
      running = await SluiceProcess.start(config);
      await check("a.db", "c.db", "sub/b.db");
      await running.stop();
      running = undefined;
    } finally {
      if (running) await running.stop().catch(() => {});
    }
    for (const rel of ["a.db", "c.db", "sub/b.db"]) {
      const source = readTenant(at(rel));
      assert.equal(mixProblem(source), undefined, `${rel}: the application's database`);
      assert.ok(sameContent(await latest(rep(rel), work), source), `${rel}: latest restore`);
    }
    const replicas = await replicaDirs(replica);
    assert.deepEqual(replicas, ["a.db", "c.db", "sub/b.db"]);
    let points = 0;
    for (const rel of replicas) {
      const history = await checkHistory(rep(rel), work, 40);
      assert.deepEqual(history.problems, [], `${rel}: points in time`);
      points += history.pointsInTime;
    }
    assert.ok(points >= 20, `only ${points} points in time restored`);
  });
});

Deno.test("db: a database moved away and then its WAL, as by hand: sluice lets go and leaves the WAL to its owner", async () => {
  await withTempDir(async (tmp) => {
    const path = join(tmp, "a.db");
    const moved = join(tmp, "b.db");
    const gen = await create(path, 3);
    const db = new DB(path, { metaDir: join(tmp, ".a.db-sluice") });
    await db.open();
    try {
      // Committed after sluice's read transaction began: in the WAL only, which sluice's
      // connection keeps in place when the application's connection closes.
      await write(path, gen, 4, 5);
      await db.sync();
      assert.ok((await Deno.stat(path + "-wal")).size > 32);
      await tenantOp(["mv", path, moved]);
      await db.close(); // the monitor saw a.db go
      await tenantOp(["mv", path + "-wal", moved + "-wal"]); // fails when sluice took it
    } finally {
      await db.close();
    }
    const content = readTenant(moved);
    assert.equal(mixProblem(content), undefined);
    assert.equal(content.rows?.length, 8, "the moved database lost its last transactions");
  });
});

Deno.test("store: a database removed while an earlier removal of it is still closing comes back once that one has let go", async () => {
  await withTempDir(async (tmp) => {
    const path = join(tmp, "a.db");
    const replicaDir = join(tmp, "replica");
    const store = new Store({ logger: silentLogger, openRetryDelay: 60_000 });
    const entry = {
      path,
      metaDir: join(tmp, ".a.db-sluice"),
      createClient: () => new FileReplicaClient(replicaDir),
      syncInterval: 10,
      monitorInterval: 60_000,
    };
    try {
      const gen = await create(path, 2);
      assert.equal(await store.add(entry), true);
      await caughtUp(path, replicaDir, tmp);
      // A large transaction keeps the next sync busy, and with it the first removal.
      await write(path, gen, 3, 3000);
      store.notify(path); // the sync starts at once
      const first = store.remove(path); // e.g. the store's own poll found the file replaced…
      await store.remove(path); // …and the directory monitor saw it go
      assert.equal(await store.add(entry), true, "refused while its own removal was closing");
      await first;
      await write(path, gen, 3003, 2);
      store.notify(path);
      await caughtUp(path, replicaDir, tmp);
    } finally {
      await store.close();
    }
  });
});

Deno.test("store: a database replaced and then deleted while the store restarts it leaves no retry loop behind", async () => {
  await withTempDir(async (tmp) => {
    const path = join(tmp, "a.db");
    const other = join(tmp, "other.db");
    // The real file client, whose close() can be held: it is the last step of a removal, so
    // holding it keeps the store's restart of a.db in the middle, as a slow close would.
    let gate: PromiseWithResolvers<void> | undefined;
    class HeldClient extends FileReplicaClient {
      override async close(): Promise<void> {
        await gate?.promise;
        await super.close();
      }
    }
    const store = new Store({ logger: silentLogger, watchWAL: false, openRetryDelay: 50 });
    try {
      await create(path, 2);
      await store.add({
        path,
        metaDir: join(tmp, ".a.db-sluice"),
        createClient: () => new HeldClient(join(tmp, "replica")),
        syncInterval: 10,
        monitorInterval: 20, // the poll finds the replacement within 20 ms
      });
      await caughtUp(path, join(tmp, "replica"), tmp);
      gate = Promise.withResolvers();
      await create(other, 1);
      await tenantOp(["rename", other, path]);
      await waitFor("the poll to restart a.db", () => !store.paths.includes(path));
      // The directory monitor saw a.db deleted meanwhile: nothing may replicate or retry it.
      await tenantOp(["delete", path]);
      const removed = store.remove(path);
      gate.resolve();
      await removed;
      await waitFor("nothing kept for a.db", () => store.trackedPaths === 0, 5_000);
    } finally {
      gate?.resolve();
      await store.close();
    }
  });
});

Deno.test("store: a new database at a path whose replica kept no level-0 file continues after the replica's position with a snapshot", async () => {
  await withTempDir(async (tmp) => {
    const path = join(tmp, "app.db");
    const replicaDir = join(tmp, "replica");
    const url = `file://${replicaDir}`;
    const old = await create(path, 40);
    for (let i = 0; i < 3; i++) {
      const snap = await sluice("snapshot", path, url);
      assert.equal(snap.code, 0, snap.stderr);
      await write(path, old, 41 + 10 * i, 10);
    }
    // Bucket lifecycle rules expired level 0; the tenant was deleted with its meta dir.
    await Deno.remove(join(replicaDir, "ltx", "0"), { recursive: true });
    await tenantOp(["rmdir", join(tmp, ".app.db-sluice")]);
    await tenantOp(["delete", path]);
    const gen = await create(path, 2, 50);
    const store = new Store({ logger: silentLogger });
    try {
      await store.add({
        path,
        metaDir: join(tmp, ".app.db-sluice"),
        createClient: () => new FileReplicaClient(replicaDir),
        syncInterval: 10,
        monitorInterval: 100,
      });
      for (let i = 0; i < 4; i++) {
        await write(path, gen, 3 + i, 1);
        store.notify(path);
      }
      await caughtUp(path, replicaDir, tmp);
    } finally {
      await store.close();
    }
    const history = await checkHistory(replicaDir, tmp, 40);
    assert.deepEqual(history.problems, []);
  });
});

Deno.test("tenants: once their databases and files are gone nothing is kept for them: store and monitor bookkeeping empty, no metrics series", async () => {
  await withTempDir(async (tmp) => {
    const dir = join(tmp, "tenants");
    const replica = join(tmp, "replica");
    await Deno.mkdir(dir);
    // The safety-net poll runs often, so that it races the monitor for removed databases.
    const store = new Store({ logger: silentLogger, watchWAL: false, openRetryDelay: 100 });
    const monitor = new DirectoryMonitor({
      dir,
      pattern: "*.db",
      recursive: true,
      watch: true,
      store,
      logger: silentLogger,
      entryFor: (path) => ({
        path,
        metaDir: metaDirFor(path, { dir }),
        createClient: () => new FileReplicaClient(join(replica, relativeInside(dir, path)!)),
        syncInterval: 10,
        monitorInterval: 20,
      }),
    });
    const metrics = new Metrics({ status: () => store.status(), version: "test" });
    try {
      await monitor.start();
      for (let round = 0; round < 3; round++) {
        const names = ["a.db", "b.db", "s/c.db", "s/d.db"];
        for (const name of names) await create(join(dir, name), 2);
        await Deno.writeTextFile(join(dir, "junk.db"), "not a database\n");
        await waitFor("the tenants replicated", () => store.paths.length === names.length);
        assert.match(await metrics.text(), /sluice_db_txid\{db="[^"]+a\.db"\}/);
        // Deleted, deleted and re-created at once, moved out of the tree, removed with the dir.
        await tenantOp(["delete", join(dir, "a.db")]);
        await tenantOp(["delete", join(dir, "b.db")]);
        await create(join(dir, "b.db"), 1);
        await tenantOp(["rename", join(dir, "b.db"), join(tmp, `out-${round}.db`)]);
        await tenantOp(["rmdir", join(dir, "s")]);
        await Deno.remove(join(dir, "junk.db"));
        await waitFor(
          "every removal settled",
          () => store.paths.length === 0 && store.trackedPaths === 0 && monitor.trackedPaths === 0,
        );
      }
      assert.doesNotMatch(await metrics.text(), /db="/);
    } finally {
      metrics.close();
      await monitor.close();
      await store.close();
    }
  });
});

Deno.test("db: a rollback-journal database switched to WAL mode is reported once, at warn, naming it", async () => {
  await withTempDir(async (tmp) => {
    const path = join(tmp, "legacy.db");
    const app = new DatabaseSync(path);
    app.exec("PRAGMA journal_mode = delete; CREATE TABLE t (x); INSERT INTO t VALUES (1)");
    app.close();
    const lines: string[] = [];
    const logger = createLogger({ level: "info", sink: (line) => lines.push(line) });
    for (let open = 0; open < 2; open++) {
      const db = new DB(path, { metaDir: join(tmp, "meta"), logger });
      await db.open();
      await db.close();
    }
    const switched = lines.filter((line) => / WARN .*rollback-journal mode/.test(line));
    assert.equal(switched.length, 1, lines.join("\n"));
    assert.ok(switched[0].includes(`db=${path}`), switched[0]);
    const header = await Deno.readFile(path);
    assert.deepEqual([header[18], header[19]], [2, 2]); // WAL mode, for good
  });
});

Deno.test("sluice snapshot: a rollback-journal database is reported when it is switched to WAL mode", async () => {
  await withTempDir(async (tmp) => {
    const path = join(tmp, "legacy.db");
    const app = new DatabaseSync(path);
    app.exec("PRAGMA journal_mode = delete; CREATE TABLE t (x); INSERT INTO t VALUES (1)");
    app.close();
    const result = await sluice("snapshot", path, `file://${join(tmp, "replica")}`);
    assert.equal(result.code, 0, result.stderr);
    const lines = result.stderr.split("\n").filter((l) => /WARN .*rollback-journal mode/.test(l));
    assert.equal(lines.length, 1, result.stderr);
    assert.ok(lines[0].includes(path), lines[0]);
  });
});

Deno.test("monitor: files matching the pattern that are not databases are reported once each, at info, with the reason; databases being created are not", async () => {
  await withTempDir(async (tmp) => {
    const dir = join(tmp, "tenants");
    await Deno.mkdir(dir);
    await Deno.writeTextFile(
      join(dir, "junk.db"),
      "just text, and long enough to hold a header\n".repeat(4),
    );
    await Deno.writeFile(join(dir, "x.db"), new Uint8Array());
    const old = new Date(Date.now() - 60_000);
    await Deno.utime(join(dir, "junk.db"), old, old);
    await Deno.utime(join(dir, "x.db"), old, old);
    const lines: string[] = [];
    const added: string[] = [];
    const monitor = new DirectoryMonitor({
      dir,
      pattern: "*.db",
      recursive: false,
      watch: true,
      store: {
        add: (entry) => (added.push(entry.path), Promise.resolve(true)),
        remove: () => Promise.resolve(),
        notify() {},
      },
      logger: createLogger({ level: "info", sink: (line) => lines.push(line) }),
      entryFor: (path) => ({
        path,
        metaDir: join(tmp, "meta"),
        createClient: () => new FileReplicaClient(join(tmp, "replica")),
        syncInterval: 10,
        monitorInterval: 60_000,
      }),
    });
    const skipped = (name: string) =>
      lines.filter((line) => / INFO .*not a SQLite database/.test(line) && line.includes(name));
    try {
      await monitor.start();
      assert.equal(skipped("junk.db").length, 1, lines.join("\n"));
      assert.match(skipped("junk.db")[0], /reason="no SQLite header"/);
      assert.equal(skipped("x.db").length, 1, lines.join("\n"));
      assert.match(skipped("x.db")[0], /reason="empty file"/);
      // Written again and looked at again: still one line each.
      await Deno.writeTextFile(join(dir, "junk.db"), "more text\n", { append: true });
      await monitor.reconcile();
      // Created later: reported once the grace for a database being created has passed.
      await Deno.writeTextFile(
        join(dir, "late.db"),
        "not SQLite either, but long enough".repeat(4),
      );
      await waitFor("late.db reported", () => skipped("late.db").length === 1);
      // A database is created empty and gets its header at its first commit: never reported.
      await create(join(dir, "real.db"), 1);
      await waitFor("real.db added", () => added.includes(join(dir, "real.db")));
      await monitor.reconcile();
      assert.equal(skipped("junk.db").length, 1, lines.join("\n"));
      assert.equal(skipped("real.db").length, 0, lines.join("\n"));
      assert.equal(skipped("late.db").length, 1, lines.join("\n"));
    } finally {
      await monitor.close();
    }
  });
});
