/**
 * Parked tenants (issue 16, item 1): a database idle for `park-after` gives back its
 * connections and descriptors; a change wakes it, and nothing committed while it was parked is
 * missed, whatever the application did meanwhile:
 *
 * (a) one row; (b) more than 1,000 pages, so that its own autocheckpoint restarts the WAL;
 * (c) `PRAGMA wal_checkpoint(TRUNCATE)`; (d) the file replaced by another database;
 * (e) the file deleted; (f) a writer that keeps its connection open across the parking. And
 * when more databases are added than the descriptor budget allows open at once, the least
 * recently active ones park early, and every write still arrives.
 *
 * Every application operation is a python3 process (commit and exit) except (f). Each case
 * ends with a restore of the replica that must equal the database (rows, integrity_check).
 * "Parked" is read from /proc: sluice holds no descriptor of the database, its WAL or -shm.
 */

import { PYTHON } from "./_python.ts";
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  createDatabasesInChild,
  hasReplica,
  restoredRows,
  SluiceProcess,
  tableRows,
  waitFor,
  withTempDir,
  writeDirConfig,
  WriterProcess,
} from "./_monitor_helpers.ts";
import { type DatabaseEntry, Store } from "../src/engine/mod.ts";
import { FileReplicaClient } from "../src/replica/mod.ts";
import { silentLogger } from "../src/log/mod.ts";

