/**
 * A replica that loses its files (issue 21, item 7): the replica directory emptied, or every
 * object of the S3 prefix deleted, while sluice runs; the replica rolled back to an older copy
 * or emptied while sluice is stopped. sluice must see it in its listings and take a new
 * snapshot at once, so that the replica restores to the source again, with sluice's restore
 * and with Litestream's.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { createDatabase, type Digest, digest, replicaTXID, runWriter, sluice } from "./_sluice.ts";
import { spawnSluice, until, writeConfig } from "../scripts/chaos_lib.ts";
import { FAUXQS_CREDENTIALS, s3Spec, startS3Server } from "./_s3.ts";
import { litestreamRestore, oracleAvailable } from "./_oracle.ts";
import { FileReplicaClient, S3ReplicaClient } from "../src/replica/mod.ts";
import type { LTXFileInfo, ReplicaClient } from "../src/replica/mod.ts";
import { Compactor } from "../src/compaction/mod.ts";
import { restore } from "../src/restore/mod.ts";
import {
  buildStates,
  changedPages,
  copyTree,
  equalBytes,
  snapshotPages,
  withTempDir,
  writeLTX,
} from "./_restore_helpers.ts";

// Subprocesses inherit these: static test credentials, and never the EC2 metadata endpoint.
Deno.env.set("AWS_ACCESS_KEY_ID", FAUXQS_CREDENTIALS.accessKeyId);
Deno.env.set("AWS_SECRET_ACCESS_KEY", FAUXQS_CREDENTIALS.secretAccessKey);
Deno.env.set("AWS_EC2_METADATA_DISABLED", "true");

/** Compaction every second and a short l0-retention, so that listings come often. */
async function configFor(dir: string, dbPath: string, url: string): Promise<string> {
  const config = join(dir, "sluice.yml");
  await writeConfig(
    config,
    `
snapshot:
  interval: 1h
levels:
  - interval: 1s
l0-retention: 1s
dbs:
  - path: ${dbPath}
    replica:
      url: ${url}
`,
  );
  return config;
}

/** The replica restored into a fresh file and digested; undefined when the restore fails. */
async function restoredDigest(url: string, dir: string): Promise<Digest | undefined> {
  const out = join(dir, `restored-${crypto.randomUUID()}.db`);
  const result = await sluice("restore", "-o", out, url);
  const restored = result.code === 0 ? await digest(out) : undefined;
  await Deno.remove(out).catch(() => {});
  return restored;
}

/** Waits until the replica restores to the database's current content. */
async function untilRestorable(
  dbPath: string,
  url: string,
  dir: string,
  stderr: () => string,
): Promise<void> {
  const source = await digest(dbPath);
  await until(
    "the replica to restore to the source",
    async () => (await restoredDigest(url, dir))?.sha256 === source.sha256,
    30_000,
    300,
  ).catch((err) => {
    throw new Error(`${err.message}\n${stderr().slice(-3000)}`);
  });
}

/** Removes everything in a file replica's directory, as `rm -rf replica/*` would. */
async function emptyDirectory(dir: string): Promise<void> {
  for await (const entry of Deno.readDir(dir)) {
    await Deno.remove(join(dir, entry.name), { recursive: true });
  }
}

/** The newest local L0 TXID in the meta directory (0 when there is none). */
async function newestLocalTXID(metaDir: string): Promise<number> {
  let newest = 0;
  for await (const file of new FileReplicaClient(metaDir).ltxFiles(0)) newest = file.maxTXID;
  return newest;
}

/** The oldest local L0 TXID in the meta directory (0 when there is none). */
async function oldestLocalTXID(metaDir: string): Promise<number> {
  for await (const file of new FileReplicaClient(metaDir).ltxFiles(0)) return file.minTXID;
  return 0;
}

/** After a clean stop: sluice's restore (and Litestream's, when it runs here) = the source. */
async function assertFinalRestore(dbPath: string, url: string, dir: string, replicaDir?: string) {
  const source = await digest(dbPath);
  const restored = await restoredDigest(url, dir);
  assert.equal(restored?.integrity, "ok");
  assert.equal(restored?.sha256, source.sha256, "sluice's restore equals the source");
  if (replicaDir !== undefined && oracleAvailable()) {
    const out = join(dir, "litestream.db");
    await litestreamRestore(replicaDir, out);
    assert.equal((await digest(out)).sha256, source.sha256, "Litestream's restore too");
  }
}

