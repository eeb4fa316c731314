/**
 * `sluice snapshot` end to end, with real processes: a snapshot taken while a writer commits
 * is a consistent committed prefix; snapshots continue the replica's TXID sequence; a
 * snapshot beside a running `sluice replicate` goes through it and leaves a replica that
 * still restores correctly; failures exit 1 naming the database; retention is applied.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import {
  createDatabase,
  digest,
  replicaTXID,
  restoreTo,
  ROOT,
  runWriter,
  sluice,
  startReplicate,
  waitFor,
} from "./_sluice.ts";
import { FileReplicaClient } from "../src/replica/mod.ts";
import type { LTXFileInfo } from "../src/replica/mod.ts";
import { formatTXID } from "../src/ltx/mod.ts";
import { litestreamRestore, oracleAvailable } from "./_oracle.ts";
import { ControlError, ControlServer, requestSnapshot } from "../src/daemon/mod.ts";
import {
  lockMetaDir,
  MetaDirLockedError,
  readLockHolder,
  tryLockMetaDir,
} from "../src/engine/mod.ts";

/** A writer running in the background until stopped. */
interface BackgroundWriter {
  /** Transactions acknowledged so far. */
  acked(): Promise<number>;
  /** Stops it (SIGTERM finishes the transaction in progress) and waits. */
  stop(): Promise<void>;
}

function startWriter(dbPath: string, ackFile: string, ...args: string[]): BackgroundWriter {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      join(ROOT, "scripts", "writer.ts"),
      "--db",
      dbPath,
      "--ack-file",
      ackFile,
      ...args,
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  return {
    async acked() {
      const text = await Deno.readTextFile(ackFile).catch(() => "");
      const lines = text.trim().split("\n").filter((line) => line !== "");
      return lines.length === 0 ? 0 : Number(lines[lines.length - 1].split(" ")[0]);
    },
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* already exited */ }
      const status = await child.status;
      assert.equal(status.code, 0, await stderr);
    },
  };
}

async function listLevel(replica: string, level: number): Promise<LTXFileInfo[]> {
  return await Array.fromAsync(new FileReplicaClient(replica).ltxFiles(level));
}

function assertCommittedPrefix(d: Awaited<ReturnType<typeof digest>>, where: string): void {
  assert.equal(d.integrity, "ok", `${where}: integrity`);
  assert.equal(d.distinctN, d.maxN, `${where}: transactions 1..${d.maxN} all present`);
}

/** Restores `replica` at `txid` from its L0 files only (a copy without levels 1…9). */
async function restoreFromL0(replica: string, dir: string, txid: number): Promise<Uint8Array> {
  const copy = join(dir, `l0-only-${txid}`);
  await Deno.mkdir(join(copy, "ltx", "0"), { recursive: true });
  for await (const entry of Deno.readDir(join(replica, "ltx", "0"))) {
    await Deno.copyFile(join(replica, "ltx", "0", entry.name), join(copy, "ltx", "0", entry.name));
  }
  const out = join(dir, `l0-only-${txid}.db`);
  await restoreTo(copy, out, "--txid", formatTXID(txid));
  return await Deno.readFile(out);
}

/** The TXID a `sluice snapshot` run reported on stdout. */
function reportedTXID(stdout: string): number {
  const match = /at TXID ([0-9a-f]{16})/.exec(stdout);
  assert.ok(match, `no TXID in ${JSON.stringify(stdout)}`);
  return parseInt(match[1], 16);
}