/** Runs python3 code with `sys.argv[1]` = the database path; a short-lived application. */
async function py(db: string, code: string): Promise<void> {
  const out = await new Deno.Command(PYTHON!, {
    args: ["-c", "import sqlite3, sys, os\ndb = sys.argv[1]\n" + code, db],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
}

/** Whether the replica at `replicaDir` restores to exactly the rows `expected` (false until then). */
async function restoresTo(replicaDir: string, expected: number[]): Promise<boolean> {
  const restored = await restoredRows(replicaDir).catch(() => []);
  return restored.length === expected.length && restored.every((n, i) => n === expected[i]);
}

const INSERT = (from: number, to: number, size = 64) =>
  `c = sqlite3.connect(db)\n` +
  `c.execute("PRAGMA busy_timeout = 5000")\n` +
  `c.executemany("INSERT INTO t (n, payload) VALUES (?, randomblob(${size}))", ` +
  `[(n,) for n in range(${from}, ${to + 1})])\n` +
  `c.commit()\n`;

Deno.test({
  name: "parked tenants wake on every kind of change and miss nothing",
  ignore: PYTHON === undefined,
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await withTempDir(async (tmp) => {
    const dir = join(tmp, "tenants");
    const replica = join(tmp, "replica");
    const names = ["a", "b", "c", "d", "e", "f"].map((n) => `${n}.db`);
    const path = (name: string) => join(dir, name);
    const rep = (name: string) => join(replica, name);
    await createDatabasesInChild(names.map(path), 5);
    const config = await writeDirConfig(join(tmp, "sluice.yml"), dir, replica, {
      extra: ["park-after: 300ms"],
    });
    const sluice = await SluiceProcess.start(config);
    const parked = (name: string) =>
      waitFor(`${name} parked`, async () => !(await sluice.holds(path(name))), 20_000);
    const caughtUp = async (name: string, expected: number[]) => {
      let last: number[] = [];
      await waitFor(`${name} restored equal to its database`, async () => {
        last = await restoredRows(rep(name)).catch(() => []);
        return last.length === expected.length && last.every((n, i) => n === expected[i]);
      }, 20_000).catch((err) => {
        throw new Error(
          `${(err as Error).message}: restored ${last.length} rows, expected ${expected.length}` +
            `\n${sluice.log.slice(-3000)}`,
        );
      });
    };
    // (f)'s application: opens before parking, keeps its connection, writes on request.
    const holder = new Deno.Command(PYTHON!, {
      args: [
        "-c",
        "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\n" +
        "c.execute('PRAGMA busy_timeout = 5000')\n" +
        "for line in sys.stdin:\n" +
        "  n = int(line)\n" +
        "  c.execute('INSERT INTO t (n, payload) VALUES (?, randomblob(64))', (n,))\n" +
        "  c.commit()\n" +
        "  print(n, flush=True)\n",
        path("f.db"),
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const holderIn = holder.stdin.getWriter();
    const holderOut = holder.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let holderBuffer = "";
    const holderWrite = async (n: number) => {
      await holderIn.write(new TextEncoder().encode(`${n}\n`));
      // One line back per write; a pipe may deliver it in pieces.
      while (!holderBuffer.includes("\n")) {
        const { value, done } = await holderOut.read();
        if (done) break;
        holderBuffer += value;
      }
      const newline = holderBuffer.indexOf("\n");
      const line = newline < 0 ? holderBuffer : holderBuffer.slice(0, newline);
      holderBuffer = newline < 0 ? "" : holderBuffer.slice(newline + 1);
      assert.equal(line.trim(), String(n));
    };
    try {
      for (const name of names) {
        await waitFor(`${name} on the replica`, () => hasReplica(rep(name)), 20_000);
      }
      await holderWrite(6);
      for (const name of names) await parked(name);

      // (a) one row.
      await py(path("a.db"), INSERT(6, 6));
      // (b) > 1,000 pages of 4 KiB: the application's autocheckpoint restarts the WAL.
      await py(path("b.db"), INSERT(6, 1505, 3000) + INSERT(1506, 2505, 3000) + INSERT(2506, 2510));
      // (c) a TRUNCATE checkpoint, then one more row.
      await py(
        path("c.db"),
        INSERT(6, 50) + `c.execute("PRAGMA wal_checkpoint(TRUNCATE)")\n` + INSERT(51, 52),
      );
      // (d) replaced by another database (different rows) moved over it.
      await py(
        path("d.db") + ".new",
        "c = sqlite3.connect(db)\nc.execute('PRAGMA journal_mode = wal')\n" +
          "c.execute('CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, payload BLOB)')\n" +
          "c.executemany('INSERT INTO t (n, payload) VALUES (?, x\\'00\\')', " +
          "[(n,) for n in range(100, 110)])\nc.commit()\nc.close()\n" +
          "os.replace(db, db[:-4])\n",
      );
      // (e) deleted: its replica keeps what it had.
      const beforeDelete = tableRows(path("e.db"));
      await py(path("e.db"), INSERT(6, 7));
      const lastOfE = tableRows(path("e.db"));
      assert.deepEqual(lastOfE, [...beforeDelete, 6, 7]);
      // (f) the long-lived connection writes again.
      await holderWrite(7);

      for (const name of ["a.db", "b.db", "c.db", "d.db", "f.db"]) {
        await caughtUp(name, tableRows(path(name)));
      }
      await caughtUp("e.db", lastOfE);
      await Deno.remove(path("e.db"));
      for (const suffix of ["-wal", "-shm"]) {
        await Deno.remove(path("e.db") + suffix).catch(() => {});
      }
      await waitFor("e.db released", async () => !(await sluice.holds(path("e.db"))), 20_000);
      assert.deepEqual(await restoredRows(rep("e.db")), lastOfE);
      assert.deepEqual(tableRows(path("d.db")), [
        100,
        101,
        102,
        103,
        104,
        105,
        106,
        107,
        108,
        109,
      ]);

      // They park again, and one more row each still arrives.
      for (const name of ["a.db", "b.db", "c.db", "d.db"]) await parked(name);
      for (const name of ["a.db", "b.db", "c.db", "d.db"]) {
        const next = Math.max(...tableRows(path(name))) + 1;
        await py(path(name), INSERT(next, next));
        await caughtUp(name, tableRows(path(name)));
      }
    } finally {
      await holderIn.close().catch(() => {});
      await holder.status;
      await sluice.stop();
    }
  });
});

Deno.test({
  name: "beyond the descriptor budget the least recently active databases park; none is lost",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await withTempDir(async (dir) => {
    const maxActive = 3;
    const store = new Store({ logger: silentLogger, maxActive });
    const entries: DatabaseEntry[] = Array.from({ length: 8 }, (_, i) => ({
      path: join(dir, `t${i}.db`),
      metaDir: join(dir, `.t${i}.db-sluice`),
      createClient: () => new FileReplicaClient(join(dir, "replica", `t${i}.db`)),
      syncInterval: 20,
      monitorInterval: 250,
    }));
    try {
      await createDatabasesInChild(entries.map((e) => e.path), 3);
      for (const entry of entries) assert.equal(await store.add(entry), true);
      const open = () => store.paths.length - store.parkedPaths.length;
      assert.ok(open() <= maxActive, `${open()} databases open, budget ${maxActive}`);
      // Each one written in turn (and woken for it), twice over.
      for (let round = 0; round < 2; round++) {
        for (const [i, entry] of entries.entries()) {
          await WriterProcess.run(entry.path, 2 + round + i);
          await waitFor(
            `t${i}.db replicated`,
            () => restoresTo(join(dir, "replica", `t${i}.db`), tableRows(entry.path)),
            20_000,
          );
          assert.ok(open() <= maxActive, `${open()} databases open, budget ${maxActive}`);
        }
      }
    } finally {
      await store.close();
    }
  });
});

Deno.test({
  name: "more tenants than the descriptor limit allows open: all replicated, no crash",
  ignore: PYTHON === undefined,
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await withTempDir(async (tmp) => {
    const dir = join(tmp, "tenants");
    const replica = join(tmp, "replica");
    const names = Array.from({ length: 120 }, (_, i) => `t${i}.db`);
    await createDatabasesInChild(names.map((n) => join(dir, n)), 2);
    const config = await writeDirConfig(join(tmp, "sluice.yml"), dir, replica);
    // 700 descriptors: room for (700 - 512) / 8 = 23 open databases; `exec` keeps the pid.
    const child = new Deno.Command("bash", {
      args: [
        "-c",
        `ulimit -n 700 && exec "${Deno.execPath()}" run -A --quiet main.ts replicate -c "${config}"`,
      ],
      cwd: new URL("..", import.meta.url).pathname,
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const log: string[] = [];
    const reading = (async () => {
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) log.push(chunk);
    })();
    const alive = async () => {
      const exited = await Promise.race([child.status.then(() => true), Promise.resolve(false)]);
      if (exited) throw new Error(`sluice exited:\n${log.join("").slice(-3000)}`);
    };
    try {
      await waitFor("every tenant on its replica", async () => {
        await alive();
        return names.every((n) => hasReplica(join(replica, n)));
      }, 60_000);
      await py(
        dir,
        "for i in range(120):\n" +
          "  c = sqlite3.connect(os.path.join(db, 't%d.db' % i))\n" +
          "  c.execute('PRAGMA busy_timeout = 5000')\n" +
          "  c.execute('INSERT INTO t (n, payload) VALUES (3, x\\'00\\')')\n" +
          "  c.commit()\n  c.close()\n",
      );
      for (const name of names) {
        await waitFor(`${name} restored with its new row`, async () => {
          await alive();
          return (await restoredRows(join(replica, name)).catch(() => [])).length === 3;
        }, 30_000);
      }
      const fds = [...Deno.readDirSync(`/proc/${child.pid}/fd`)].length;
      assert.ok(fds < 700, `${fds} descriptors open`);
    } finally {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      const status = await child.status;
      await reading;
      assert.equal(status.code, 0, log.join("").slice(-3000));
    }
  });
});

/**
 * A store that watches nothing (no WAL watch, no directory monitor) and sweeps its parked
 * databases every `sweepInterval` ms, and the entry of `a.db` in `dir` that parks after 200 ms.
 */
function unwatchedStore(
  dir: string,
  sweepInterval: number,
): { store: Store; entry: DatabaseEntry } {
  const store = new Store({ logger: silentLogger, watchWAL: false, sweepInterval });
  const entry: DatabaseEntry = {
    path: join(dir, "a.db"),
    metaDir: join(dir, ".a.db-sluice"),
    createClient: () => new FileReplicaClient(join(dir, "replica")),
    syncInterval: 20,
    monitorInterval: 100,
    parkAfter: 200,
  };
  return { store, entry };
}

Deno.test({
  name: "without any watcher the sweep wakes a parked database that changed",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await withTempDir(async (dir) => {
    // watchWAL: false and no directory monitor: nothing but the sweep can see the change.
    const { store, entry } = unwatchedStore(dir, 500);
    try {
      await createDatabasesInChild([entry.path], 3);
      assert.equal(await store.add(entry), true);
      await waitFor("a.db parked", () => store.parkedPaths.length === 1, 20_000);
      await WriterProcess.run(entry.path, 4);
      await waitFor(
        "a.db replicated",
        () => restoresTo(join(dir, "replica"), tableRows(entry.path)),
        20_000,
      );
    } finally {
      await store.close();
    }
  });
});

Deno.test({
  name: "stopping syncs a parked database written since it parked whose change was not seen yet",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await withTempDir(async (dir) => {
    // No watcher and a sweep far slower than the test: nothing sees the write before close(),
    // as when its inotify event is still queued behind the stop (CI saw that under load).
    const { store, entry } = unwatchedStore(dir, 3_600_000);
    let closed = false;
    try {
      await createDatabasesInChild([entry.path], 3);
      assert.equal(await store.add(entry), true);
      await waitFor("a.db parked", () => store.parkedPaths.length === 1, 20_000);
      const before = tableRows(entry.path).length;
      // A process that commits and exits: its close checkpoints and deletes the WAL.
      await WriterProcess.run(entry.path, 4);
      assert.equal(store.parkedPaths.length, 1, "still parked: nothing saw the write");
      assert.deepEqual(await store.close(), []);
      closed = true;
      const expected = tableRows(entry.path);
      assert.ok(expected.length > before, "the writer committed rows");
      assert.deepEqual(await restoredRows(join(dir, "replica")), expected);
    } finally {
      if (!closed) await store.close();
    }
  });
});
