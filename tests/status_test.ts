/**
 * `sluice databases --json` and `sluice status --json` against a config with a `path` database,
 * a `path` database that does not exist yet and a `dir` entry with two tenants: the listings
 * match what was configured, without a daemon (figures from disk) and with one (figures from
 * its `/status` on `addr:`), and the TXIDs they report are the ones on disk.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  createDatabase,
  freePort,
  replicaTXID,
  runWriter,
  sluice,
  startReplicate,
  waitFor,
} from "./_sluice.ts";

interface StatusRow {
  path: string;
  replica: string;
  source: string;
  replicating: boolean;
  exists: boolean;
  localTXID: string | null;
  replicaTXID: string | null;
  lagSeconds: number | null;
  walBytes: number | null;
  lastError: string | null;
}

interface StatusReport {
  source: string;
  daemon: { pid: number; addr: string } | null;
  databases: StatusRow[];
  errors: string[];
}

interface Listing {
  databases: Array<
    { path: string; replica: string; metaDir: string; exists: boolean; entry: number }
  >;
  dirs: Array<{ dir: string; pattern: string; count: number; entry: number }>;
}

/** The fixture: the config file, its databases, and what each one's replica must be. */
async function setUp(dir: string, addr?: string) {
  const main = join(dir, "main.db");
  const missing = join(dir, "missing.db");
  const tenants = join(dir, "tenants");
  await Deno.mkdir(tenants);
  const t1 = join(tenants, "t1.db");
  const t2 = join(tenants, "t2.db");
  for (const path of [main, t1, t2]) createDatabase(path);
  const replicas = join(dir, "replicas");
  const config = join(dir, "sluice.yml");
  await Deno.writeTextFile(
    config,
    [
      ...(addr === undefined ? [] : [`addr: ${addr}`]),
      "logging: { level: error }",
      "dbs:",
      `  - path: ${main}`,
      `    replica: { url: file://${replicas}/main }`,
      `  - path: ${missing}`,
      `    replica: { url: file://${replicas}/missing }`,
      `  - dir: ${tenants}`,
      '    pattern: "*.db"',
      `    replica: { url: file://${replicas}/tenants }`,
      "",
    ].join("\n"),
  );
  const expected = new Map([
    [main, { replica: join(replicas, "main"), metaDir: join(dir, ".main.db-sluice"), entry: 0 }],
    [missing, {
      replica: join(replicas, "missing"),
      metaDir: join(dir, ".missing.db-sluice"),
      entry: 1,
    }],
    [t1, {
      replica: join(replicas, "tenants", "t1.db"),
      metaDir: join(tenants, ".t1.db-sluice"),
      entry: 2,
    }],
    [t2, {
      replica: join(replicas, "tenants", "t2.db"),
      metaDir: join(tenants, ".t2.db-sluice"),
      entry: 2,
    }],
  ]);
  return { config, main, missing, tenants, t1, t2, expected };
}

async function json<T>(...args: string[]): Promise<{ code: number; value: T; stderr: string }> {
  const result = await sluice(...args);
  let value: T;
  try {
    value = JSON.parse(result.stdout) as T;
  } catch {
    throw new Error(`sluice ${args.join(" ")} printed no JSON (${result.code}): ${result.stderr}`);
  }
  return { code: result.code, value, stderr: result.stderr };
}

async function checkDatabases(
  config: string,
  expected: Map<string, { replica: string; metaDir: string; entry: number }>,
  missing: string,
  tenants: string,
): Promise<void> {
  const { code, value, stderr } = await json<Listing>("databases", "-c", config, "--json");
  assert.equal(code, 0, stderr);
  assert.deepEqual(value.databases.map((db) => db.path).sort(), [...expected.keys()].sort());
  for (const db of value.databases) {
    const want = expected.get(db.path)!;
    assert.equal(db.replica, `file://${want.replica}`, `replica of ${db.path}`);
    assert.equal(db.metaDir, want.metaDir, `meta dir of ${db.path}`);
    assert.equal(db.entry, want.entry, `entry of ${db.path}`);
    assert.equal(db.exists, db.path !== missing, `exists of ${db.path}`);
  }
  assert.deepEqual(
    value.dirs.map(({ dir, pattern, count, entry }) => ({ dir, pattern, count, entry })),
    [
      { dir: tenants, pattern: "*.db", count: 2, entry: 2 },
    ],
  );
}

const hex = (txid: number) => txid.toString(16).padStart(16, "0");

