/**
 * An event storm: 500 databases created in one burst (half in the top directory, half in 50
 * directories created in the same burst) under a running `sluice replicate`. Every one must
 * reach its replica (replica path + path relative to dir), with no debounce and no reconcile
 * scan to help (it is 30 s away); a sample is restored and checked.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  createDatabase,
  distinct,
  hasReplica,
  range,
  replicatedDatabases,
  restoredRows,
  SluiceProcess,
  waitFor,
  withTempDir,
  writeDirConfig,
} from "./_monitor_helpers.ts";

Deno.test("monitor burst: 500 databases created at once are all replicated", async () => {
  await withTempDir(async (tmp) => {
    const dir = join(tmp, "tenants");
    const replica = join(tmp, "replica");
    await Deno.mkdir(dir);
    const config = await writeDirConfig(join(tmp, "sluice.yml"), dir, replica, {
      recursive: true,
    });
    const rels: string[] = [];
    for (let i = 0; i < 250; i++) rels.push(`flat-${String(i).padStart(3, "0")}.db`);
    for (let d = 0; d < 50; d++) {
      for (let i = 0; i < 5; i++) rels.push(`shard-${String(d).padStart(2, "0")}/t${i}.db`);
    }
    const rowsOf = (k: number) => 1 + (k % 7);

    const sluice = await SluiceProcess.start(config);
    try {
      rels.forEach((rel, k) => createDatabase(join(dir, rel), rowsOf(k)));
      await waitFor(
        "all 500 databases on the replica",
        () => rels.every((rel) => hasReplica(join(replica, rel))),
        60_000,
      ).catch((err) => {
        const missing = rels.filter((rel) => !hasReplica(join(replica, rel)));
        throw new Error(`${(err as Error).message}; missing ${missing.length}: ${missing}`);
      });
    } finally {
      await sluice.stop();
    }
    assert.deepEqual(replicatedDatabases(replica), [...rels].sort());
    for (const k of [0, 1, 137, 249, 250, 333, 499]) {
      assert.deepEqual(distinct(await restoredRows(join(replica, rels[k]))), range(rowsOf(k)));
    }
  });
});
