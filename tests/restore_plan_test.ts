import assert from "node:assert/strict";
import { join } from "node:path";
import { FileReplicaClient } from "../src/replica/mod.ts";
import {
  calcRestorePlan,
  NoBackupError,
  NonContiguousError,
  NoSnapshotError,
  restore,
  TxNotAvailableError,
} from "../src/restore/mod.ts";
import { patternPage, planNames, withTempDir, writeLTX } from "./_restore_helpers.ts";

const PAGE_SIZE = 512;
const T0 = 1_700_000_000_000;

/** The creation time given to a file: one second per TXID, like a compaction's last input. */
function timeOf(maxTXID: number): number {
  return T0 + maxTXID * 1000;
}

/**
 * Writes a one-page file per [level, min, max]; page 1's version encodes max and level, so
 * the restored page tells which file was applied last.
 */
async function buildReplica(
  root: string,
  files: [number, number, number][],
): Promise<FileReplicaClient> {
  const client = new FileReplicaClient(root);
  for (const [level, minTXID, maxTXID] of files) {
    await writeLTX(
      client,
      level,
      { minTXID, maxTXID, pageSize: PAGE_SIZE, commit: 1, timestamp: timeOf(maxTXID) },
      [{ pgno: 1, data: patternPage(PAGE_SIZE, 1, maxTXID * 16 + level) }],
    );
  }
  return client;
}

function l0(from: number, to: number): [number, number, number][] {
  const files: [number, number, number][] = [];
  for (let txid = from; txid <= to; txid++) files.push([0, txid, txid]);
  return files;
}

/** L9 1-10; L2 1-12, 13-24; L1 11-14, 15-18, 19-22, 23-26; L0 21…30. */
const MULTI_LEVEL: [number, number, number][] = [
  [9, 1, 10],
  [2, 1, 12],
  [2, 13, 24],
  [1, 11, 14],
  [1, 15, 18],
  [1, 19, 22],
  [1, 23, 26],
  ...l0(21, 30),
];

Deno.test("plan: latest over several levels picks the longest extension each step", async () => {
  await withTempDir(async (dir) => {
    const client = await buildReplica(dir, MULTI_LEVEL);
    assert.deepEqual(planNames(await calcRestorePlan(client, {})), [
      "L9:1-10",
      "L1:11-14",
      "L2:13-24",
      "L1:23-26",
      "L0:27-27",
      "L0:28-28",
      "L0:29-29",
      "L0:30-30",
    ]);
  });
});

Deno.test("plan: --txid inside and at the edges of compacted ranges", async () => {
  await withTempDir(async (dir) => {
    const client = await buildReplica(dir, MULTI_LEVEL);
    const plan = async (txid: number) => planNames(await calcRestorePlan(client, { txid }));
    // At the snapshot's edge: the snapshot alone.
    assert.deepEqual(await plan(10), ["L9:1-10"]);
    // Inside L1 11-14: the L2 file 1-12 overlaps the snapshot and ends exactly there.
    assert.deepEqual(await plan(12), ["L9:1-10", "L2:1-12"]);
    // L2 13-24 overshoots 22, so the finer L1 files are used.
    assert.deepEqual(await plan(22), ["L9:1-10", "L1:11-14", "L1:15-18", "L1:19-22"]);
    assert.deepEqual(await plan(24), ["L9:1-10", "L1:11-14", "L2:13-24"]);
    assert.deepEqual(await plan(27), ["L9:1-10", "L1:11-14", "L2:13-24", "L1:23-26", "L0:27-27"]);
    // Inside a compacted range whose finer files are gone: not restorable.
    await assert.rejects(() => plan(21), TxNotAvailableError);
    await assert.rejects(() => plan(20), TxNotAvailableError);
    // Before the first snapshot (no file ends there and nothing starts at 1 below it).
    await assert.rejects(() => plan(5), TxNotAvailableError);
    // Beyond the newest file.
    await assert.rejects(() => plan(31), (err: Error) => {
      assert.ok(err instanceof TxNotAvailableError);
      assert.match(err.message, /TXID 000000000000001f is not available/);
      assert.match(err.message, /covers TXID 000000000000000a…000000000000001e/);
      return true;
    });
  });
});

Deno.test("plan: --timestamp uses createdAt strictly before the target", async () => {
  await withTempDir(async (dir) => {
    const client = await buildReplica(dir, MULTI_LEVEL);
    const plan = async (ms: number) =>
      planNames(await calcRestorePlan(client, { timestamp: new Date(ms) }));
    // L1 19-22 was created at exactly timeOf(22): excluded at that instant, included 1 ms later.
    assert.deepEqual(await plan(timeOf(22)), ["L9:1-10", "L1:11-14", "L1:15-18"]);
    assert.deepEqual(await plan(timeOf(22) + 1), ["L9:1-10", "L1:11-14", "L1:15-18", "L1:19-22"]);
    assert.deepEqual(await plan(timeOf(10) + 1), ["L9:1-10"]);
    await assert.rejects(() => plan(timeOf(10)), TxNotAvailableError);
    assert.deepEqual(
      (await plan(timeOf(100))).at(-1),
      "L0:30-30",
    );
  });
});

