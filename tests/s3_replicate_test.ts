/**
 * Replication through a real S3 server process (fauxqs on 127.0.0.1): replicate → restore,
 * the server down for 20 s while the application writes, a restore whose connection is cut
 * mid-file, and zero requests from an idle database.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { createDatabase, digest, runWriter, sluice, startReplicate, waitFor } from "./_sluice.ts";
import { FAUXQS_CREDENTIALS, s3Spec, startS3Server } from "./_s3.ts";
import { startFaultProxy } from "./_proxy.ts";
import { S3ReplicaClient } from "../src/replica/mod.ts";
import { Store } from "../src/engine/mod.ts";
import { compactorFactory } from "../src/compaction/mod.ts";
import { createLogger } from "../src/log/mod.ts";

// Subprocesses inherit these: static test credentials, and never the EC2 metadata endpoint.
Deno.env.set("AWS_ACCESS_KEY_ID", FAUXQS_CREDENTIALS.accessKeyId);
Deno.env.set("AWS_SECRET_ACCESS_KEY", FAUXQS_CREDENTIALS.secretAccessKey);
Deno.env.set("AWS_EC2_METADATA_DISABLED", "true");

function s3URL(endpoint: string, bucket: string, path: string): string {
  return `s3://${bucket}/${path}?endpoint=${encodeURIComponent(endpoint)}&region=us-east-1` +
    `&force-path-style=true`;
}

async function replicaMaxTXID(endpoint: string, bucket: string, path: string): Promise<number> {
  const client = new S3ReplicaClient(s3Spec({ endpoint }, bucket, path, { maxAttempts: 1 }));
  try {
    let max = 0;
    for await (const f of client.ltxFiles(0)) max = Math.max(max, f.maxTXID);
    return max;
  } catch {
    return -1;
  } finally {
    await client.close();
  }
}

Deno.test("s3: replicate → restore equals the source; ltx lists the files; a cut restore completes", async () => {
  const server = await startS3Server({ buckets: ["sluice-e2e"] });
  const dir = await Deno.makeTempDir({ prefix: "sluice-s3-" });
  try {
    const dbPath = join(dir, "app.db");
    createDatabase(dbPath);
    const url = s3URL(server.endpoint, "sluice-e2e", "app");
    const replicate = startReplicate(dbPath, url);
    await waitFor(
      "first snapshot",
      async () => (await replicaMaxTXID(server.endpoint, "sluice-e2e", "app")) >= 1,
      20_000,
    );
    await runWriter(
      "--db",
      dbPath,
      "--rate",
      "200",
      "--count",
      "200",
      "--big-every",
      "100",
      "--big-pages",
      "1100",
    );
    const stopped = await replicate.stop();
    assert.equal(stopped.code, 0, stopped.stderr);

    const listing = await sluice("ltx", "--json", url);
    assert.equal(listing.code, 0, listing.stderr);
    const files = JSON.parse(listing.stdout) as Array<{ level: number; maxTXID: string }>;
    assert.ok(files.length >= 2, "ltx lists the uploaded files");
    assert.ok(files.every((f) => /^[0-9a-f]{16}$/.test(f.maxTXID)));

    const restored = join(dir, "restored.db");
    const result = await sluice("restore", "-o", restored, url);
    assert.equal(result.code, 0, result.stderr);
    const source = await digest(dbPath);
    assert.equal((await digest(restored)).sha256, source.sha256);

    // The same restore through a proxy that cuts the first responses mid-body.
    const proxy = startFaultProxy(server.endpoint);
    try {
      proxy.cutResponses([200_000, 50_000, 1_000_000], 3);
      const cut = join(dir, "restored-cut.db");
      const res = await sluice("restore", "-o", cut, s3URL(proxy.url, "sluice-e2e", "app"));
      assert.equal(res.code, 0, res.stderr);
      assert.ok(proxy.cuts >= 1, "the proxy did cut a download");
      assert.equal((await digest(cut)).sha256, source.sha256);
    } finally {
      await proxy.close();
    }
  } finally {
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("s3: server down for 20 s while the application writes; replication catches up", async () => {
  const server = await startS3Server({ buckets: ["sluice-outage"] });
  const dir = await Deno.makeTempDir({ prefix: "sluice-s3-outage-" });
  try {
    const dbPath = join(dir, "app.db");
    createDatabase(dbPath);
    const url = s3URL(server.endpoint, "sluice-outage", "app");
    const replicate = startReplicate(dbPath, url);
    await waitFor(
      "first snapshot",
      async () => (await replicaMaxTXID(server.endpoint, "sluice-outage", "app")) >= 1,
      20_000,
    );
    await runWriter("--db", dbPath, "--rate", "100", "--count", "50");
    await server.kill();
    const outageEnds = Date.now() + 20_000;
    await runWriter("--db", dbPath, "--rate", "20", "--duration", "18");
    await new Promise((r) => setTimeout(r, Math.max(0, outageEnds - Date.now())));
    await server.restart();
    await runWriter("--db", dbPath, "--rate", "100", "--count", "50");
    const expected = await digest(dbPath);
    // Retries back off to at most 10 s; catching up must not need a restart.
    const restored = join(dir, "restored.db");
    await waitFor("replica caught up", async () => {
      // digest() opened the previous attempt's output, leaving its -wal and -shm beside it.
      for (const suffix of ["", "-wal", "-shm"]) {
        await Deno.remove(restored + suffix).catch(() => {});
      }
      const res = await sluice("restore", "-o", restored, "--integrity-check", "none", url);
      return res.code === 0 && (await digest(restored)).sha256 === expected.sha256;
    }, 45_000).catch(async (err) => {
      const { stderr } = await replicate.stop();
      throw new Error(`${(err as Error).message}; sluice said:\n${stderr.slice(-4000)}`);
    });
    const stopped = await replicate.stop();
    assert.equal(stopped.code, 0, stopped.stderr);
  } finally {
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("s3: an idle replicated database makes zero requests, compaction included", async () => {
  const server = await startS3Server({ buckets: ["sluice-idle"] });
  const dir = await Deno.makeTempDir({ prefix: "sluice-s3-idle-" });
  const client = new S3ReplicaClient(s3Spec(server, "sluice-idle", "app"));
  const store = new Store({ logger: createLogger({ level: "error", type: "text" }) });
  try {
    const dbPath = join(dir, "app.db");
    createDatabase(dbPath);
    await store.add({
      path: dbPath,
      metaDir: join(dir, ".app.db-sluice"),
      createClient: () => client,
      syncInterval: 100,
      monitorInterval: 100,
      // Compaction, snapshots and retention on short clocks: they too must go quiet.
      createCompactor: compactorFactory({
        levels: [1000, 2000],
        snapshotInterval: 2000,
        snapshotRetention: 1000,
        l0Retention: 500,
        retentionEnabled: true,
      }),
    });
    await runWriter("--db", dbPath, "--rate", "0", "--count", "20");
    await waitFor("upload of the writes", () =>
      store.status()[0]?.lagSeconds === 0 &&
      store.status()[0]?.replicaTXID === store.status()[0]?.localTXID);
    // Let compaction, L0 retention and snapshot retention finish with what was written: the
    // replica (listed through a second client, not counted) reaches its final shape, and then
    // sluice's client makes no request for a whole snapshot period and more.
    const lister = new S3ReplicaClient(s3Spec(server, "sluice-idle", "app"));
    let lastCount = -1;
    let quietSince = 0;
    try {
      await waitFor("compaction, snapshot and retention done", async () => {
        const local = parseInt(store.status()[0]?.localTXID ?? "0", 16);
        const files: Record<number, number[]> = {};
        for (const level of [0, 1, 2, 9]) {
          files[level] = [];
          for await (const f of lister.ltxFiles(level)) files[level].push(f.maxTXID);
        }
        const done = files[0].length === 1 && files[9].length === 1 &&
          [files[0], files[2], files[9]].every((txids) => Math.max(...txids) === local);
        if (client.requestCount !== lastCount) {
          lastCount = client.requestCount;
          quietSince = Date.now();
        }
        return done && Date.now() - quietSince >= 2500;
      }, 30_000);
    } finally {
      await lister.close();
    }
    const before = client.requestCount;
    // 40 polls, 4 level-1 ticks, 2 snapshot ticks of an idle database.
    await new Promise((r) => setTimeout(r, 4000));
    assert.equal(client.requestCount - before, 0, "requests made while idle");
  } finally {
    await store.close();
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