Deno.test("replica wiped: file replica emptied while sluice runs → new snapshot, restore = source", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-wiped-file-" });
  const dbPath = join(dir, "app.db");
  const replica = join(dir, "replica");
  const url = `file://${replica}`;
  createDatabase(dbPath);
  const replicate = spawnSluice(["replicate", "-c", await configFor(dir, dbPath, url)]);
  try {
    await runWriter("--db", dbPath, "--rate", "50", "--count", "30");
    await untilRestorable(dbPath, url, dir, replicate.stderr);

    await emptyDirectory(replica);
    await runWriter("--db", dbPath, "--rate", "50", "--count", "30");
    await untilRestorable(dbPath, url, dir, replicate.stderr);

    await runWriter("--db", dbPath, "--count", "10");
    const stopped = await replicate.stop("SIGTERM");
    assert.equal(stopped.code, 0, stopped.stderr);
    await assertFinalRestore(dbPath, url, dir, replica);
  } finally {
    await replicate.stop("SIGKILL");
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("replica rolled back to an older copy while sluice is stopped → snapshot at start, restore = source", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-rolled-back-" });
  const dbPath = join(dir, "app.db");
  const replica = join(dir, "replica");
  const olderCopy = join(dir, "replica-older");
  const meta = join(dir, ".app.db-sluice");
  const url = `file://${replica}`;
  const config = await configFor(dir, dbPath, url);
  createDatabase(dbPath);
  let replicate = spawnSluice(["replicate", "-c", config]);
  try {
    await runWriter("--db", dbPath, "--rate", "50", "--count", "30");
    await untilRestorable(dbPath, url, dir, replicate.stderr);
    assert.equal((await replicate.stop("SIGTERM")).code, 0);
    await copyTree(replica, olderCopy);
    const olderPosition = await replicaTXID(olderCopy);

    replicate = spawnSluice(["replicate", "-c", config]);
    await until("the first sync", async () => (await newestLocalTXID(meta)) > olderPosition);
    await runWriter("--db", dbPath, "--rate", "50", "--count", "30");
    await untilRestorable(dbPath, url, dir, replicate.stderr);
    // l0-retention removed the local copies of what the older copy lacks: the local files
    // can no longer continue it.
    await until(
      "local L0 files trimmed",
      async () => (await oldestLocalTXID(meta)) > olderPosition + 1,
      20_000,
    );
    assert.equal((await replicate.stop("SIGTERM")).code, 0);

    // The replica goes back in time (a bucket or a backup disk restored from an older copy).
    await Deno.remove(replica, { recursive: true });
    await Deno.rename(olderCopy, replica);
    replicate = spawnSluice(["replicate", "-c", config]);
    await runWriter("--db", dbPath, "--rate", "50", "--count", "30");
    await untilRestorable(dbPath, url, dir, replicate.stderr);
    const stopped = await replicate.stop("SIGTERM");
    assert.equal(stopped.code, 0, stopped.stderr);
    await assertFinalRestore(dbPath, url, dir, replica);
  } finally {
    await replicate.stop("SIGKILL");
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("replica wiped: file replica emptied while sluice is stopped → restore = source after the restart", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-wiped-start-" });
  const dbPath = join(dir, "app.db");
  const meta = join(dir, ".app.db-sluice");
  const replica = join(dir, "replica");
  const url = `file://${replica}`;
  const config = await configFor(dir, dbPath, url);
  createDatabase(dbPath);
  let replicate = spawnSluice(["replicate", "-c", config]);
  try {
    // Several L0 files, not one first snapshot holding every write: some can be trimmed.
    await until("the first sync", async () => (await newestLocalTXID(meta)) > 0);
    await runWriter("--db", dbPath, "--rate", "50", "--count", "30");
    await untilRestorable(dbPath, url, dir, replicate.stderr);
    await until(
      "local L0 files trimmed",
      async () => (await oldestLocalTXID(meta)) > 1,
      20_000,
    ).catch((err) => {
      throw new Error(`${err.message}\n${replicate.stderr().slice(-3000)}`);
    });
    assert.equal((await replicate.stop("SIGTERM")).code, 0);

    await emptyDirectory(replica);
    replicate = spawnSluice(["replicate", "-c", config]);
    await runWriter("--db", dbPath, "--rate", "50", "--count", "30");
    await untilRestorable(dbPath, url, dir, replicate.stderr);
    const stopped = await replicate.stop("SIGTERM");
    assert.equal(stopped.code, 0, stopped.stderr);
    await assertFinalRestore(dbPath, url, dir, replica);
  } finally {
    await replicate.stop("SIGKILL");
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("replica wiped: S3 objects deleted while sluice runs → new snapshot, restore = source", async () => {
  const server = await startS3Server({ buckets: ["wiped"] });
  const dir = await Deno.makeTempDir({ prefix: "sluice-wiped-s3-" });
  const dbPath = join(dir, "app.db");
  const url = `s3://wiped/app?region=us-east-1&force-path-style=true&endpoint=${
    encodeURIComponent(server.endpoint)
  }`;
  createDatabase(dbPath);
  const replicate = spawnSluice(["replicate", "-c", await configFor(dir, dbPath, url)]);
  const client = new S3ReplicaClient(s3Spec(server, "wiped", "app"));
  try {
    await runWriter("--db", dbPath, "--rate", "50", "--count", "30");
    await untilRestorable(dbPath, url, dir, replicate.stderr);

    await client.deleteAll();
    await runWriter("--db", dbPath, "--rate", "50", "--count", "30");
    await untilRestorable(dbPath, url, dir, replicate.stderr);

    await runWriter("--db", dbPath, "--count", "10");
    const stopped = await replicate.stop("SIGTERM");
    assert.equal(stopped.code, 0, stopped.stderr);
    await assertFinalRestore(dbPath, url, dir);
  } finally {
    await replicate.stop("SIGKILL");
    await client.close();
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

const PAGE_SIZE = 4096;
/** A multiple of every interval used below. */
const BASE = 1_800_000_000_000;

/** Level 0 of a real database's four states as TXIDs `first`…4 (created BASE + txid s). */
async function writeL0(dir: string, client: ReplicaClient, first = 1): Promise<Uint8Array[]> {
  const images = buildStates(join(dir, `source-${crypto.randomUUID()}.db`), PAGE_SIZE);
  for (let txid = first; txid <= images.length; txid++) {
    const image = images[txid - 1];
    const pages = txid === 1
      ? snapshotPages(image, PAGE_SIZE)
      : changedPages(images[txid - 2], image, PAGE_SIZE);
    await writeLTX(client, 0, {
      minTXID: txid,
      maxTXID: txid,
      pageSize: PAGE_SIZE,
      commit: image.byteLength / PAGE_SIZE,
      timestamp: BASE + txid * 1000,
    }, pages);
  }
  return images;
}

function compactorFor(client: ReplicaClient, losses: string[]): Compactor {
  return new Compactor(client, {
    levels: [30_000],
    snapshotInterval: 0,
    snapshotRetention: 60_000,
    l0Retention: 60_000,
    retentionEnabled: true,
    onReplicaLoss: (reason) => losses.push(reason),
  });
}

async function list(client: ReplicaClient, level: number): Promise<LTXFileInfo[]> {
  return await Array.fromAsync(client.ltxFiles(level));
}

Deno.test("compactor: a level whose newest file goes back is reported as a loss", async () => {
  await withTempDir(async (dir) => {
    const client = new FileReplicaClient(join(dir, "replica"));
    await writeL0(dir, client);
    const losses: string[] = [];
    const compactor = compactorFor(client, losses);
    assert.equal((await compactor.compact(1, BASE + 60_000)).outcome, "compacted");
    assert.equal((await compactor.compact(1, BASE + 90_000)).outcome, "up-to-date");
    assert.deepEqual(losses, []);

    await client.deleteLTXFiles(await list(client, 1));
    await compactor.compact(1, BASE + 120_000);
    assert.equal(losses.length, 1, "reported once");
    assert.match(losses[0], /level 1's newest file went back/);
  });
});

Deno.test("compactor: a level-0 gap after level 1 is a loss unless a snapshot covers it", async () => {
  await withTempDir(async (dir) => {
    const client = new FileReplicaClient(join(dir, "replica"));
    const images = await writeL0(dir, client, 3); // TXIDs 1 and 2 are gone
    const losses: string[] = [];
    const compactor = compactorFor(client, losses);
    assert.equal((await compactor.compact(1, BASE + 60_000)).outcome, "up-to-date");
    assert.equal(losses.length, 1);
    assert.match(losses[0], /no snapshot covers/);
    assert.deepEqual(await list(client, 1), [], "nothing merged over the gap");

    // The new snapshot sluice takes then covers TXIDs 1…2: level 1 continues after it.
    await writeLTX(client, 9, {
      minTXID: 1,
      maxTXID: 2,
      pageSize: PAGE_SIZE,
      commit: images[1].byteLength / PAGE_SIZE,
      timestamp: BASE + 2000,
    }, snapshotPages(images[1], PAGE_SIZE));
    assert.equal((await compactor.compact(1, BASE + 90_000)).outcome, "compacted");
    assert.equal(losses.length, 1, "no new loss");
    const out = join(dir, "restored.db");
    await restore(client, { outputPath: out });
    assert.ok(equalBytes(await Deno.readFile(out), images[3]), "snapshot + level 1 = the source");
  });
});
