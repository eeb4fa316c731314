/**
 * Compaction levels, snapshots and retention end to end: `sluice replicate -c config.yml` runs
 * with intervals shortened to seconds while a writer process commits. Afterwards the replica
 * must hold contiguous L1/L2/L3 files and L9 snapshots, with old files deleted per the
 * retention rules, and restores at the latest TXID and at earlier ones must equal the source
 * at those points. The ground truth for earlier points is an archive of every L0 file the
 * replica ever held (copied while the run goes on, before L0 retention removes them).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  createDatabase,
  digest,
  freePort,
  restoreTo,
  runWriter,
  startReplicate,
  waitFor,
} from "./_sluice.ts";
import { litestreamRestore, oracleAvailable } from "./_oracle.ts";
import { restore } from "../src/restore/mod.ts";
import { FileReplicaClient } from "../src/replica/mod.ts";
import type { LTXFileInfo } from "../src/replica/mod.ts";
import { TxNotAvailableError } from "../src/restore/mod.ts";
import { fetchDaemonStatus } from "../src/daemon/mod.ts";

const NAME = /^([0-9a-f]{16})-([0-9a-f]{16})\.ltx$/;

interface Options {
  retentionEnabled: boolean;
  writerSeconds: number;
  /** After the writer: replication goes on until this holds (at most 20 s). */
  settled: (replica: FileReplicaClient, startedAt: number) => Promise<boolean>;
}

function configText(dbPath: string, replica: string, addr: string, options: Options): string {
  return [
    `addr: ${addr}`,
    "snapshot:",
    "  interval: 3s",
    "  retention: 6s",
    "levels:",
    "  - interval: 1s",
    "  - interval: 2s",
    "  - interval: 4s",
    "l0-retention: 2s",
    "retention:",
    `  enabled: ${options.retentionEnabled}`,
    "dbs:",
    `  - path: ${dbPath}`,
    "    min-checkpoint-page-count: 200",
    "    replica:",
    `      url: file://${replica}`,
    "",
  ].join("\n");
}

async function listLevel(client: FileReplicaClient, level: number): Promise<LTXFileInfo[]> {
  return await Array.fromAsync(client.ltxFiles(level));
}

