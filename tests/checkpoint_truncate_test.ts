/**
 * The TRUNCATE checkpoint (`truncate-page-n`, RELIABILITY F11): a writer that never pauses must
 * not grow the WAL without bound, and `truncate-page-n: 0` turns the checkpoint off. Real
 * writers in other processes, a real replicate process, restores compared with the source.
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
import { spawnSluice, startWriter } from "../scripts/chaos_lib.ts";

/** Waits until the replica restores to the database's current content, and returns it. */
async function caughtUp(dbPath: string, url: string, dir: string): Promise<Digest> {
  const source = await digest(dbPath);
  let last: Digest | undefined;
  await waitFor("the replica to restore to the source", async () => {
    last = await restoredDigest(url, dir);
    return last?.sha256 === source.sha256;
  }, 60_000);
  assert.equal(last?.integrity, "ok");
  return source;
}

/** Salt-1 of the WAL header (it changes whenever the WAL restarts). */
async function walSalt1(walPath: string): Promise<number> {
  const file = await Deno.open(walPath);
  try {
    const header = new Uint8Array(32);
    assert.equal(await file.read(header), 32, "a WAL header");
    return new DataView(header.buffer).getUint32(16);
  } finally {
    file.close();
  }
}

async function writeConfig(dir: string, dbPath: string, url: string, keys: string[]) {
  const config = join(dir, "sluice.yml");
  await Deno.writeTextFile(
    config,
    [
      "dbs:",
      `  - path: ${dbPath}`,
      ...keys.map((k) => `    ${k}`),
      "    replica:",
      `      url: ${url}`,
    ]
      .join("\n") + "\n",
  );
  return config;
}

Deno.test("checkpoint: TRUNCATE checkpoints while a writer writes without pause; the replica restores to the source", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-truncate-" });
  const dbPath = join(dir, "app.db");
  const url = `file://${join(dir, "replica")}`;
  createDatabase(dbPath);
  const config = await writeConfig(dir, dbPath, url, [
    "truncate-page-n: 2000",
    "min-checkpoint-page-count: 500",
  ]);
  const replicate = spawnSluice(["replicate", "-c", config]);
  // 64 KiB rows, a commit every 10 ms: the TRUNCATE checkpoints run while it writes, and each
  // one's unseen commits reach the replica through the snapshot that follows it. Paced, not as
  // fast as it can: a writer that outpaces the syncs defers every checkpoint until it slows
  // down (RELIABILITY F14, tests/checkpoint_wait_test.ts), and on this 2-core machine the
  // unpaced writer did so in 5 runs of 7 (its WAL never shrank within the 60 s).
  const writer = startWriter([
    "--db",
    dbPath,
    "--row-size",
    "65536",
    "--rate",
    "100",
    "--duration",
    "60",
  ]);
  try {
    let writing = true;
    writer.done.finally(() => writing = false).catch(() => {});
    let largest = 0;
    // Only a TRUNCATE checkpoint makes the WAL file smaller while connections stay open.
    await waitFor("the WAL to be truncated while the writer writes", async () => {
      const size = (await Deno.stat(`${dbPath}-wal`).catch(() => undefined))?.size ?? 0;
      if (largest > 0 && size < largest / 2) return true;
      largest = Math.max(largest, size);
      if (!writing) {
        throw new Error(`the writer ended and its WAL never shrank (largest ${largest} bytes)`);
      }
      return false;
    }, 60_000);
    const summary = await writer.stop();
    assert.ok(summary.committed > 0);
    await caughtUp(dbPath, url, dir);
    const stopped = await replicate.stop("SIGTERM");
    assert.equal(stopped.code, 0, stopped.stderr);
  } finally {
    await writer.stop().catch(() => {});
    await replicate.stop("SIGKILL");
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("checkpoint: truncate-page-n: 0 turns the TRUNCATE checkpoint off (the WAL keeps its generation)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-truncate-off-" });
  const dbPath = join(dir, "app.db");
  const url = `file://${join(dir, "replica")}`;
  createDatabase(dbPath);
  const config = await writeConfig(dir, dbPath, url, ["truncate-page-n: 0"]);
  const replicate = spawnSluice(["replicate", "-c", config]);
  try {
    await runWriter("--db", dbPath, "--count", "20");
    await caughtUp(dbPath, url, dir);
    const salt = await walSalt1(`${dbPath}-wal`);
    await runWriter("--db", dbPath, "--count", "20");
    await caughtUp(dbPath, url, dir);
    // Before, 0 meant "at 32 bytes of WAL": every sync was followed by a TRUNCATE checkpoint.
    assert.equal(await walSalt1(`${dbPath}-wal`), salt, "the WAL was restarted");
    const stopped = await replicate.stop("SIGTERM");
    assert.equal(stopped.code, 0, stopped.stderr);
  } finally {
    await replicate.stop("SIGKILL");
    await Deno.remove(dir, { recursive: true });
  }
});
