/**
 * A checkpoint waits, the application and the replica do not.
 *
 * 1. Uploads do not wait for a checkpoint (issue 15): a checkpoint can wait for the
 *    application's write lock, so the store ships a sync's L0 file before it runs the
 *    checkpoint. A real `replicate` process, a database past the PASSIVE threshold, and an
 *    application process that commits rows and then holds the write lock: the replica restores
 *    those rows while the lock is still held.
 * 2. A TRUNCATE checkpoint after deferred PASSIVE ones does not hold the application's writers
 *    while it copies the whole WAL (RELIABILITY F14): a writer in another process with a short
 *    busy timeout never gets "database is locked", and the replica restores to the source.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  createDatabase,
  type Digest,
  digest,
  restoredDigest,
  runWriter,
  waitFor,
} from "./_sluice.ts";
import { shipAndCheckRestore } from "./_ship.ts";
import { spawnSluice, startWriter } from "../scripts/chaos_lib.ts";
import { DB } from "../src/engine/mod.ts";
import { createLogger } from "../src/log/mod.ts";

/**
 * The application of test 1: commits `rows` rows of 4 KiB on one connection, takes the write
 * lock on a second one at once (BEGIN IMMEDIATE, microseconds later: no sync of sluice's fits
 * in between) and prints "locked"; gives it up when stdin closes or after `holdMs`, then
 * prints "released".
 */
const LOCK_HOLDER = `
import { DatabaseSync } from "node:sqlite";
const [path, rows, holdMs] = Deno.args;
const app = new DatabaseSync(path);
const holder = new DatabaseSync(path);
app.exec("PRAGMA busy_timeout = 5000");
holder.exec("PRAGMA busy_timeout = 5000");
const insert = app.prepare("INSERT INTO t (n, payload) VALUES (?, ?)");
app.exec("BEGIN IMMEDIATE");
for (let n = 1; n <= Number(rows); n++) {
  insert.run(n, crypto.getRandomValues(new Uint8Array(4096)));
}
app.exec("COMMIT");
holder.exec("BEGIN IMMEDIATE");
console.log("locked");
const stdinClosed = (async () => { for await (const _ of Deno.stdin.readable) { /* until EOF */ } })();
let timer;
await Promise.race([stdinClosed, new Promise((r) => timer = setTimeout(r, Number(holdMs)))]);
clearTimeout(timer);
holder.exec("ROLLBACK");
console.log("released");
app.close();
holder.close();
`;

/** PASSIVE checkpoints are this far apart at least (db.ts MIN_CHECKPOINT_SPACING_MS), + margin. */
const CHECKPOINT_SPACING_MS = 1000 + 200;

