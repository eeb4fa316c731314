/**
 * The database file replaced under a running sluice: what sluice may and may not do to the
 * `-wal` and `-shm` beside it, and that its cursor is not trusted for the new file.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { DB } from "../src/engine/mod.ts";
import { createDatabase } from "./_sluice.ts";

function count(path: string): number {
  const conn = new DatabaseSync(path, { readOnly: true });
  try {
    return (conn.prepare("SELECT count(*) AS c FROM t").get() as { c: number }).c;
  } finally {
    conn.close();
  }
}

/** The application side of the first test, in its own process (POSIX locks are per process). */
const APP = `
import { DatabaseSync } from "node:sqlite";
const [path, copy] = Deno.args;
let app = new DatabaseSync(path);
for (let n = 1; n <= 10; n++) app.prepare("INSERT INTO t (n) VALUES (?)").run(n);
console.log("written");
await Deno.stdin.read(new Uint8Array(1));
app.exec("VACUUM INTO '" + copy + "'");
app.exec("PRAGMA wal_checkpoint(TRUNCATE)");
app.close();
await Deno.rename(copy, path);
app = new DatabaseSync(path);
for (let n = 11; n <= 15; n++) app.prepare("INSERT INTO t (n) VALUES (?)").run(n);
console.log("replaced");
await Deno.stdin.read(new Uint8Array(1));
for (let n = 16; n <= 20; n++) app.prepare("INSERT INTO t (n) VALUES (?)").run(n);
app.close();
console.log("closed");
`;

Deno.test("db: an application that reopens a replaced file at once keeps its WAL", async () => {
  // TRUNCATE checkpoint, mv a copy over the file, reopen and write: SQLite reuses the empty
  // -wal (same inode) for the new file. Closing sluice's handle on the old file must not
  // move that now-live WAL aside (it did once: the application's commits were lost).
  const dir = await Deno.makeTempDir({ prefix: "sluice-db-replace-" });
  const path = join(dir, "app.db");
  createDatabase(path);
  const db = new DB(path, { metaDir: join(dir, "meta") });
  await db.open();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", APP, path, join(dir, "copy.db")],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const writer = child.stdin.getWriter();
  const next = async (expected: string) => {
    let text = "";
    while (!text.includes(expected)) {
      const { value, done } = await lines.read();
      if (done) throw new Error(`application exited before "${expected}"`);
      text += value;
    }
  };
  try {
    await next("written");
    await db.sync();
    await writer.write(new Uint8Array([10]));
    await next("replaced");
    const walInode = (await Deno.stat(path + "-wal")).ino;
    assert.ok(await db.replaced());
    await db.close();
    assert.equal((await Deno.stat(path + "-wal")).ino, walInode, "the live WAL stays in place");
    await Deno.stat(path + "-shm"); // and so does the shared-memory index
    await writer.write(new Uint8Array([10]));
    await next("closed");
    assert.equal(count(path), 20);
  } finally {
    await writer.close().catch(() => {});
    await child.status;
    await db.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("db: the old WAL of a file replaced while nobody uses it is set aside", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-db-replace-" });
  const path = join(dir, "app.db");
  createDatabase(path);
  const db = new DB(path, { metaDir: join(dir, "meta") });
  await db.open();
  try {
    const app = new DatabaseSync(path);
    app.exec("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, n INTEGER, payload BLOB)");
    for (let n = 1; n <= 10; n++) app.prepare("INSERT INTO t (n) VALUES (?)").run(n);
    app.close(); // sluice's connection keeps the WAL (with its frames) alive
    await db.sync();
    assert.ok((await Deno.stat(path + "-wal")).size > 32);
    const other = join(dir, "other.db");
    createDatabase(other);
    await Deno.rename(other, path);
    await db.close();
    // SQLite would replay the old frames into the new file: they must be gone from the path.
    await assert.rejects(Deno.stat(path + "-wal"), Deno.errors.NotFound);
    const aside = [...Deno.readDirSync(dir)].filter((e) => e.name.startsWith("app.db-wal.stale-"));
    assert.equal(aside.length, 1);
    const conn = new DatabaseSync(path);
    assert.equal(
      (conn.prepare("PRAGMA integrity_check").get() as { integrity_check: string }).integrity_check,
      "ok",
    );
    conn.close();
  } finally {
    await db.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("db: a file replaced while sluice was down is snapshotted, not continued", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-db-replace-" });
  const path = join(dir, "app.db");
  const metaDir = join(dir, "meta");
  createDatabase(path);
  let db = new DB(path, { metaDir });
  await db.open();
  try {
    const app = new DatabaseSync(path);
    app.exec("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, n INTEGER, payload BLOB)");
    app.prepare("INSERT INTO t (n) VALUES (1)").run();
    app.close();
    await db.sync();
    await db.close();
    // A byte copy of the same file moved in: the WAL still matches the cursor exactly.
    await Deno.copyFile(path, path + ".copy");
    await Deno.rename(path + ".copy", path);
    db = new DB(path, { metaDir });
    await db.open();
    const result = await db.sync();
    assert.equal(result.snapshot, true, "the next sync is a snapshot");
    assert.equal(result.reason, "database file replaced since the last sync");
    assert.equal(result.txid, 2, "TXIDs continue");
    // The same file opened again is not taken for a replacement. (Its next sync may still
    // snapshot for another reason: closing the last connection checkpoints the WAL away.)
    await db.close();
    db = new DB(path, { metaDir });
    await db.open();
    const app2 = new DatabaseSync(path);
    app2.prepare("INSERT INTO t (n) VALUES (2)").run();
    app2.close();
    const again = await db.sync();
    assert.notEqual(again.reason, "database file replaced since the last sync");
    assert.equal(again.txid, 3);
  } finally {
    await db.close();
    await Deno.remove(dir, { recursive: true });
  }
});
