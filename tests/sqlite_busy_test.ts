import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { isBusyError, retryBusy } from "../src/sqlite/mod.ts";

/** Two connections to one WAL database; the second never waits inside SQLite. */
async function withTwoConnections(
  fn: (holder: DatabaseSync, waiter: DatabaseSync) => Promise<void>,
) {
  const dir = await Deno.makeTempDir({ prefix: "sluice-busy-" });
  const path = join(dir, "busy.db");
  const holder = new DatabaseSync(path);
  holder.exec("PRAGMA journal_mode = wal; CREATE TABLE t (x INTEGER)");
  const waiter = new DatabaseSync(path, { timeout: 0 });
  waiter.exec("PRAGMA busy_timeout = 0");
  try {
    await fn(holder, waiter);
  } finally {
    if (holder.isTransaction) holder.exec("ROLLBACK");
    waiter.close();
    holder.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("isBusyError: a held write lock makes a write fail busy", async () => {
  await withTwoConnections((holder, waiter) => {
    holder.exec("BEGIN IMMEDIATE; INSERT INTO t VALUES (1)");
    assert.throws(() => waiter.exec("INSERT INTO t VALUES (2)"), (err) => isBusyError(err));
    assert.throws(() => waiter.exec("BEGIN IMMEDIATE"), (err) => isBusyError(err));
    return Promise.resolve();
  });
});

Deno.test("isBusyError: SQLITE_LOCKED (table locked by an active statement)", () => {
  const db = new DatabaseSync(":memory:");
  try {
    db.exec("CREATE TABLE x (a); INSERT INTO x VALUES (1), (2)");
    const rows = db.prepare("SELECT a FROM x").iterate();
    rows.next();
    assert.throws(() => db.exec("DROP TABLE x"), (err) => isBusyError(err));
    rows.return?.();
  } finally {
    db.close();
  }
});

Deno.test("isBusyError: other errors and non-errors are not busy", () => {
  const db = new DatabaseSync(":memory:");
  try {
    assert.throws(() => db.exec("SELEC 1"), (err) => !isBusyError(err));
    assert.throws(() => db.exec("INSERT INTO missing VALUES (1)"), (err) => !isBusyError(err));
  } finally {
    db.close();
  }
  assert.equal(isBusyError(undefined), false);
  assert.equal(isBusyError("database is locked"), false);
  assert.equal(isBusyError(new Error("the database is locked, it said")), false);
  // Node's node:sqlite carries the (extended) result code: SQLITE_BUSY_SNAPSHOT, SQLITE_IOERR.
  assert.equal(isBusyError(Object.assign(new Error("x"), { errcode: 517 })), true);
  assert.equal(isBusyError(Object.assign(new Error("x"), { errcode: 262 })), true);
  assert.equal(isBusyError(Object.assign(new Error("database is locked"), { errcode: 10 })), false);
});

Deno.test("retryBusy: succeeds once the lock is released", async () => {
  await withTwoConnections(async (holder, waiter) => {
    holder.exec("BEGIN IMMEDIATE; INSERT INTO t VALUES (1)");
    setTimeout(() => holder.exec("COMMIT"), 60);
    let calls = 0;
    const started = performance.now();
    const changes = await retryBusy(() => {
      calls++;
      return waiter.prepare("INSERT INTO t VALUES (2)").run().changes;
    }, { timeoutMs: 5000 });
    assert.equal(changes, 1);
    assert.ok(calls > 1, `retried (${calls} calls)`);
    assert.ok(performance.now() - started >= 50);
    const rows = waiter.prepare("SELECT x FROM t ORDER BY x").all().map((r) => r.x);
    assert.deepEqual(rows, [1, 2]);
  });
});

Deno.test("retryBusy: a non-busy error is thrown at once", async () => {
  await withTwoConnections(async (holder, waiter) => {
    holder.exec("BEGIN IMMEDIATE");
    let calls = 0;
    const started = performance.now();
    await assert.rejects(
      retryBusy(() => {
        calls++;
        waiter.exec("INSRT INTO t VALUES (1)");
      }, { timeoutMs: 5000 }),
      (err: Error) => /syntax error/.test(err.message) && !isBusyError(err),
    );
    assert.equal(calls, 1);
    assert.ok(performance.now() - started < 1000);
  });
});

Deno.test("retryBusy: gives up after timeoutMs with the busy error", async () => {
  await withTwoConnections(async (holder, waiter) => {
    holder.exec("BEGIN IMMEDIATE");
    let calls = 0;
    const started = performance.now();
    await assert.rejects(
      retryBusy(() => {
        calls++;
        waiter.exec("INSERT INTO t VALUES (3)");
      }, { timeoutMs: 150, maxDelayMs: 20 }),
      (err) => isBusyError(err),
    );
    const elapsed = performance.now() - started;
    assert.ok(elapsed >= 150 && elapsed < 1500, `gave up after ${elapsed} ms`);
    assert.ok(calls >= 4, `${calls} calls`);
  });
});

Deno.test("retryBusy: stops when the signal aborts", async () => {
  await withTwoConnections(async (holder, waiter) => {
    holder.exec("BEGIN IMMEDIATE");
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error("shutting down")), 50);
    await assert.rejects(
      retryBusy(() => waiter.exec("INSERT INTO t VALUES (4)"), {
        timeoutMs: 10_000,
        signal: controller.signal,
      }),
      /shutting down/,
    );
  });
});

Deno.test("retryBusy: async functions and timeoutMs 0", async () => {
  assert.equal(await retryBusy(() => Promise.resolve(42)), 42);
  let calls = 0;
  await assert.rejects(
    retryBusy(() => {
      calls++;
      throw new Error("database is locked");
    }, { timeoutMs: 0 }),
    /database is locked/,
  );
  assert.equal(calls, 1);
});
