/**
 * The Store's runtime contract: add/remove are idempotent and safe under concurrency, a database
 * that cannot be opened is retried without holding up the others, and a removed database is
 * never reopened by a retry scheduled before its removal.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  createDatabase,
  digest,
  replicaTXID,
  restoreTo,
  runWriter,
  sluice,
  startReplicate,
  waitFor,
} from "./_sluice.ts";
import { FileReplicaClient } from "../src/replica/mod.ts";
import { type DatabaseEntry, Store } from "../src/engine/mod.ts";
import { createLogger } from "../src/log/mod.ts";

const RETRY_MS = 150;

function entryFor(dir: string, name: string): DatabaseEntry {
  return {
    path: join(dir, name),
    metaDir: join(dir, `.${name}-sluice`),
    createClient: () => new FileReplicaClient(join(dir, "replica", name)),
    syncInterval: 50,
    monitorInterval: 1000,
  };
}

function newStore(): Store {
  return new Store({
    logger: createLogger({ level: "error", type: "text" }),
    openRetryDelay: RETRY_MS,
  });
}

Deno.test("store: the same path added many times at once is opened once and replicated", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-store-" });
  const store = newStore();
  try {
    const entry = entryFor(dir, "a.db");
    createDatabase(entry.path);
    // A second open of the same database would fail on the meta dir lock: all must succeed.
    const added = await Promise.all(Array.from({ length: 8 }, () => store.add(entry)));
    assert.deepEqual(added, Array(8).fill(true));
    assert.deepEqual(store.paths, [entry.path]);
    await runWriter("--db", entry.path, "--rate", "0", "--count", "30");
    await Promise.all([store.remove(entry.path, true), store.remove(entry.path, true)]);
    assert.deepEqual(store.paths, []);
    const restored = join(dir, "restored.db");
    await restoreTo(join(dir, "replica", "a.db"), restored);
    assert.deepEqual(await digest(restored), await digest(entry.path));
    // Added again after its removal, it continues the same replica.
    assert.equal(await store.add(entry), true);
    await runWriter("--db", entry.path, "--rate", "0", "--count", "10");
    await store.remove(entry.path, true);
    const again = join(dir, "restored-again.db");
    await restoreTo(join(dir, "replica", "a.db"), again);
    assert.deepEqual(await digest(again), await digest(entry.path));
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("store: a database that cannot be opened is retried and never holds up the others", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-store-" });
  const store = newStore();
  try {
    const bad = entryFor(dir, "bad.db");
    const good = entryFor(dir, "good.db");
    await Deno.writeTextFile(bad.path, "not a database yet\n");
    createDatabase(good.path);
    const [badAdded, goodAdded] = await Promise.all([store.add(bad), store.add(good)]);
    assert.equal(badAdded, false);
    assert.equal(goodAdded, true);
    assert.deepEqual(store.paths, [good.path]);
    // The file becomes a database: the scheduled retry picks it up.
    await Deno.remove(bad.path);
    createDatabase(bad.path);
    await waitFor("retry opens the repaired database", () => store.paths.includes(bad.path), 5000);
    await runWriter("--db", bad.path, "--rate", "0", "--count", "5");
    await store.close();
    const restored = join(dir, "restored.db");
    await restoreTo(join(dir, "replica", "bad.db"), restored);
    assert.deepEqual(await digest(restored), await digest(bad.path));
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("store: a database removed while its open fails is not reopened by the retry", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-store-" });
  const store = newStore();
  try {
    const entry = entryFor(dir, "gone.db");
    await Deno.writeTextFile(entry.path, "not a database\n");
    const adding = store.add(entry);
    const removing = store.remove(entry.path);
    assert.equal(await adding, false);
    await removing;
    assert.equal(store.trackedPaths, 0, "a retry of the removed database is still scheduled");
    // A control database whose open fails after gone.db's did: its retry fires after the one
    // gone.db had, so once the control is open, a leftover retry would have reopened gone.db.
    const control = entryFor(dir, "control.db");
    await Deno.writeTextFile(control.path, "not a database\n");
    assert.equal(await store.add(control), false);
    for (const path of [entry.path, control.path]) {
      await Deno.remove(path);
      createDatabase(path);
    }
    await waitFor("the control's retry opens it", () => store.paths.includes(control.path), 5000);
    assert.deepEqual(store.paths, [control.path]);
    assert.equal(store.trackedPaths, 1);
    await assert.rejects(Deno.stat(join(dir, "replica", "gone.db")), Deno.errors.NotFound);
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("replicate: a second sluice replicate of the same database is refused, exit 1", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-store-" });
  const dbPath = join(dir, "app.db");
  const replica = join(dir, "replica");
  createDatabase(dbPath);
  const first = startReplicate(dbPath, `file://${replica}`);
  try {
    await waitFor("first snapshot", async () => (await replicaTXID(replica)) >= 1);
    const second = await sluice("replicate", dbPath, `file://${join(dir, "other")}`);
    assert.equal(second.code, 1);
    assert.match(second.stderr, /\.app\.db-sluice is in use by sluice replicate \(pid \d+\)/);
    // The first one is unharmed: it still replicates and stops cleanly.
    await runWriter("--db", dbPath, "--rate", "0", "--count", "10");
    const stopped = await first.stop();
    assert.equal(stopped.code, 0, stopped.stderr);
    const restored = join(dir, "restored.db");
    await restoreTo(replica, restored);
    assert.deepEqual(await digest(restored), await digest(dbPath));
  } finally {
    await first.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