/** Copies every L0 file that appears in `replica` into `archive` until `stop` resolves. */
async function archiveL0(replica: string, archive: string, stop: Promise<void>): Promise<void> {
  const from = join(replica, "ltx", "0");
  const to = join(archive, "ltx", "0");
  await Deno.mkdir(to, { recursive: true });
  const copied = new Set<string>();
  let stopping = false;
  stop.then(() => stopping = true);
  for (;;) {
    const last = stopping; // one more pass after the stop
    const names = await Array.fromAsync(Deno.readDir(from)).then(
      (entries) => entries.map((e) => e.name).filter((n) => NAME.test(n) && !copied.has(n)),
      () => [] as string[],
    );
    for (const name of names) {
      try {
        await Deno.copyFile(join(from, name), join(to, name));
        const { mtime } = await Deno.stat(join(from, name));
        if (mtime) await Deno.utime(join(to, name), mtime, mtime);
        copied.add(name);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
    }
    if (last) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Each file of a level starts right after the previous one ends. */
function assertContiguous(files: LTXFileInfo[], what: string): void {
  for (let i = 1; i < files.length; i++) {
    assert.equal(
      files[i].minTXID,
      files[i - 1].maxTXID + 1,
      `${what}: file ${i} starts at ${files[i].minTXID}, previous ends at ${files[i - 1].maxTXID}`,
    );
  }
}

interface Run {
  dir: string;
  dbPath: string;
  replica: string;
  archive: string;
  startedAt: number;
  stoppedAt: number;
  /** Snapshots the compactor had written when its /status was read (before the stop). */
  snapshotsWritten: number;
}

/** Replicates while the writer runs, archiving L0 files; returns when replicate exited. */
async function runReplication(dir: string, options: Options): Promise<Run> {
  const dbPath = join(dir, "app.db");
  const replica = join(dir, "replica");
  const archive = join(dir, "archive");
  createDatabase(dbPath);
  const config = join(dir, "sluice.yml");
  const addr = `127.0.0.1:${freePort()}`;
  await Deno.writeTextFile(config, configText(dbPath, replica, addr, options));
  const startedAt = Date.now();
  const sluice = startReplicate("-c", config);
  const stopArchive = Promise.withResolvers<void>();
  let archiving: Promise<void> | undefined;
  let snapshotsWritten = 0;
  try {
    await waitFor("the first L0 file", async () => {
      try {
        return (await Array.fromAsync(Deno.readDir(join(replica, "ltx", "0")))).length > 0;
      } catch {
        return false;
      }
    });
    archiving = archiveL0(replica, archive, stopArchive.promise);
    await runWriter(
      "--db",
      dbPath,
      "--rate",
      "60",
      "--duration",
      String(options.writerSeconds),
      "--big-every",
      "150",
      "--big-pages",
      "300",
    );
    // Let level 3 (4 s) and a snapshot tick see the end of the writes, and retention catch up.
    await new Promise((r) => setTimeout(r, 2500));
    const client = new FileReplicaClient(replica);
    await waitFor(
      "compaction and retention to settle",
      () => options.settled(client, startedAt),
      20_000,
    );
    // The compactor's own totals: it ran, and no compaction, snapshot or retention run failed.
    const compaction = (await fetchDaemonStatus(addr))?.databases[0]?.compaction;
    assert.ok(compaction, "the daemon's /status has the compactor's totals");
    assert.equal(compaction.errors, 0, `compactor errors, last: ${compaction.lastError}`);
    assert.ok(compaction.compactions > 0 && compaction.snapshots > 0, JSON.stringify(compaction));
    snapshotsWritten = compaction.snapshots;
  } finally {
    const stopped = await sluice.stop("SIGTERM");
    stopArchive.resolve();
    await archiving;
    assert.equal(stopped.code, 0, stopped.stderr);
  }
  return { dir, dbPath, replica, archive, startedAt, stoppedAt: Date.now(), snapshotsWritten };
}

Deno.test({
  name: "compaction e2e: levels, snapshots and retention; restores equal the source",
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "sluice-compaction-" });
    try {
      const run = await runReplication(dir, {
        retentionEnabled: true,
        writerSeconds: 6,
        // Two snapshots deleted (the start one and the next) move the level-1 floor.
        settled: async (client, startedAt) => {
          const [l1, l3, l9] = await Promise.all([1, 3, 9].map((l) => listLevel(client, l)));
          return l3.length > 0 && l1.length > 0 && l1[0].minTXID > 1 && l9.length > 0 &&
            l9[0].createdAt.getTime() > startedAt + 2000;
        },
      });
      const client = new FileReplicaClient(run.replica);
      const archive = new FileReplicaClient(run.archive);
      const levels = await Promise.all([0, 1, 2, 3, 9].map((l) => listLevel(client, l)));
      const [l0, l1, l2, l3, l9] = levels;
      const archived = await listLevel(archive, 0);

      // The archive holds every L0 file 1…N: the uncompacted history.
      assert.equal(archived[0].minTXID, 1);
      assertContiguous(archived, "archived L0");
      const maxTXID = archived.at(-1)!.maxTXID;
      assert.equal(l0.at(-1)!.maxTXID, maxTXID, "the replica position is the newest L0 file");

      // Every level exists and is contiguous; snapshots are full (min 1).
      for (const [level, files] of [[1, l1], [2, l2], [3, l3]] as const) {
        assert.ok(files.length > 0, `level ${level} has files`);
        assertContiguous(files, `level ${level}`);
        assert.ok(files.at(-1)!.maxTXID <= maxTXID);
      }
      assert.ok(l9.length > 0, "snapshots exist");
      for (const snap of l9) assert.equal(snap.minTXID, 1, "a snapshot starts at TXID 1");
      assertContiguous(l0, "L0");

      // Retention: snapshots older than 6 s are gone (the newest always stays) …
      const newestSnap = l9.at(-1)!;
      for (const snap of l9.slice(0, -1)) {
        assert.ok(
          snap.createdAt.getTime() >= run.stoppedAt - 6000 - 3000 - 2000,
          `snapshot ${snap.maxTXID} created ${run.stoppedAt - snap.createdAt.getTime()} ms ` +
            `before the stop should have been deleted`,
        );
      }
      assert.ok(
        l9[0].createdAt.getTime() > run.startedAt + 2000,
        "the snapshot taken at start was deleted",
      );
      // … level files below the floor went with them, keeping each level's newest …
      assert.ok(l1[0].minTXID > 1, `old L1 files deleted (first starts at ${l1[0].minTXID})`);
      // … and L0 files covered by L1 and older than 2 s are gone, locally too.
      assert.ok(l0[0].minTXID > 1, `old L0 files deleted (first is ${l0[0].minTXID})`);
      const metaL0 = await listLevel(
        new FileReplicaClient(join(run.dir, ".app.db-sluice")),
        0,
      );
      assert.ok(metaL0.length < archived.length / 2, `local L0 pruned (${metaL0.length} left)`);

      // The latest state: the CLI restore equals the source database.
      const latestOut = join(dir, "latest.db");
      await restoreTo(run.replica, latestOut);
      const [source, latest] = [await digest(run.dbPath), await digest(latestOut)];
      assert.equal(latest.integrity, "ok");
      assert.equal(latest.sha256, source.sha256, "latest restore equals the source");
      assert.ok(latest.maxN > 200, `the writer committed ${latest.maxN} transactions`);

      // Earlier points still inside retention: the file boundaries of every level (each is
      // restorable while a chain of files from TXID 1 or from a snapshot reaches it). Each
      // restore must be byte-identical to the restore of the same TXID from the uncompacted
      // archive.
      const boundaries = new Set<number>();
      for (const files of levels) for (const f of files) boundaries.add(f.maxTXID);
      const sorted = [...boundaries].sort((a, b) => a - b);
      // At most 12, spread over the range, to keep the test fast.
      const step = Math.max(1, Math.ceil(sorted.length / 12));
      const candidates = sorted.filter((_, i) => i % step === 0 || i === sorted.length - 1);
      // Plus a few compaction-level boundaries past the newest snapshot: their plans need a
      // level (the sample alone can miss them when retention has moved on under load).
      for (const files of [l1, l2, l3]) {
        for (const f of files.filter((f) => f.maxTXID > newestSnap.maxTXID).slice(0, 2)) {
          if (!candidates.includes(f.maxTXID)) candidates.push(f.maxTXID);
        }
      }
      const usedLevels = new Set<number>();
      let checked = 0;
      // Points that end a compaction-level file but no snapshot: their plans need a level.
      const snapshotEnds = new Set(l9.map((f) => f.maxTXID));
      const levelEnds = new Set(
        [...l1, ...l2, ...l3].map((f) => f.maxTXID).filter((t) => !snapshotEnds.has(t)),
      );
      let levelPoints = 0;
      for (const txid of candidates) {
        const out = join(dir, `at-${txid}.db`);
        let result;
        try {
          result = await restore(client, { outputPath: out, txid });
        } catch (err) {
          if (err instanceof TxNotAvailableError) continue;
          throw err;
        }
        for (const f of result.files) usedLevels.add(f.level);
        if (levelEnds.has(txid)) {
          levelPoints++;
          assert.ok(
            result.files.some((f) => f.level >= 1 && f.level <= 3),
            `TXID ${txid} ends a level file, yet its plan used levels ${
              result.files.map((f) => f.level)
            }`,
          );
        }
        const truth = join(dir, `truth-${txid}.db`);
        await restore(archive, { outputPath: truth, txid });
        assert.deepEqual(
          await Deno.readFile(out),
          await Deno.readFile(truth),
          `TXID ${txid}: compacted restore equals the uncompacted one`,
        );
        const d = await digest(out);
        assert.equal(d.integrity, "ok", `TXID ${txid}: integrity`);
        assert.equal(d.distinctN, d.maxN, `TXID ${txid}: a committed prefix 1..${d.maxN}`);
        checked++;
      }
      // Retention under load can leave few earlier points; one compared restore still proves it.
      assert.ok(checked >= 1, `restored ${checked} earlier points`);
      assert.ok(usedLevels.has(9), "some restore plan used a snapshot");
      // Under heavy load, retention can leave only snapshot boundaries restorable; the
      // compaction levels are then checked by the Litestream restore below and the listing above.
      if (levelPoints > 0) {
        assert.ok(
          [1, 2, 3].some((level) => usedLevels.has(level)),
          `some restore plan used a compaction level (used: ${[...usedLevels]})`,
        );
      }
      assert.ok(newestSnap.maxTXID <= maxTXID);

      // Litestream's own restore of the compacted replica is byte-identical to ours.
      if (oracleAvailable()) {
        const oracleOut = join(dir, "oracle.db");
        await litestreamRestore(run.replica, oracleOut);
        assert.deepEqual(await Deno.readFile(oracleOut), await Deno.readFile(latestOut));
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "compaction e2e: retention.enabled false deletes nothing remote",
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "sluice-noretention-" });
    try {
      const run = await runReplication(dir, {
        retentionEnabled: false,
        writerSeconds: 6,
        settled: async (client) => {
          const [l3, l9] = await Promise.all([3, 9].map((l) => listLevel(client, l)));
          return l3.length > 0 && l9.length >= 3;
        },
      });
      const client = new FileReplicaClient(run.replica);
      const archived = await listLevel(new FileReplicaClient(run.archive), 0);
      const l0 = await listLevel(client, 0);
      // Every L0 file ever uploaded is still there.
      assert.deepEqual(
        l0.map((f) => f.maxTXID),
        archived.map((f) => f.maxTXID),
        "no L0 file was deleted",
      );
      assert.equal(l0[0].minTXID, 1);
      // Levels are complete from TXID 1, and every snapshot (one per 3 s) is kept.
      for (const level of [1, 2, 3]) {
        const files = await listLevel(client, level);
        assert.ok(files.length > 0, `level ${level} has files`);
        assert.equal(files[0].minTXID, 1, `level ${level} still starts at TXID 1`);
        assertContiguous(files, `level ${level}`);
      }
      const l9 = await listLevel(client, 9);
      assert.ok(l9.length >= 3, `${l9.length} snapshots kept`);
      // Every snapshot written is still there, the first one included (counted by the
      // compactor; not by time, which a loaded machine stretches).
      assert.ok(
        l9.length >= run.snapshotsWritten,
        `${l9.length} snapshots on the replica, ${run.snapshotsWritten} written`,
      );
      // Local L0 copies are still cleaned up.
      const metaL0 = await listLevel(
        new FileReplicaClient(join(run.dir, ".app.db-sluice")),
        0,
      );
      assert.ok(metaL0.length < archived.length / 2, `local L0 pruned (${metaL0.length} left)`);
      const out = join(dir, "latest.db");
      await restoreTo(run.replica, out);
      assert.equal((await digest(out)).sha256, (await digest(run.dbPath)).sha256);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