Deno.test("plan: the snapshot is the last qualifying level-9 file", async () => {
  await withTempDir(async (dir) => {
    const client = await buildReplica(dir, [[9, 1, 10], [9, 1, 20], [9, 1, 30], ...l0(1, 35)]);
    assert.deepEqual(planNames(await calcRestorePlan(client, {})), [
      "L9:1-30",
      ...[31, 32, 33, 34, 35].map((t) => `L0:${t}-${t}`),
    ]);
    assert.deepEqual(planNames(await calcRestorePlan(client, { txid: 25 })), [
      "L9:1-20",
      ...[21, 22, 23, 24, 25].map((t) => `L0:${t}-${t}`),
    ]);
    assert.deepEqual(planNames(await calcRestorePlan(client, { txid: 20 })), ["L9:1-20"]);
    assert.deepEqual(
      planNames(await calcRestorePlan(client, { timestamp: new Date(timeOf(20) + 1) })),
      ["L9:1-20"],
    );
    // Before the first snapshot the L0 files (which start at TXID 1) still reach back.
    assert.deepEqual(planNames(await calcRestorePlan(client, { txid: 3 })), [
      "L0:1-1",
      "L0:2-2",
      "L0:3-3",
    ]);
  });
});

Deno.test("plan: tie-breaks on equal ranges: larger max, then smaller min, then higher level", async () => {
  await withTempDir(async (dir) => {
    // Same range at levels 1 and 2: the higher level wins.
    const equal = await buildReplica(join(dir, "equal"), [
      [9, 1, 5],
      [1, 6, 10],
      [2, 6, 10],
      ...l0(6, 10),
    ]);
    assert.deepEqual(planNames(await calcRestorePlan(equal, {})), ["L9:1-5", "L2:6-10"]);

    // Same max: the smaller min wins over the higher level.
    const smallerMin = await buildReplica(join(dir, "min"), [[9, 1, 5], [1, 3, 10], [2, 6, 10]]);
    assert.deepEqual(planNames(await calcRestorePlan(smallerMin, {})), ["L9:1-5", "L1:3-10"]);

    // A larger max wins over everything else.
    const largerMax = await buildReplica(join(dir, "max"), [[9, 1, 5], [3, 6, 9], [1, 6, 10], [
      3,
      10,
      10,
    ]]);
    assert.deepEqual(planNames(await calcRestorePlan(largerMax, {})), ["L9:1-5", "L1:6-10"]);

    // The higher level's file is the one whose bytes are restored.
    await withTempDir(async (out) => {
      const result = await restore(equal, { outputPath: join(out, "db") });
      assert.deepEqual(planNames(result.files), ["L9:1-5", "L2:6-10"]);
      assert.equal(result.txid, 10);
      const bytes = await Deno.readFile(join(out, "db"));
      assert.deepEqual(bytes, patternPage(PAGE_SIZE, 1, 10 * 16 + 2));
    });
  });
});

Deno.test("plan: a gap is an error for the latest state, not for an earlier target", async () => {
  await withTempDir(async (dir) => {
    const client = await buildReplica(dir, [[9, 1, 10], [0, 12, 12], [0, 13, 13]]);
    await assert.rejects(() => calcRestorePlan(client, {}), (err: Error) => {
      assert.ok(err instanceof NonContiguousError);
      assert.match(err.message, /have up to TXID 000000000000000a/);
      assert.match(err.message, /level 0 starts at TXID 000000000000000c/);
      return true;
    });
    assert.deepEqual(planNames(await calcRestorePlan(client, { txid: 10 })), ["L9:1-10"]);
    await assert.rejects(() => calcRestorePlan(client, { txid: 13 }), TxNotAvailableError);
  });
});

Deno.test("plan: without a snapshot the plan starts at a file with minTXID 1", async () => {
  await withTempDir(async (dir) => {
    const client = await buildReplica(dir, [[1, 1, 4], [1, 5, 8], ...l0(3, 10)]);
    assert.deepEqual(planNames(await calcRestorePlan(client, {})), [
      "L1:1-4",
      "L1:5-8",
      "L0:9-9",
      "L0:10-10",
    ]);
    assert.deepEqual(planNames(await calcRestorePlan(client, { txid: 4 })), ["L1:1-4"]);
    await assert.rejects(() => calcRestorePlan(client, { txid: 3 }), TxNotAvailableError);

    const noStart = await buildReplica(join(dir, "nostart"), l0(5, 7));
    await assert.rejects(() => calcRestorePlan(noStart, {}), (err: Error) => {
      assert.ok(err instanceof NoSnapshotError);
      assert.match(err.message, /oldest file starts at TXID 0000000000000005/);
      return true;
    });
  });
});

Deno.test("plan: an empty replica has no backup; txid and timestamp are exclusive", async () => {
  await withTempDir(async (dir) => {
    const client = new FileReplicaClient(join(dir, "missing"));
    await assert.rejects(() => calcRestorePlan(client, {}), (err: Error) => {
      assert.ok(err instanceof NoBackupError);
      assert.equal(err.message, `no backup found at ${client.location}`);
      return true;
    });
    await assert.rejects(
      () => calcRestorePlan(client, { txid: 1, timestamp: new Date() }),
      RangeError,
    );
  });
});
