/**
 * The compactor on real files: merges of real LTX files into the next level (checked by
 * restoring them), the verification that refuses wrong outputs, and the retention rules of
 * FORMAT.md §3.4 both as pure selections and as deletions on a real file replica.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  CompactionVerifyError,
  Compactor,
  type CompactorOptions,
  promoteToSnapshot,
  selectL0Deletions,
  selectLevelDeletions,
  selectSnapshotDeletions,
} from "../src/compaction/mod.ts";
import { FileReplicaClient } from "../src/replica/mod.ts";
import type { LTXFileInfo, ReplicaClient } from "../src/replica/mod.ts";
import { restore } from "../src/restore/mod.ts";
import { CHECKSUM_FLAG, crc64, Decoder, Encoder } from "../src/ltx/mod.ts";
import { patchChecksum } from "../src/compaction/mod.ts";
import {
  buildStates,
  changedPages,
  encodeLTX,
  equalBytes,
  makeHeader,
  planNames,
  snapshotPages,
  withTempDir,
  writeLTX,
} from "./_restore_helpers.ts";

const PAGE_SIZE = 4096;
/** A multiple of every interval used below, so wall-clock truncation is easy to reason about. */
const BASE = 1_800_000_000_000;

function settings(overrides: Partial<CompactorOptions> = {}): CompactorOptions {
  return {
    levels: [30_000, 300_000],
    snapshotInterval: 0,
    snapshotRetention: 60_000,
    l0Retention: 60_000,
    retentionEnabled: true,
    ...overrides,
  };
}

async function list(client: ReplicaClient, level: number): Promise<LTXFileInfo[]> {
  return await Array.fromAsync(client.ltxFiles(level));
}

async function listAll(client: ReplicaClient): Promise<string[]> {
  const names: string[] = [];
  for (let level = 0; level <= 9; level++) names.push(...planNames(await list(client, level)));
  return names;
}

/**
 * A replica whose L0 holds the four states of a real database (create, update, shrink by
 * VACUUM, regrow) as TXIDs 1…4, created at BASE + txid seconds. Returns the images.
 */