Deno.test("checkpoint: uploads do not wait for a checkpoint that waits for the application's write lock", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-checkpoint-wait-" });
  const dbPath = join(dir, "app.db");
  const url = `file://${join(dir, "replica")}`;
  createDatabase(dbPath);
  const config = join(dir, "sluice.yml");
  // busy-timeout above the hold: the checkpoint then waits for the lock as long as the
  // application holds it (with the default 1 s it gives up and tries again, and the old
  // order delayed each upload by that second only).
  await Deno.writeTextFile(
    config,
    [
      "logging:",
      "  level: debug",
      "dbs:",
      `  - path: ${dbPath}`,
      "    min-checkpoint-page-count: 10",
      "    busy-timeout: 30s",
      "    replica:",
      `      url: ${url}`,
    ].join("\n") + "\n",
  );
  const holdMs = 8000;
  const replicate = spawnSluice(["replicate", "-c", config]);
  let holder: Deno.ChildProcess | undefined;
  try {
    // The DB counts checkpoint spacing from its open (the "replicating" line comes after it):
    // the rows' sync must find a PASSIVE checkpoint due, not too soon after that.
    const lines = (pattern: RegExp) =>
      replicate.stderr().split("\n").filter((line) => pattern.test(line)).length;
    const checkpointsStarted = () => lines(/ DEBUG checkpoint start /);
    const checkpointsDone = () => lines(/ DEBUG checkpoint db=/);
    await waitFor("sluice to replicate", () => replicate.stderr().includes("replicating"), 15_000);
    const opened = performance.now();
    const empty = await digest(dbPath);
    await waitFor("the replica to restore the empty table", async () => {
      return (await restoredDigest(url, dir))?.sha256 === empty.sha256;
    }, 15_000);
    await waitFor("the checkpoint spacing to pass", () => {
      return performance.now() - opened >= CHECKPOINT_SPACING_MS;
    });
    assert.equal(checkpointsStarted(), 0, "no checkpoint before the rows");

    holder = new Deno.Command(Deno.execPath(), {
      args: ["eval", LOCK_HOLDER, dbPath, "40", String(holdMs)],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    let output = "";
    const reading = (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of holder.stdout) output += decoder.decode(chunk, { stream: true });
    })();
    await waitFor("the application to commit and take the write lock", () => {
      return output.includes("locked");
    }, 15_000);
    // Every row committed before the lock was taken.
    const committed = await digest(dbPath);
    assert.equal(committed.rows, 40);
    let restored: Digest | undefined;
    // Well under the hold: before the change the upload came after the checkpoint, which
    // waited for the lock, so the rows reached the replica only after the release.
    await waitFor("the replica to restore the rows while the lock is held", async () => {
      restored = await restoredDigest(url, dir);
      // The rows made the checkpoint due: it started, and waits for the lock.
      return restored?.sha256 === committed.sha256 && checkpointsStarted() > 0;
    }, holdMs / 2).catch((err) => {
      const detail = { committed, restored, sluice: replicate.stderr().split("\n").slice(-15) };
      throw new Error(`${err.message}: ${JSON.stringify(detail, null, 1)}`);
    });
    assert.ok(!output.includes("released"), "the application still held the write lock");
    assert.equal(checkpointsDone(), 0, "the checkpoint was still waiting for the lock");
    assert.equal(restored?.integrity, "ok");

    await holder.stdin.close();
    await waitFor("the application to release the lock", () => output.includes("released"));
    assert.equal((await holder.status).code, 0);
    await reading;
    holder = undefined;
    const stopped = await replicate.stop("SIGTERM");
    assert.equal(stopped.code, 0, stopped.stderr);
  } finally {
    if (holder) {
      try {
        holder.kill("SIGKILL");
      } catch { /* exited */ }
      await holder.status;
    }
    await replicate.stop("SIGKILL");
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "checkpoint: no TRUNCATE copies a WAL that deferred PASSIVE checkpoints left (F14); the writer never gets 'database is locked'",
  // The checkpoint worker outlives the test by design (it stops when idle for a minute).
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-checkpoint-f14-" });
  const dbPath = join(dir, "app.db");
  const metaDir = join(dir, ".app.db-sluice");
  const replicaDir = join(dir, "replica");
  createDatabase(dbPath);
  const logged: string[] = [];
  const logger = createLogger({ level: "debug", sink: (line) => logged.push(line) });
  // Each sync reads at most 16 MiB: the round of checkpoints below then has a known reach.
  const syncBytes = 16 << 20;
  const db = new DB(dbPath, {
    metaDir,
    maxSyncWALBytes: syncBytes,
    truncatePageN: 1000,
    minCheckpointPageN: 1000,
    logger,
  });
  let writer: ReturnType<typeof startWriter> | undefined;
  try {
    await db.open();
    const opened = performance.now();
    await db.sync({ checkpoint: false });
    // A backlog no sync has read yet, written as fast as the writer can: ~14 syncs' worth
    // (1,350 transactions of 1-4 rows of 64 KiB, seeded). The next sync then runs the
    // PASSIVE + TRUNCATE round (past truncate-page-n): the PASSIVE one syncs 9 times, each
    // finding more, and is deferred ("the writer outpaces the syncs"); the TRUNCATE's
    // catch-up then reaches the end. Before F14's fix that TRUNCATE ran and copied the whole
    // WAL (~225 MiB, 0.7 s here) while it held the application's writers.
    await runWriter("--db", dbPath, "--count", "1350", "--row-size", "65536");
    const backlog = (await Deno.stat(`${dbPath}-wal`)).size;
    assert.ok(
      backlog > 11 * syncBytes && backlog < 17 * syncBytes,
      `a backlog the round defers the PASSIVE for and the TRUNCATE catches up with: ${backlog}`,
    );
    // The application keeps writing 64 KiB rows and gives up on the lock after 200 ms. Paced
    // (10 commits a second), so that the TRUNCATE's catch-up reaches the end in this round:
    // a writer as fast as it can makes that a matter of luck (F14 took a 60 s run to show).
    const acks = join(dir, "acks");
    writer = startWriter([
      "--db",
      dbPath,
      "--row-size",
      "65536",
      "--rate",
      "10",
      "--busy-timeout",
      "200",
      "--ack-file",
      acks,
    ]);
    await waitFor("the writer's first commit", async () => {
      return ((await Deno.stat(acks).catch(() => undefined))?.size ?? 0) > 0;
    });
    // Checkpoints are spaced 1 s, counted from the open; then one sync runs the round. The
    // writer stops right after it: the TRUNCATE that follows a PASSIVE one that ran (the next
    // round) still holds writers while it truncates the WAL file, ~130 ms for this one.
    await waitFor("the checkpoint spacing to pass", () => performance.now() - opened >= 1200);
    await db.sync();
    const truncations = () => db.stats.truncationsContinued + db.stats.truncationsSnapshotted;
    const round = { truncations: truncations(), stats: { ...db.stats } };
    const summary = await writer.stop();
    writer = undefined;
    const detail = JSON.stringify({
      summary,
      round,
      holds: db.writeLockHoldsMs,
      log: logged.filter((line) => line.includes("checkpoint")),
    });
    assert.ok(
      logged.some((line) => line.includes("checkpoint deferred: the writer outpaces the syncs")),
      `the PASSIVE checkpoint was deferred: ${detail}`,
    );
    assert.ok(summary.committed > 0, detail);
    assert.equal(summary.busyErrors, 0, `the writer never got "database is locked": ${detail}`);
    assert.equal(round.truncations, 0, `no TRUNCATE after the deferred PASSIVE: ${detail}`);
    // Once the writer is gone, a PASSIVE checkpoint runs and the TRUNCATE after it.
    await waitFor("a TRUNCATE checkpoint once the writer stopped", async () => {
      await db.sync();
      return truncations() > 0;
    }, 20_000);

    while ((await db.sync()).txid !== undefined) { /* until a sync finds nothing */ }
    const txid = db.txid;
    await db.close();
    await shipAndCheckRestore({ metaDir, replicaDir, txid, dbPath, dir });
  } finally {
    await writer?.stop().catch(() => {});
    await db.close().catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
});