Deno.test("status: without a daemon, databases and status come from the config and the disk", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-status-" });
  try {
    const { config, main, missing, tenants, t1, expected } = await setUp(dir);
    await checkDatabases(config, expected, missing, tenants);

    // Nothing replicated yet: no TXIDs anywhere, nothing to be behind on.
    let report = await json<StatusReport>("status", "-c", config, "--json");
    assert.equal(report.code, 0, report.stderr);
    assert.equal(report.value.source, "disk");
    assert.equal(report.value.daemon, null);
    assert.deepEqual(report.value.databases.map((db) => db.path), [...expected.keys()].sort());
    for (const db of report.value.databases) {
      assert.equal(db.replica, `file://${expected.get(db.path)!.replica}`);
      assert.equal(db.localTXID, null, db.path);
      assert.equal(db.replicaTXID, null, db.path);
      assert.equal(db.replicating, false);
      assert.equal(db.exists, db.path !== missing);
    }

    // A replicate run that ended: local and replica TXIDs agree with the files on disk.
    const replicate = startReplicate("-c", config);
    await waitFor(
      "main and t1 replicated",
      async () =>
        (await replicaTXID(expected.get(main)!.replica)) >= 1 &&
        (await replicaTXID(expected.get(t1)!.replica)) >= 1,
      15_000,
    );
    await runWriter("--db", main, "--rate", "0", "--count", "10");
    const stopped = await replicate.stop();
    assert.equal(stopped.code, 0, stopped.stderr);

    report = await json<StatusReport>("status", "-c", config, "--json");
    assert.equal(report.code, 0, report.stderr);
    for (const db of report.value.databases) {
      if (db.path === missing) {
        assert.equal(db.localTXID, null);
        continue;
      }
      const onReplica = await replicaTXID(expected.get(db.path)!.replica);
      assert.ok(onReplica >= 1, db.path);
      assert.equal(db.replicaTXID, hex(onReplica), `replica TXID of ${db.path}`);
      assert.equal(db.localTXID, db.replicaTXID, `caught up: ${db.path}`);
      assert.equal(db.lagSeconds, 0);
      assert.equal(db.source, "disk");
    }
    const text = await sluice("status", "-c", config);
    assert.equal(text.code, 0, text.stderr);
    assert.ok(text.stdout.includes(main));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("status: with a running daemon on addr:, status comes from its /status", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-status-daemon-" });
  const addr = `127.0.0.1:${freePort()}`;
  const { config, main, missing, tenants, t1, t2, expected } = await setUp(dir, addr);
  const replicate = startReplicate("-c", config);
  try {
    await checkDatabases(config, expected, missing, tenants);
    let report: StatusReport | undefined;
    await waitFor("the daemon replicates main, t1 and t2", async () => {
      const result = await json<StatusReport>("status", "-c", config, "--json");
      report = result.value;
      return report.source === "daemon" &&
        [main, t1, t2].every((path) =>
          report!.databases.some((db) =>
            db.path === path && db.replicating && db.localTXID !== null &&
            db.localTXID === db.replicaTXID
          )
        );
    }, 15_000);
    assert.equal(report!.daemon!.pid, replicate.process.pid);
    assert.equal(report!.daemon!.addr, addr);
    assert.deepEqual(report!.databases.map((db) => db.path), [...expected.keys()].sort());
    for (const db of report!.databases) {
      assert.equal(db.replica, `file://${expected.get(db.path)!.replica}`, db.path);
      if (db.path === missing) {
        // Configured but not there: listed, from disk, not replicating.
        assert.equal(db.replicating, false);
        assert.equal(db.exists, false);
        assert.equal(db.source, "disk");
        continue;
      }
      assert.equal(db.source, "daemon");
      assert.equal(db.lagSeconds, 0);
      assert.equal(db.lastError, null);
      assert.ok((db.walBytes ?? 0) > 0, `WAL size of ${db.path}`);
      assert.equal(db.replicaTXID, hex(await replicaTXID(expected.get(db.path)!.replica)));
    }
    const stopped = await replicate.stop();
    assert.equal(stopped.code, 0, stopped.stderr);

    // The daemon is gone: nothing answers on addr:, so the figures come from disk.
    const after = await json<StatusReport & { note: string }>("status", "-c", config, "--json");
    assert.equal(after.code, 0, after.stderr);
    assert.equal(after.value.source, "disk");
    assert.match(after.value.note, new RegExp(`no sluice replicate answers on ${addr}`));
    assert.deepEqual(after.value.databases.map((db) => db.path), [...expected.keys()].sort());
    for (const db of after.value.databases) {
      if (db.path !== missing) assert.equal(db.localTXID, db.replicaTXID, db.path);
    }
  } finally {
    await replicate.stop("SIGKILL");
    await Deno.remove(dir, { recursive: true });
  }
});