Deno.test("snapshot: while a writer commits, the snapshot is a consistent committed prefix", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-snapshot-" });
  try {
    const dbPath = join(dir, "app.db");
    const replica = join(dir, "replica");
    createDatabase(dbPath);
    // A few MiB first, so the snapshot takes a while and the writer overlaps it.
    await runWriter("--db", dbPath, "--count", "120", "--big-every", "40", "--big-pages", "600");
    const ackFile = join(dir, "acks");
    const writer = startWriter(dbPath, ackFile, "--rate", "300", "--big-every", "50");
    let before: number, after: number, result;
    try {
      await waitFor("the writer to commit", async () => (await writer.acked()) > 150);
      before = await writer.acked();
      result = await sluice("snapshot", dbPath, `file://${replica}`);
      after = await writer.acked();
      await new Promise((r) => setTimeout(r, 200)); // writes go on after the snapshot
    } finally {
      await writer.stop();
    }
    assert.equal(result.code, 0, result.stderr);
    const txid = reportedTXID(result.stdout);
    const snapshots = await listLevel(replica, 9);
    assert.deepEqual(snapshots.map((f) => [f.minTXID, f.maxTXID]), [[1, txid]]);
    // The L0 file at the snapshot's position is on the replica: its position is the snapshot's.
    assert.equal(await replicaTXID(replica), txid);

    const out = join(dir, "restored.db");
    await restoreTo(replica, out, "--integrity-check", "full");
    const d = await digest(out);
    assertCommittedPrefix(d, "snapshot");
    assert.ok(d.maxN >= before, `holds every transaction acknowledged before (${before})`);
    assert.ok(d.maxN <= after + 1, `holds nothing committed after it finished (${after})`);
    assert.ok((await digest(dbPath)).maxN > d.maxN, "the writer went on meanwhile");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("snapshot: a large image (codec workers, pages read into their batches, pages in the WAL) restores byte-identical, in Litestream too", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-snapshot-large-" });
  // The test keeps a connection open so that the WAL stays (a last close checkpoints it).
  let db: DatabaseSync | undefined;
  try {
    const dbPath = join(dir, "app.db");
    const replica = join(dir, "replica");
    createDatabase(dbPath);
    db = new DatabaseSync(dbPath);
    db.exec("PRAGMA wal_autocheckpoint = 0");
    // ~40 MiB (above the parallel encoder's 32 MiB) of random and repetitive rows, in the
    // database file; then updates of scattered rows and more rows, left in the WAL: the
    // image is runs of database-file pages and of WAL pages, interleaved.
    const insert = db.prepare("INSERT INTO t (n, payload) VALUES (?, ?)");
    db.exec("BEGIN");
    for (let n = 1; n <= 2600; n++) {
      insert.run(n, n % 4 === 0 ? new Uint8Array(16_000).fill(n % 251) : randomBytes(16_000));
    }
    db.exec("COMMIT");
    db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    db.exec("BEGIN");
    for (let id = 7; id <= 2600; id += 97) {
      db.prepare("UPDATE t SET payload = ? WHERE id = ?").run(randomBytes(16_000), id);
    }
    for (let n = 2601; n <= 2900; n++) insert.run(n, randomBytes(9_000));
    db.exec("COMMIT");
    assert.ok((await Deno.stat(`${dbPath}-wal`)).size > 2 << 20, "pages in the WAL");
    const source = await digest(dbPath);

    const result = await sluice("snapshot", dbPath, `file://${replica}`);
    assert.equal(result.code, 0, result.stderr);
    const txid = reportedTXID(result.stdout);
    assert.equal((await listLevel(replica, 9)).at(-1)!.maxTXID, txid);
    const ours = join(dir, "sluice.db");
    await restoreTo(replica, ours);
    const restored = await digest(ours);
    assert.equal(restored.integrity, "ok");
    assert.equal(restored.rows, 2900);
    assert.equal(restored.sha256, source.sha256);
    if (oracleAvailable()) {
      const theirs = join(dir, "litestream.db");
      await litestreamRestore(replica, theirs, { timeoutMs: 120_000 });
      assert.deepEqual(await Deno.readFile(theirs), await Deno.readFile(ours));
    }
  } finally {
    db?.close();
    await Deno.remove(dir, { recursive: true });
  }
});

/** `n` random bytes (crypto.getRandomValues fills at most 64 KiB at a time). */
function randomBytes(n: number): Uint8Array {
  const bytes = new Uint8Array(n);
  for (let at = 0; at < n; at += 65536) crypto.getRandomValues(bytes.subarray(at, at + 65536));
  return bytes;
}

Deno.test("snapshot: two in a row continue the TXID sequence; retention applies", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-snapshot2-" });
  try {
    const dbPath = join(dir, "app.db");
    const replica = join(dir, "replica");
    createDatabase(dbPath);
    const config = join(dir, "sluice.yml");
    await Deno.writeTextFile(
      config,
      `snapshot:\n  retention: 15s\ndbs:\n  - path: ${dbPath}\n    replica:\n      url: file://${replica}\n`,
    );
    await runWriter("--db", dbPath, "--count", "50");
    const first = await sluice("snapshot", "-c", config);
    assert.equal(first.code, 0, first.stderr);
    await runWriter("--db", dbPath, "--count", "50");
    const second = await sluice("snapshot", "-c", config);
    assert.equal(second.code, 0, second.stderr);
    const [a, b] = [reportedTXID(first.stdout), reportedTXID(second.stdout)];
    assert.ok(b > a, `second snapshot TXID ${b} follows the first (${a})`);
    // L0 is one unbroken sequence 1…b.
    const l0 = await listLevel(replica, 0);
    assert.equal(l0[0].minTXID, 1);
    l0.forEach((f, i) => i > 0 && assert.equal(f.minTXID, l0[i - 1].maxTXID + 1));
    assert.equal(l0.at(-1)!.maxTXID, b);
    // Within 15 s of each other (even on a loaded machine): both snapshots are kept.
    assert.deepEqual((await listLevel(replica, 9)).map((f) => f.maxTXID), [a, b]);

    // Each snapshot equals the L0 history at its TXID, byte for byte.
    for (const txid of [a, b]) {
      const out = join(dir, `at-${txid}.db`);
      await restoreTo(replica, out, "--txid", formatTXID(txid));
      assert.deepEqual(await Deno.readFile(out), await restoreFromL0(replica, dir, txid));
    }
    const latest = join(dir, "latest.db");
    await restoreTo(replica, latest);
    const d = await digest(latest);
    assert.equal(d.maxN, 100);
    assert.equal(d.sha256, (await digest(dbPath)).sha256);

    // A third snapshot more than 15 s after the second, from a container that lost its meta
    // dir meanwhile: it still continues the replica's sequence, and retention deletes the
    // older two snapshots.
    await Deno.remove(join(dir, ".app.db-sluice"), { recursive: true });
    await runWriter("--db", dbPath, "--count", "30", "--checkpoint-mode", "truncate");
    const secondAt = (await listLevel(replica, 9)).at(-1)!.createdAt.getTime();
    await new Promise((r) => setTimeout(r, Math.max(0, secondAt + 15_100 - Date.now())));
    const third = await sluice("snapshot", "-c", config);
    assert.equal(third.code, 0, third.stderr);
    const c = reportedTXID(third.stdout);
    assert.equal(c, b + 1, "the TXID sequence continues after the replica's");
    assert.deepEqual((await listLevel(replica, 9)).map((f) => f.maxTXID), [c]);
    assert.equal(await replicaTXID(replica), c);
    const last = join(dir, "last.db");
    await restoreTo(replica, last);
    const restored = await digest(last);
    assert.equal(restored.maxN, 130);
    assert.equal(restored.sha256, (await digest(dbPath)).sha256);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("snapshot: while the app keeps its WAL, the next snapshot follows an incremental sync", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-snapshot-inc-" });
  try {
    const dbPath = join(dir, "app.db");
    const replica = join(dir, "replica");
    createDatabase(dbPath);
    await runWriter("--db", dbPath, "--count", "200");
    // A slow writer holds the database open, so its WAL is neither deleted nor restarted.
    const writer = startWriter(dbPath, join(dir, "acks"), "--rate", "40");
    let first, second;
    try {
      await waitFor("the writer to commit", async () => (await writer.acked()) > 205);
      first = await sluice("snapshot", dbPath, `file://${replica}`);
      await waitFor("more commits", async () => (await writer.acked()) > 230);
      second = await sluice("snapshot", dbPath, `file://${replica}`);
    } finally {
      await writer.stop();
    }
    assert.equal(first.code, 0, first.stderr);
    assert.equal(second.code, 0, second.stderr);
    const [a, b] = [reportedTXID(first.stdout), reportedTXID(second.stdout)];
    assert.ok(b > a);
    const l0 = await listLevel(replica, 0);
    const l9 = await listLevel(replica, 9);
    assert.deepEqual(l9.map((f) => f.maxTXID), [a, b]);
    // The L0 files after the first snapshot are incremental: much smaller than a snapshot (how
    // much depends on how many commits the writer made in between: a loaded machine lets it
    // make a second's worth, about a quarter of the snapshot's size).
    const after = l0.filter((f) => f.minTXID > a);
    assert.ok(after.length > 0 && after.every((f) => f.size < l9[1].size / 2));
    for (const txid of [a, b]) {
      const out = join(dir, `at-${txid}.db`);
      await restoreTo(replica, out, "--txid", formatTXID(txid));
      assert.deepEqual(await Deno.readFile(out), await restoreFromL0(replica, dir, txid));
      assertCommittedPrefix(await digest(out), `snapshot ${txid}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("snapshot: beside a running replicate, it goes through it and the replica restores", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-snapshot-live-" });
  try {
    const dbPath = join(dir, "app.db");
    const replica = join(dir, "replica");
    createDatabase(dbPath);
    const config = join(dir, "sluice.yml");
    await Deno.writeTextFile(
      config,
      `dbs:\n  - path: ${dbPath}\n    replica:\n      url: file://${replica}\n`,
    );
    const replicate = startReplicate("-c", config);
    const ackFile = join(dir, "acks");
    let writer: BackgroundWriter | undefined;
    let result;
    let snapshotsBefore: LTXFileInfo[];
    try {
      // replicate takes a snapshot at start (none exists yet).
      await waitFor(
        "replicate's first snapshot",
        async () => (await listLevel(replica, 9)).length > 0,
      );
      writer = startWriter(dbPath, ackFile, "--rate", "200", "--big-every", "60");
      await waitFor("the writer to commit", async () => (await writer!.acked()) > 100);
      snapshotsBefore = await listLevel(replica, 9);
      result = await sluice("snapshot", "-c", config);
      // The same database to another replica: replicate refuses, nothing is written there.
      const other = await sluice("snapshot", dbPath, `file://${join(dir, "other")}`);
      assert.equal(other.code, 1, other.stderr);
      assert.match(other.stderr, /app\.db.*replicates .* not to file:\/\/.*other/);
      await assert.rejects(() => Deno.stat(join(dir, "other")), Deno.errors.NotFound);
      await new Promise((r) => setTimeout(r, 300));
      await writer.stop();
      writer = undefined;
      // replicate still replicates after the snapshot.
      const txid = await replicaTXID(replica);
      await runWriter("--db", dbPath, "--count", "20");
      await waitFor(
        "replication after the snapshot",
        async () => (await replicaTXID(replica)) > txid,
      );
    } finally {
      await writer?.stop();
      const stopped = await replicate.stop();
      assert.equal(stopped.code, 0, stopped.stderr);
    }
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /by sluice replicate/);
    const txid = reportedTXID(result.stdout);
    const snapshots = await listLevel(replica, 9);
    assert.ok(snapshotsBefore.every((f) => f.maxTXID < txid));
    assert.ok(
      snapshots.some((f) => f.maxTXID === txid),
      "the requested snapshot is on the replica",
    );

    // The snapshot equals the L0 history at its TXID, and the latest restore equals the source.
    const at = join(dir, "at.db");
    await restoreTo(replica, at, "--txid", formatTXID(txid));
    assert.deepEqual(await Deno.readFile(at), await restoreFromL0(replica, dir, txid));
    assertCommittedPrefix(await digest(at), "snapshot");
    const latest = join(dir, "latest.db");
    await restoreTo(replica, latest);
    assert.equal((await digest(latest)).sha256, (await digest(dbPath)).sha256);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("snapshot: a failure exits 1 naming the database; the others are still snapshotted", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-snapshot-fail-" });
  try {
    const good = join(dir, "good.db");
    const missing = join(dir, "missing.db");
    createDatabase(good);
    await runWriter("--db", good, "--count", "10");
    const config = join(dir, "sluice.yml");
    await Deno.writeTextFile(
      config,
      `dbs:\n` +
        `  - path: ${missing}\n    replica:\n      url: file://${join(dir, "r-missing")}\n` +
        `  - path: ${good}\n    replica:\n      url: file://${join(dir, "r-good")}\n`,
    );
    const result = await sluice("snapshot", "-c", config);
    assert.equal(result.code, 1);
    assert.match(result.stderr, new RegExp(`${missing.replaceAll(".", "\\.")}`));
    assert.doesNotMatch(result.stderr, /good\.db/);
    assert.equal((await listLevel(join(dir, "r-good"), 9)).length, 1);
    // Nothing was created for the missing database.
    await assert.rejects(() => Deno.stat(join(dir, ".missing.db-sluice")), Deno.errors.NotFound);

    const usage = await sluice("snapshot", good);
    assert.equal(usage.code, 2, "DB_PATH without REPLICA_URL is a usage error");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("control: the meta dir lock names its holder and is exclusive until released", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-lock-" });
  try {
    const meta = join(dir, "meta");
    const lock = await lockMetaDir(meta, { command: "replicate", socket: "/tmp/x.sock" });
    const holder = await readLockHolder(meta);
    assert.equal(holder?.pid, Deno.pid);
    assert.equal(holder?.command, "replicate");
    assert.equal(holder?.socket, "/tmp/x.sock");
    assert.equal(await tryLockMetaDir(meta, { command: "snapshot" }), undefined);
    await assert.rejects(
      () => lockMetaDir(meta, { command: "snapshot" }),
      (err: unknown) =>
        err instanceof MetaDirLockedError && err.holder?.command === "replicate" &&
        err.message.includes(meta),
    );
    lock.release();
    const again = await lockMetaDir(meta, { command: "snapshot" });
    assert.equal((await readLockHolder(meta))?.command, "snapshot");
    assert.equal((await readLockHolder(meta))?.socket, undefined, "the old content is replaced");
    again.release();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("control: requests, progress and the error codes of the socket protocol", async () => {
  const calls: string[] = [];
  const server = await ControlServer.listen({
    async snapshot(dbPath, onProgress, replica) {
      calls.push(`${dbPath} ${replica}`);
      if (dbPath === "/missing.db") throw new ControlError("not here", "not-found");
      if (dbPath === "/broken.db") throw new Error("disk full");
      for (const bytes of [100, 200, 300]) {
        onProgress(bytes);
        await new Promise((r) => setTimeout(r, 300)); // progress is sent at most every 250 ms
      }
      return { txid: 42 };
    },
  });
  try {
    const progress: number[] = [];
    const result = await requestSnapshot(server.path, "/app.db", {
      replica: "file:///r",
      onProgress: (bytes) => progress.push(bytes),
    });
    assert.deepEqual(result, { txid: 42 });
    assert.ok(progress.length >= 2 && progress.every((b, i) => i === 0 || b > progress[i - 1]));
    await assert.rejects(
      () => requestSnapshot(server.path, "/missing.db"),
      (err: unknown) => err instanceof ControlError && err.code === "not-found",
    );
    await assert.rejects(
      () => requestSnapshot(server.path, "/broken.db"),
      (err: unknown) =>
        err instanceof ControlError && err.code === "failed" && /disk full/.test(err.message),
    );
    assert.deepEqual(calls, ["/app.db file:///r", "/missing.db undefined", "/broken.db undefined"]);
  } finally {
    await server.close();
  }
  await assert.rejects(
    () => requestSnapshot(server.path, "/app.db"),
    (err: unknown) => err instanceof ControlError && err.code === "unreachable",
  );
});

Deno.test("control: socket directories left by killed processes are removed, live ones kept", async () => {
  const parent = await Deno.makeTempDir();
  const handler = { snapshot: () => Promise.resolve({ txid: 1 }) };
  const live = await ControlServer.listen(handler, { dir: parent });
  const staleDir = join(parent, "sluice-ctl-dead");
  await Deno.mkdir(staleDir);
  // A process that listens and is killed leaves its socket behind.
  const holder = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `Deno.listen({ transport: "unix", path: Deno.args[0] }); console.log("up"); ` +
      `setInterval(() => {}, 1000);`,
      join(staleDir, "control.sock"),
    ],
    stdout: "piped",
  }).spawn();
  await holder.stdout.pipeThrough(new TextDecoderStream()).getReader().read();
  holder.kill("SIGKILL");
  await holder.status;
  const unrelated = join(parent, "sluice-ctl-other");
  await Deno.mkdir(unrelated);
  await Deno.writeTextFile(join(unrelated, "notes.txt"), "keep");
  try {
    await Deno.stat(join(staleDir, "control.sock"));
    const next = await ControlServer.listen(handler, { dir: parent });
    await next.close();
    await assert.rejects(Deno.stat(staleDir), Deno.errors.NotFound);
    await Deno.stat(live.path);
    await Deno.stat(join(unrelated, "notes.txt"));
  } finally {
    await live.close();
    await Deno.remove(parent, { recursive: true });
  }
});