async function writeStates(dir: string, client: ReplicaClient): Promise<Uint8Array[]> {
  const images = buildStates(join(dir, "source.db"), PAGE_SIZE);
  for (const [i, image] of images.entries()) {
    const txid = i + 1;
    const pages = i === 0
      ? snapshotPages(image, PAGE_SIZE)
      : changedPages(images[i - 1], image, PAGE_SIZE);
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

async function restoredBytes(
  client: ReplicaClient,
  dir: string,
  name: string,
  txid?: number,
): Promise<{ bytes: Uint8Array; plan: string[] }> {
  const outputPath = join(dir, name);
  const result = await restore(client, { outputPath, txid });
  return { bytes: await Deno.readFile(outputPath), plan: planNames(result.files) };
}

function info(level: number, minTXID: number, maxTXID: number, createdAt: number): LTXFileInfo {
  return { level, minTXID, maxTXID, size: 200, createdAt: new Date(createdAt) };
}

Deno.test("compactor: L0 → L1 → L2 merges restore to the same bytes, including shrink and regrowth", async () => {
  await withTempDir(async (dir) => {
    const client = new FileReplicaClient(join(dir, "replica"));
    const images = await writeStates(dir, client);
    const compactor = new Compactor(client, settings());

    const first = await compactor.compact(1, BASE + 5000);
    assert.equal(first.outcome, "compacted");
    assert.deepEqual(planNames(first.files), ["L1:1-4"]);
    // The output carries its last input's timestamp (FORMAT.md §3.1) as its creation time.
    assert.equal((await list(client, 1))[0].createdAt.getTime(), BASE + 4000);

    // Only level 1 (a snapshot: it starts at TXID 1) is needed for the latest state.
    const latest = await restoredBytes(client, dir, "latest.db");
    assert.deepEqual(latest.plan, ["L1:1-4"]);
    assert.ok(equalBytes(latest.bytes, images[3]), "L1 restores the final image");
    // An earlier TXID is still restorable from the L0 files.
    const early = await restoredBytes(client, dir, "at2.db", 2);
    assert.ok(equalBytes(early.bytes, images[1]), "TXID 2 restores the second image");

    // Level 2 merges level 1; the restore plan prefers the higher level on ties.
    const second = await compactor.compact(2, BASE + 300_000);
    assert.deepEqual(planNames(second.files), ["L2:1-4"]);
    const fromL2 = await restoredBytes(client, dir, "l2.db");
    assert.deepEqual(fromL2.plan, ["L2:1-4"]);
    assert.ok(equalBytes(fromL2.bytes, images[3]));
  });
});

Deno.test("compactor: too early, up to date, and the next run continues the level", async () => {
  await withTempDir(async (dir) => {
    const client = new FileReplicaClient(join(dir, "replica"));
    const images = await writeStates(dir, client);
    const compactor = new Compactor(client, settings());
    assert.equal((await compactor.compact(1, BASE + 5000)).outcome, "compacted");

    // A new L0 file (an update of the final state).
    const db = join(dir, "source.db");
    const { DatabaseSync } = await import("node:sqlite");
    const conn = new DatabaseSync(db);
    conn.exec("UPDATE t SET s = 'changed' WHERE id < 40");
    conn.close();
    const image5 = await Deno.readFile(db);
    await writeLTX(client, 0, {
      minTXID: 5,
      maxTXID: 5,
      pageSize: PAGE_SIZE,
      commit: image5.byteLength / PAGE_SIZE,
      timestamp: BASE + 6000,
    }, changedPages(images[3], image5, PAGE_SIZE));

    // Level 1 already ran in the interval [BASE, BASE + 30 s).
    assert.equal((await compactor.compact(1, BASE + 7000)).outcome, "too-early");
    const next = await compactor.compact(1, BASE + 30_000);
    assert.deepEqual(planNames(next.files), ["L1:5-5"]);
    assert.equal((await compactor.compact(1, BASE + 60_000)).outcome, "up-to-date");
    assert.deepEqual(planNames(await list(client, 1)), ["L1:1-4", "L1:5-5"]);

    const latest = await restoredBytes(client, dir, "latest.db");
    assert.ok(equalBytes(latest.bytes, image5));

    // A level that is not configured is refused.
    await assert.rejects(() => compactor.compact(3, BASE), RangeError);
  });
});

Deno.test("compactor: a batch limit splits a backlog into contiguous outputs", async () => {
  await withTempDir(async (dir) => {
    const client = new FileReplicaClient(join(dir, "replica"));
    const images = await writeStates(dir, client);
    const compactor = new Compactor(client, settings({ maxInputs: 3 }));
    const result = await compactor.compact(1, BASE + 5000);
    assert.deepEqual(planNames(result.files), ["L1:1-3", "L1:4-4"]);
    // Remove L0 so the restore must use the two L1 files.
    await client.deleteLTXFiles(await list(client, 0));
    const latest = await restoredBytes(client, dir, "latest.db");
    assert.deepEqual(latest.plan, ["L1:1-3", "L1:4-4"]);
    assert.ok(equalBytes(latest.bytes, images[3]));
  });
});

Deno.test("compactor: a hole in the source level stops the merge before it", async () => {
  await withTempDir(async (dir) => {
    const client = new FileReplicaClient(join(dir, "replica"));
    const images = await writeStates(dir, client);
    const l0 = await list(client, 0);
    await client.deleteLTXFiles([l0[2]]); // TXID 3 missing
    const compactor = new Compactor(client, settings());
    const result = await compactor.compact(1, BASE + 5000);
    assert.deepEqual(planNames(result.files), ["L1:1-2"]);
    const { bytes } = await restoredBytes(client, dir, "at2.db", 2);
    assert.ok(equalBytes(bytes, images[1]));
    // Level 1 does not jump the gap: TXID 4 waits until TXID 3 shows up.
    assert.equal((await compactor.compact(1, BASE + 30_000)).outcome, "up-to-date");
    assert.deepEqual(planNames(await list(client, 1)), ["L1:1-2"]);
    await writeLTX(client, 0, {
      minTXID: 3,
      maxTXID: 3,
      pageSize: PAGE_SIZE,
      commit: images[2].byteLength / PAGE_SIZE,
      timestamp: BASE + 3000,
    }, changedPages(images[1], images[2], PAGE_SIZE));
    assert.deepEqual(planNames((await compactor.compact(1, BASE + 60_000)).files), ["L1:3-4"]);
    const latest = await restoredBytes(client, dir, "latest.db");
    assert.ok(equalBytes(latest.bytes, images[3]));
  });
});

Deno.test("compactor: an input whose header contradicts its name fails and writes nothing", async () => {
  await withTempDir(async (dir) => {
    const client = new FileReplicaClient(join(dir, "replica"));
    const images = await writeStates(dir, client);
    // A file named 5-5 whose header says 6-6.
    const bytes = await encodeLTX({
      minTXID: 6,
      maxTXID: 6,
      pageSize: PAGE_SIZE,
      commit: images[3].byteLength / PAGE_SIZE,
      timestamp: BASE + 5000,
    }, [{ pgno: 1, data: images[3].subarray(0, PAGE_SIZE) }]);
    await client.writeLTXFile({ level: 0, minTXID: 5, maxTXID: 5 }, bytes, BASE + 5000);
    const compactor = new Compactor(client, settings());
    await assert.rejects(() => compactor.compact(1, BASE + 6000), CompactionVerifyError);
    assert.deepEqual(await list(client, 1), [], "no level-1 file was written");
    assert.equal((await list(client, 0)).length, 5, "nothing was deleted");
  });
});

Deno.test("compactor: local L0 copies are preferred over the replica's", async () => {
  await withTempDir(async (dir) => {
    const client = new FileReplicaClient(join(dir, "replica"));
    const local = new FileReplicaClient(join(dir, "meta"));
    const images = await writeStates(dir, local);
    // The replica lists the same files, but their contents are garbage: a merge that read
    // them would fail the checksum.
    for (const file of await list(local, 0)) {
      await client.writeLTXFile(file, new Uint8Array(file.size).fill(7), file.createdAt.getTime());
    }
    const compactor = new Compactor(client, settings({ local }));
    assert.deepEqual(planNames((await compactor.compact(1, BASE + 5000)).files), ["L1:1-4"]);
    const l1 = await list(client, 1);
    const restored = await restore(client, { outputPath: join(dir, "out.db") });
    assert.deepEqual(planNames(restored.files), planNames(l1));
    assert.ok(equalBytes(await Deno.readFile(join(dir, "out.db")), images[3]));
  });
});

Deno.test("retention rules: snapshots keep the newest, and the floor is the last deleted one", () => {
  const now = BASE;
  const snaps = [
    info(9, 1, 10, now - 5000),
    info(9, 1, 20, now - 4000),
    info(9, 1, 30, now - 1000),
  ];
  // Cutoff now − 2 s: the first two go; the floor is the newest deleted snapshot's TXID.
  let plan = selectSnapshotDeletions(snaps, now - 2000);
  assert.deepEqual(plan.doomed.map((f) => f.maxTXID), [10, 20]);
  assert.equal(plan.minSnapshotTXID, 20);
  // Everything expired: the newest still stays.
  plan = selectSnapshotDeletions(snaps, now + 1);
  assert.deepEqual(plan.doomed.map((f) => f.maxTXID), [10, 20]);
  assert.equal(plan.minSnapshotTXID, 20);
  // A single old snapshot is never deleted.
  plan = selectSnapshotDeletions([snaps[0]], now + 1);
  assert.deepEqual(plan, { doomed: [], minSnapshotTXID: 0 });
  // Nothing expired: nothing deleted, no floor.
  plan = selectSnapshotDeletions(snaps, now - 10_000);
  assert.deepEqual(plan, { doomed: [], minSnapshotTXID: 0 });
  assert.deepEqual(selectSnapshotDeletions([], now), { doomed: [], minSnapshotTXID: 0 });

  const l1 = [info(1, 1, 8, 0), info(1, 9, 19, 0), info(1, 20, 25, 0), info(1, 26, 27, 0)];
  assert.deepEqual(selectLevelDeletions(l1, 20).map((f) => f.maxTXID), [8, 19]);
  assert.deepEqual(selectLevelDeletions(l1, 0), []);
  // The newest file of a level stays even below the floor.
  assert.deepEqual(selectLevelDeletions(l1, 1000).map((f) => f.maxTXID), [8, 19, 25]);
});

Deno.test("retention rules: L0 goes once covered by L1 and old enough, never the newest", () => {
  const now = BASE;
  const l0 = [1, 2, 3, 4, 5].map((t) => info(0, t, t, now - 10_000 + t * 1000));
  // Cutoff at file 3's time: files 1…3 are old enough; L1 covers up to 2.
  assert.deepEqual(selectL0Deletions(l0, 2, now - 7000).map((f) => f.maxTXID), [1, 2]);
  // The scan stops at the first file newer than the cutoff even if later ones are covered.
  assert.deepEqual(selectL0Deletions(l0, 5, now - 8500).map((f) => f.maxTXID), [1]);
  // Everything old and covered: the newest L0 (the replica position) stays.
  assert.deepEqual(selectL0Deletions(l0, 5, now).map((f) => f.maxTXID), [1, 2, 3, 4]);
  // No L1 yet: nothing goes.
  assert.deepEqual(selectL0Deletions(l0, 0, now), []);
});

/** A replica with snapshots, levels and L0, all created long ago except the newest bits. */
async function populated(dir: string): Promise<{ client: ReplicaClient; images: Uint8Array[] }> {
  const client = new FileReplicaClient(join(dir, "replica"));
  const images = await writeStates(dir, client); // L0 1…4 at BASE + 1…4 s
  const image = (i: number) => snapshotPages(images[i], PAGE_SIZE);
  const commit = (i: number) => images[i].byteLength / PAGE_SIZE;
  for (const [txid, i, at] of [[2, 1, BASE + 2000], [3, 2, BASE + 3000], [4, 3, BASE + 60_000]]) {
    await writeLTX(client, 9, {
      minTXID: 1,
      maxTXID: txid,
      pageSize: PAGE_SIZE,
      commit: commit(i),
      timestamp: at,
    }, image(i));
  }
  // Level 1 as four one-transaction compactions 1-1…4-4 (copies of the L0 files).
  for (const file of await list(client, 0)) {
    const bytes = await new Response(await client.openLTXFile(file)).bytes();
    await client.writeLTXFile({ ...file, level: 1 }, bytes, file.createdAt.getTime());
  }
  return { client, images };
}

Deno.test("snapshot retention: deletes expired snapshots and level files below the floor", async () => {
  await withTempDir(async (dir) => {
    const { client, images } = await populated(dir);
    assert.deepEqual(planNames(await list(client, 1)), ["L1:1-1", "L1:2-2", "L1:3-3", "L1:4-4"]);
    const compactor = new Compactor(
      client,
      settings({ levels: [1000], snapshotRetention: 10_000 }),
    );
    // now − 10 s = BASE + 20 s: the snapshots at 2 and 3 expired; the one at 4 (BASE + 60 s) stays.
    const result = await compactor.enforceSnapshotRetention(BASE + 30_000);
    assert.equal(result.minSnapshotTXID, 3);
    assert.deepEqual(await listAll(client), [
      "L0:1-1",
      "L0:2-2",
      "L0:3-3",
      "L0:4-4",
      "L1:3-3",
      "L1:4-4",
      "L9:1-4",
    ]);
    const { bytes } = await restoredBytes(client, dir, "latest.db");
    assert.ok(equalBytes(bytes, images[3]));
    // Far in the future: the newest snapshot still stays, and so does each level's newest file.
    await compactor.enforceSnapshotRetention(BASE + 10_000_000);
    assert.deepEqual(planNames(await list(client, 9)), ["L9:1-4"]);
    assert.deepEqual(planNames(await list(client, 1)), ["L1:3-3", "L1:4-4"]);
  });
});

Deno.test("retention.enabled false: nothing remote is deleted, local L0 is still cleaned", async () => {
  await withTempDir(async (dir) => {
    const { client } = await populated(dir);
    const local = new FileReplicaClient(join(dir, "meta"));
    for (const file of await list(client, 0)) {
      const bytes = await new Response(await client.openLTXFile(file)).bytes();
      await local.writeLTXFile(file, bytes, file.createdAt.getTime());
    }
    const before = await listAll(client);
    const compactor = new Compactor(
      client,
      settings({
        levels: [1000],
        snapshotRetention: 1,
        l0Retention: 1,
        retentionEnabled: false,
        local,
      }),
    );
    const snap = await compactor.enforceSnapshotRetention(BASE + 10_000_000);
    assert.deepEqual(snap.deleted, []);
    const l0 = await compactor.enforceL0Retention(BASE + 10_000_000);
    assert.deepEqual(l0.remote, []);
    assert.deepEqual(await listAll(client), before, "the replica is untouched");
    // Local copies covered by L1 go, except the newest (the WAL cursor).
    assert.deepEqual(l0.local.map((f) => f.maxTXID), [1, 2, 3]);
    assert.deepEqual(planNames(await list(local, 0)), ["L0:4-4"]);
  });
});

Deno.test("L0 retention: covered and old files go from replica and meta dir; 0 keeps the replica's", async () => {
  await withTempDir(async (dir) => {
    const client = new FileReplicaClient(join(dir, "replica"));
    const local = new FileReplicaClient(join(dir, "meta"));
    await writeStates(dir, client); // L0 1…4 at BASE + 1…4 s
    for (const file of await list(client, 0)) {
      const bytes = await new Response(await client.openLTXFile(file)).bytes();
      await local.writeLTXFile(file, bytes, file.createdAt.getTime());
    }
    // L1 covers 1…3 only.
    const hidden = (await list(client, 0)).filter((f) => f.maxTXID === 4);
    const saved = await new Response(await client.openLTXFile(hidden[0])).bytes();
    await client.deleteLTXFiles(hidden);
    await new Compactor(client, settings()).compact(1, BASE + 10_000);
    await client.writeLTXFile(hidden[0], saved, BASE + 4000);
    assert.deepEqual(planNames(await list(client, 1)), ["L1:1-3"]);

    // Retention 0: the replica keeps its L0; local copies covered by L1 go.
    const keep = new Compactor(client, settings({ l0Retention: 0, local }));
    const none = await keep.enforceL0Retention(BASE + 10_000);
    assert.deepEqual(none.remote, []);
    assert.deepEqual(none.local.map((f) => f.maxTXID), [1, 2, 3]);
    assert.equal((await list(client, 0)).length, 4);

    // Retention 2.5 s at BASE + 5 s: cutoff BASE + 2.5 s, so files 1 and 2 go, 3 is too young.
    const compactor = new Compactor(client, settings({ l0Retention: 2500, local }));
    const some = await compactor.enforceL0Retention(BASE + 5000);
    assert.deepEqual(some.remote.map((f) => f.maxTXID), [1, 2]);
    assert.deepEqual(planNames(await list(client, 0)), ["L0:3-3", "L0:4-4"]);
    // Later: 3 goes too; 4 is not covered by L1 and stays.
    await compactor.enforceL0Retention(BASE + 60_000);
    assert.deepEqual(planNames(await list(client, 0)), ["L0:4-4"]);
  });
});

Deno.test("compactor: the schedule compacts on its own and stops cleanly", async () => {
  await withTempDir(async (dir) => {
    const client = new FileReplicaClient(join(dir, "replica"));
    const images = await writeStates(dir, client);
    const compactor = new Compactor(client, settings({ levels: [200, 400], l0Retention: 0 }));
    compactor.start();
    const deadline = Date.now() + 5000;
    while ((await list(client, 2)).length === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    await compactor.stop();
    assert.deepEqual(planNames(await list(client, 1)), ["L1:1-4"]);
    assert.deepEqual(planNames(await list(client, 2)), ["L2:1-4"]);
    assert.equal(compactor.stats.errors, 0, compactor.stats.lastError);
    const { bytes } = await restoredBytes(client, dir, "latest.db");
    assert.ok(equalBytes(bytes, images[3]));
  });
});

Deno.test("promote: the first image of a database (TXID 1) becomes the snapshot as a hard link", async () => {
  await withTempDir(async (dir) => {
    const local = new FileReplicaClient(join(dir, "meta"));
    const client = new FileReplicaClient(join(dir, "replica"));
    const image = buildStates(join(dir, "source.db"), PAGE_SIZE)[3];
    const pages = snapshotPages(image, PAGE_SIZE);
    // A checkpointed database: its first sync read no WAL frame (offset 32, size 0), which
    // is the snapshot's header too, but for the time.
    const l0Header = {
      ...makeHeader({
        minTXID: 1,
        maxTXID: 1,
        pageSize: PAGE_SIZE,
        commit: image.byteLength / PAGE_SIZE,
        timestamp: BASE,
      }),
      walOffset: 32,
    };
    const l0 = { level: 0, minTXID: 1, maxTXID: 1 };
    const chunks: Uint8Array<ArrayBuffer>[] = [];
    const encoder = new Encoder(
      new WritableStream({ write: (chunk) => void chunks.push(chunk.slice()) }),
      l0Header,
    );
    for (const page of pages) await encoder.encodePage(page.pgno, page.data);
    await encoder.close();
    const bytes = new Uint8Array(await new Blob(chunks).arrayBuffer());
    await local.writeLTXFile(l0, bytes, BASE);
    const info = await promoteToSnapshot(
      { client: local, txid: 1, pageCount: pages.length },
      client,
    );
    assert.ok(info, "promoted");
    assert.deepEqual([info.level, info.minTXID, info.maxTXID], [9, 1, 1]);
    assert.equal(info.createdAt.getTime(), BASE, "the L0 file's time, when its image was read");
    const [a, b] = [await Deno.stat(local.localPath(l0)), await Deno.stat(client.localPath(info))];
    assert.equal(b.ino, a.ino, "the same file");
    const decoder = new Decoder(await client.openLTXFile(info), { name: "linked" });
    const header = await decoder.readHeader();
    assert.deepEqual([header.minTXID, header.maxTXID, header.timestamp], [1, 1, BASE]);
    const restored = await restoredBytes(client, dir, "out.db");
    assert.deepEqual(restored.plan, ["L9:1-1"]);
    assert.ok(equalBytes(restored.bytes, image));

    // With a time of its own, the snapshot is a copy with its own header.
    const other = new FileReplicaClient(join(dir, "other"));
    const copied = await promoteToSnapshot(
      { client: local, txid: 1, pageCount: pages.length },
      other,
      BASE + 1000,
    );
    assert.ok(copied);
    assert.notEqual((await Deno.stat(other.localPath(copied))).ino, a.ino);
    assert.equal(copied.createdAt.getTime(), BASE + 1000);
  });
});

Deno.test("promote: the CRC patch equals a direct checksum of the changed stream", () => {
  for (const length of [100, 101, 4096 + 100, 60_000 + 37]) {
    const a = crypto.getRandomValues(new Uint8Array(length));
    const b = a.slice();
    crypto.getRandomValues(b.subarray(0, 100));
    const stored = (bytes: Uint8Array) => CHECKSUM_FLAG | crc64(bytes);
    assert.equal(
      patchChecksum(stored(a), a.subarray(0, 100), b.subarray(0, 100), length - 100),
      stored(b),
      `length ${length}`,
    );
  }
});

for (const encoding of ["frame", "block"] as const) {
  Deno.test(`promote: a full L0 file becomes a valid snapshot (${encoding} encoding)`, async () => {
    await withTempDir(async (dir) => {
      const local = new FileReplicaClient(join(dir, "meta"));
      const client = new FileReplicaClient(join(dir, "replica"));
      const images = buildStates(join(dir, "source.db"), PAGE_SIZE);
      const image = images[3];
      const pages = snapshotPages(image, PAGE_SIZE);
      await writeLTX(
        local,
        0,
        {
          minTXID: 7,
          maxTXID: 7,
          pageSize: PAGE_SIZE,
          commit: image.byteLength / PAGE_SIZE,
          timestamp: BASE,
        },
        pages,
        { encoding },
      );
      const info = await promoteToSnapshot(
        { client: local, txid: 7, pageCount: pages.length },
        client,
        BASE + 1000,
      );
      assert.ok(info, "promoted");
      assert.deepEqual([info.level, info.minTXID, info.maxTXID], [9, 1, 7]);
      assert.equal(info.createdAt.getTime(), BASE + 1000);
      // The decoder verifies the whole file, the patched checksum included.
      const decoder = new Decoder(await client.openLTXFile(info), { name: "promoted" });
      const header = await decoder.readHeader();
      assert.deepEqual([header.minTXID, header.maxTXID, header.timestamp], [1, 7, BASE + 1000]);
      let count = 0;
      while (await decoder.readPage()) count++;
      assert.equal(count, pages.length);
      const { bytes, plan } = await restoredBytes(client, dir, "out.db");
      assert.deepEqual(plan, ["L9:1-7"]);
      assert.ok(equalBytes(bytes, image));

      // An incremental L0 file (not every page) is not promoted.
      await writeLTX(
        local,
        0,
        {
          minTXID: 8,
          maxTXID: 8,
          pageSize: PAGE_SIZE,
          commit: image.byteLength / PAGE_SIZE,
        },
        pages.slice(0, 3),
        { encoding },
      );
      assert.equal(
        await promoteToSnapshot({ client: local, txid: 8, pageCount: 3 }, client),
        undefined,
      );
      assert.equal(
        await promoteToSnapshot({ client: local, txid: 8, pageCount: pages.length }, client),
        undefined,
        "a page count that does not match the file is refused",
      );
      assert.equal(
        await promoteToSnapshot({ client: local, txid: 9, pageCount: 3 }, client),
        undefined,
        "a missing file is not promoted",
      );
      assert.deepEqual(planNames(await list(client, 9)), ["L9:1-7"]);
    });
  });
}
