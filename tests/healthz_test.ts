/**
 * `GET /healthz` of a real `sluice replicate` while a writer in another process commits: 200,
 * then 503 naming the database once its replica cannot be written past `health.max-lag`, then
 * 200 again when the replica is back. Tests run as root, which ignores directory modes, so the
 * replica is made unwritable by putting a plain file where its directory was.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ConfigError, parseConfig } from "../src/config/mod.ts";
import { checkHealth } from "../src/daemon/mod.ts";
import type { DatabaseStatus } from "../src/engine/mod.ts";
import { createDatabase, digest, freePort, ROOT, startReplicate, waitFor } from "./_sluice.ts";

interface Health {
  code: number;
  body: {
    status: string;
    databases: number;
    unhealthy: number;
    failing: { path: string; reason: string }[];
  };
}

async function healthz(port: number): Promise<Health | undefined> {
  try {
    const response = await fetch(`http://127.0.0.1:${port}/healthz`);
    return { code: response.status, body: await response.json() };
  } catch {
    return undefined; // not listening yet
  }
}

Deno.test("healthz: 200, 503 naming the database while its replica fails, 200 again", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-healthz-" });
  const db = join(dir, "app.db");
  // The replica path is a symbolic link, swapped atomically (rename over it) to break the replica
  // and to mend it: removing and renaming a directory back raced sluice's own retry, which could
  // recreate `replica/ltx/0` in between (ENOTEMPTY in a CI run).
  const replica = join(dir, "replica");
  const realReplica = join(dir, "replica.real");
  const blocker = join(dir, "not-a-directory");
  const swap = async (target: string) => {
    const link = join(dir, "replica.next");
    await Deno.symlink(target, link);
    await Deno.rename(link, replica);
  };
  await Deno.mkdir(realReplica);
  await Deno.writeTextFile(blocker, "not a directory\n");
  await Deno.symlink(realReplica, replica);
  const port = freePort();
  const config = join(dir, "sluice.yml");
  await Deno.writeTextFile(
    config,
    `addr: 127.0.0.1:${port}\nhealth:\n  max-lag: 1s\n  max-upload-age: 1s\n` +
      `dbs:\n  - path: ${db}\n    replica:\n      url: file://${replica}\n`,
  );
  createDatabase(db);
  const writer = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "scripts", "writer.ts"), "--db", db, "--rate", "20"],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const replicator = startReplicate("-c", config);
  let last: Health | undefined;
  const expect = (code: number, check: (h: Health) => boolean = () => true) => async () => {
    last = await healthz(port);
    return last !== undefined && last.code === code && check(last);
  };
  try {
    // The endpoint answers before the database is open (0 databases, 200): wait for it.
    await waitFor("/healthz 200", expect(200, (h) => h.body.databases === 1), 15_000);
    assert.deepEqual(last!.body, { status: "ok", databases: 1, unhealthy: 0, failing: [] });

    await swap(blocker);
    await waitFor(
      "/healthz 503 naming the database",
      expect(503, (h) => h.body.failing.some((f) => f.path === db)),
      15_000,
    );
    assert.equal(last!.body.status, "unhealthy");
    assert.equal(last!.body.unhealthy, 1);

    await swap(realReplica);
    await waitFor("/healthz 200 after recovery", expect(200), 20_000);
  } catch (err) {
    const stopped = await replicator.stop();
    throw new Error(`${(err as Error).message}; last ${JSON.stringify(last)}\n${stopped.stderr}`);
  } finally {
    try {
      writer.kill("SIGTERM");
    } catch { /* exited */ }
    await writer.status;
    await replicator.stop();
  }
  // The replica is still whole after the outage.
  const restored = join(dir, "restored.db");
  const restore = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "main.ts"), "restore", "-o", restored, `file://${replica}`],
  }).output();
  assert.ok(restore.success, new TextDecoder().decode(restore.stderr));
  assert.equal((await digest(restored)).integrity, "ok");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("healthz: unit rules (lag, pending uploads, parked, failing, unopened, the cap)", () => {
  const now = Date.parse("2026-12-04T12:00:00Z");
  const row = (over: Partial<DatabaseStatus>): DatabaseStatus => ({
    path: "/db",
    replica: "file:///r",
    localTXID: "0000000000000005",
    replicaTXID: "0000000000000005",
    lagSeconds: 0,
    walBytes: 0,
    lastSyncAt: null,
    lastError: null,
    lastErrorAt: null,
    stalledSeconds: 0,
    stats: { uploads: 1, uploadErrors: 0, bytesUploaded: 1 } as DatabaseStatus["stats"],
    compaction: null,
    ...over,
  });
  const limits = { maxLag: 60_000, maxUploadAge: 300_000 };
  assert.equal(checkHealth([row({})], [], limits, now).status, "ok");
  assert.match(
    checkHealth([row({ lagSeconds: 61 })], [], limits, now).failing[0].reason,
    /^lag 61s > 60s/,
  );
  const stale = row({
    localTXID: "0000000000000006",
    lagSeconds: 10,
    stats: { lastUploadAt: new Date(now - 301_000) } as unknown as DatabaseStatus["stats"],
  });
  assert.match(checkHealth([stale], [], limits, now).failing[0].reason, /last upload 301s ago/);
  assert.equal(checkHealth([row({ state: "parked" })], [], limits, now).status, "ok");
  assert.match(
    checkHealth([row({ state: "failing", lastError: "EIO" })], [], limits, now).failing[0].reason,
    /failing: EIO/,
  );
  const many = Array.from({ length: 100_000 }, (_, i) => row({ path: `/t/${i}`, lagSeconds: 99 }));
  const report = checkHealth(many, [{ path: "/x", reason: "EMFILE" }], limits, now);
  assert.equal(report.unhealthy, 100_001);
  assert.equal(report.databases, 100_001);
  assert.equal(report.failing.length, 20);
});

Deno.test("healthz: config health: keys, defaults and errors with file:line", () => {
  const min = "dbs:\n  - path: /data/app.db\n    replica: { path: /backups/app }\n";
  const parse = (text: string) => parseConfig(text, { file: "sluice.yml", baseDir: "/srv" });
  assert.equal(parse(min).health, undefined); // the daemon uses DEFAULTS
  assert.deepEqual(parse(`health:\n  max-lag: 10s\n${min}`).health, {
    maxLag: 10_000,
    maxUploadAge: 300_000,
  });
  assert.deepEqual(parse(`health: { max-lag: 1s, max-upload-age: 1m30s }\n${min}`).health, {
    maxLag: 1000,
    maxUploadAge: 90_000,
  });
  const errorOf = (text: string) => {
    try {
      parse(text);
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      return err.message;
    }
    assert.fail("expected a ConfigError");
  };
  assert.match(errorOf(`health:\n  max-lag: 10\n${min}`), /^sluice\.yml:2: .*max-lag.*unit/);
  assert.match(errorOf(`health:\n  max-lag: 0s\n${min}`), /^sluice\.yml:2: .*greater than 0/);
  assert.match(errorOf(`health:\n  max-lagg: 1s\n${min}`), /^sluice\.yml:2: .*max-lag/);
  assert.match(errorOf(`max-lag: 1s\n${min}`), /^sluice\.yml:1: .*health/);
});
