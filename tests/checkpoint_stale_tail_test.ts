/**
 * A WAL restarted without TRUNCATE keeps its file length: past the last commit lies an older
 * generation's tail. sluice must still checkpoint the new generation once it passes the
 * PASSIVE threshold (1,000 pages), or the application's WAL grows again to the length of the
 * old one (which was 800 MB after a 64 KiB-blob writer ran: the checkpoints compared with the
 * file's size and took the stale tail for a backlog, deferring every one).
 *
 * Each application step is a python3 process that commits and exits (a second connection,
 * held open by this test, keeps SQLite from deleting the WAL when the writer closes). The
 * replica must restore to exactly the rows of the database at the end.
 */

import { PYTHON } from "./_python.ts";
import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import {
  createDatabasesInChild,
  restoredRows,
  SluiceProcess,
  tableRows,
  waitFor,
  walHeaderOf,
  withTempDir,
  writeDirConfig,
} from "./_monitor_helpers.ts";

/** Inserts `rows` rows of ~60 KiB each (about 15 pages each) in one transaction. */
async function burst(db: string, from: number, rows: number): Promise<void> {
  const code = "import sqlite3, sys\n" +
    "c = sqlite3.connect(sys.argv[1])\n" +
    'c.execute("PRAGMA busy_timeout = 5000")\n' +
    `c.executemany("INSERT INTO t (n, payload) VALUES (?, randomblob(60000))", ` +
    `[(n,) for n in range(${from}, ${from + rows})])\n` +
    "c.commit()\n";
  const out = await new Deno.Command(PYTHON!, { args: ["-c", code, db] }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
}

/** The WAL header's salts, as one string (they change when the WAL restarts). */
function walSalts(db: string): string {
  const header = walHeaderOf(db);
  return header ? `${header.salt1}:${header.salt2}` : "none";
}

Deno.test({
  name: "a restarted WAL with an older generation's tail past it is still checkpointed",
  ignore: PYTHON === undefined,
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await withTempDir(async (dir) => {
    const tenants = join(dir, "tenants");
    const replica = join(dir, "replica");
    await Deno.mkdir(tenants);
    const db = join(tenants, "a.db");
    await createDatabasesInChild([db], 1);
    // Keeps the WAL from being deleted (and so truncated) when a writer process closes.
    const holder = new DatabaseSync(db);
    holder.exec("PRAGMA busy_timeout = 5000");
    const config = await writeDirConfig(join(dir, "sluice.yml"), tenants, replica, {
      extra: ["park-after: 0"],
    });
    const sluice = await SluiceProcess.start(config);
    try {
      // A long WAL (about 25 MB), then a restart: the file keeps its length.
      await burst(db, 100, 400);
      const first = walSalts(db);
      let n = 1000;
      await waitFor("the WAL to restart after the first burst", async () => {
        await burst(db, n++, 1);
        return walSalts(db) !== first;
      }, 60_000);
      const long = Deno.statSync(`${db}-wal`).size;
      assert.ok(long > 20_000_000, `the WAL file kept its length (${long} bytes)`);
      // The new generation passes 1,000 pages but stays well short of the old length.
      const second = walSalts(db);
      await burst(db, 2000, 80);
      assert.ok(Deno.statSync(`${db}-wal`).size === long, "the second burst fits in the file");
      await waitFor("the WAL to restart after the second burst", async () => {
        await burst(db, n++, 1);
        return walSalts(db) !== second;
      }, 60_000);
      await waitFor(
        "the replica to hold every row",
        async () =>
          JSON.stringify(await restoredRows(join(replica, "a.db")).catch(() => [])) ===
            JSON.stringify(tableRows(db)),
        60_000,
      );
    } finally {
      await sluice.stop();
      holder.close();
    }
  });
});
