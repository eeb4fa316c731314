/**
 * A meta directory too small for sluice's own local L0 files (issue 21, item 3): an 8 MiB tmpfs,
 * an application writing 64 KiB rows. sluice must drop the local copies already on the
 * replica and go on, so that the replica ends equal to the source, also after a restart with
 * the directory full to the last byte; and say so in `/status` and `/metrics`.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { createDatabase, digest, freePort, restoredDigest } from "./_sluice.ts";
import { spawnSluice, until, writeConfig } from "../scripts/chaos_lib.ts";
import { canMount, mountTmpfs, unmount } from "./_mount.ts";
import { FileReplicaClient } from "../src/replica/mod.ts";
import type { DaemonStatus } from "../src/daemon/mod.ts";

const MOUNT = await canMount();
const ROW_BYTES = 64 * 1024;

/**
 * Writes rows `n = first … first + count − 1` of 64 KiB, one transaction each, from a python3
 * process: new rows, or with `rowsKept` the same few rows over and over (the database stays
 * small while its WAL history grows).
 */
async function writeRows(
  dbPath: string,
  first: number,
  count: number,
  rowsKept = 0,
): Promise<void> {
  const script = `
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
first, count, size, kept = (int(a) for a in sys.argv[2:6])
for n in range(first, first + count):
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT OR REPLACE INTO t (id, n, payload) VALUES (?, ?, randomblob(?))",
               (n % kept + 1 if kept else n, n, size))
    db.execute("COMMIT")
    time.sleep(0.01)  # an application's pace, not a bulk load: syncs stay ~1 MiB
db.close()
`;
  const args = [dbPath, first, count, ROW_BYTES, rowsKept].map(String);
  const out = await new Deno.Command("python3", { args: ["-c", script, ...args], stderr: "piped" })
    .output();
  if (!out.success) throw new Error(`writer failed: ${new TextDecoder().decode(out.stderr)}`);
}

/** Fills the file system of `dir` to the last byte with a file named `filler`. */
async function fill(dir: string): Promise<void> {
  const file = await Deno.open(join(dir, "filler"), { write: true, create: true, append: true });
  const chunk = new Uint8Array(64 * 1024);
  try {
    for (let size = chunk.length; size > 0;) {
      try {
        await file.write(chunk.subarray(0, size));
      } catch {
        size >>= 1; // full: try smaller pieces down to the last block
      }
    }
  } finally {
    file.close();
  }
}

Deno.test({
  name: "meta dir on an 8 MiB tmpfs, 64 KiB rows: replication goes on, restore = source",
  ignore: !MOUNT,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "sluice-meta-full-" });
    const dbPath = join(dir, "app.db");
    const meta = join(dir, "meta");
    const replica = join(dir, "replica");
    const url = `file://${replica}`;
    const config = join(dir, "sluice.yml");
    const port = freePort();
    await Deno.mkdir(meta);
    await mountTmpfs(meta, "8m");
    await writeConfig(
      config,
      `
addr: 127.0.0.1:${port}
dbs:
  - path: ${dbPath}
    meta-path: ${meta}
    replica:
      url: ${url}
`,
    );
    createDatabase(dbPath);
    const replicate = spawnSluice(["replicate", "-c", config]);
    try {
      // 490 rows of 64 KiB: about 31 MiB of L0 files through an 8 MiB directory.
      await writeRows(dbPath, 1, 490);
      const source = await digest(dbPath);
      assert.equal(source.rows, 490);
      await until(
        "the replica to restore to the source",
        async () => (await restoredDigest(url, dir))?.sha256 === source.sha256,
        60_000,
        500,
      );

      // Reported as a condition of the database, not only in the log.
      const status = await (await fetch(`http://127.0.0.1:${port}/status`)).json() as DaemonStatus;
      assert.equal(status.databases[0].metaDiskFull, true);
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      assert.match(metrics, /^sluice_db_meta_disk_full\{db="[^"]+"\} 1$/m);

      const stopped = await replicate.stop("SIGTERM");
      assert.equal(stopped.code, 0, stopped.stderr);
      const restored = await restoredDigest(url, dir);
      assert.equal(restored?.integrity, "ok");
      assert.equal(restored?.sha256, source.sha256);
    } finally {
      await replicate.stop("SIGKILL");
      await unmount(meta).catch(() => {});
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "meta dir full to the last byte at start: replication goes on, restore = source",
  ignore: !MOUNT,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "sluice-meta-restart-" });
    const dbPath = join(dir, "app.db");
    const meta = join(dir, "meta");
    const replica = join(dir, "replica");
    const url = `file://${replica}`;
    await Deno.mkdir(meta);
    await mountTmpfs(meta, "8m");
    const config = join(dir, "sluice.yml");
    await writeConfig(
      config,
      `
dbs:
  - path: ${dbPath}
    meta-path: ${meta}
    replica:
      url: ${url}
`,
    );
    createDatabase(dbPath);
    const args = ["replicate", "-c", config];
    let replicate = spawnSluice(args);
    try {
      // 80 updates of 5 rows: ~5 MiB of local L0 files (kept for l0-retention), a small
      // database: the snapshot the next start begins with fits once they are gone.
      await writeRows(dbPath, 1, 80, 5);
      let source = await digest(dbPath);
      await until(
        "the replica to restore to the source",
        async () => (await restoredDigest(url, dir))?.sha256 === source.sha256,
        30_000,
        500,
      );
      assert.equal((await replicate.stop("SIGTERM")).code, 0);

      await fill(meta);
      replicate = spawnSluice(args);
      await writeRows(dbPath, 81, 20, 5);
      source = await digest(dbPath);
      await until(
        "the replica to restore to the source after the restart",
        async () => (await restoredDigest(url, dir))?.sha256 === source.sha256,
        30_000,
        500,
      ).catch((err) => {
        throw new Error(`${err.message}\n${replicate.stderr().slice(-3000)}`);
      });
      const stopped = await replicate.stop("SIGTERM");
      assert.equal(stopped.code, 0, stopped.stderr);
      const restored = await restoredDigest(url, dir);
      assert.equal(restored?.integrity, "ok");
      assert.equal(restored?.sha256, (await digest(dbPath)).sha256);
    } finally {
      await replicate.stop("SIGKILL");
      await unmount(meta).catch(() => {});
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "meta dir: a write error names the meta directory, not a file replica",
  ignore: !MOUNT,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "sluice-meta-name-" });
    try {
      await mountTmpfs(dir, "64k");
      const local = FileReplicaClient.metaDirectory(dir);
      await assert.rejects(
        () => local.writeLTXFile({ level: 0, minTXID: 1, maxTXID: 1 }, new Uint8Array(1 << 20), 0),
        (err: Error) =>
          err.message.startsWith(`meta directory ${dir}: `) &&
          !err.message.includes("file replica") && err.message.includes("No space left"),
      );
    } finally {
      await unmount(dir).catch(() => {});
      await Deno.remove(dir, { recursive: true });
    }
  },
});
