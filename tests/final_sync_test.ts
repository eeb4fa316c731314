/**
 * A final sync that fails leaves the replica behind the database: `replicate` must exit 1
 * (issue 21, item 2), and the replica must still restore to exactly what it holds. The replica
 * fails for real: a file replica made read-only, an S3 server that stops answering.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  createDatabase,
  type Digest,
  digest,
  replicaTXID,
  restoredDigest,
  runWriter,
} from "./_sluice.ts";
import { spawnSluice, until } from "../scripts/chaos_lib.ts";
import { canMount, mountReadOnly, unmount } from "./_mount.ts";
import { FAUXQS_CREDENTIALS, s3Spec, startS3Server } from "./_s3.ts";
import { startFaultProxy } from "./_proxy.ts";
import { S3ReplicaClient } from "../src/replica/mod.ts";

// Subprocesses inherit these: static test credentials, and never the EC2 metadata endpoint.
Deno.env.set("AWS_ACCESS_KEY_ID", FAUXQS_CREDENTIALS.accessKeyId);
Deno.env.set("AWS_SECRET_ACCESS_KEY", FAUXQS_CREDENTIALS.secretAccessKey);
Deno.env.set("AWS_EC2_METADATA_DISABLED", "true");

const MOUNT = await canMount();

/** Waits until the replica restores to the database's current content, and returns it. */
async function caughtUp(dbPath: string, url: string, dir: string): Promise<Digest> {
  const source = await digest(dbPath);
  await until(
    "the replica to restore to the source",
    async () => (await restoredDigest(url, dir))?.sha256 === source.sha256,
    30_000,
  );
  return source;
}

Deno.test({
  name: "final sync: a read-only file replica at shutdown → exit 1, the replica restores as it was",
  ignore: !MOUNT,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "sluice-final-file-" });
    const dbPath = join(dir, "app.db");
    const meta = join(dir, ".app.db-sluice");
    const replica = join(dir, "replica");
    const url = `file://${replica}`;
    createDatabase(dbPath);
    const replicate = spawnSluice(["replicate", dbPath, url]);
    let readOnly = false;
    try {
      await runWriter("--db", dbPath, "--count", "20");
      const shipped = await caughtUp(dbPath, url, dir);

      await mountReadOnly(replica);
      readOnly = true;
      await runWriter("--db", dbPath, "--count", "20");
      await until(
        "the new transactions synced locally but not shipped",
        async () => (await replicaTXID(meta)) > (await replicaTXID(replica)),
        20_000,
      );
      const stopped = await replicate.stop("SIGTERM");
      assert.equal(stopped.code, 1, `replicate exited ${stopped.code}:\n${stopped.stderr}`);

      await unmount(replica);
      readOnly = false;
      const restored = await restoredDigest(url, dir);
      assert.ok(restored, "the replica still restores");
      assert.equal(restored.integrity, "ok");
      assert.equal(restored.sha256, shipped.sha256, "the replica holds what was shipped");
      assert.notEqual(restored.sha256, (await digest(dbPath)).sha256, "and not the rest");
    } finally {
      await replicate.stop("SIGKILL");
      if (readOnly) await unmount(replica).catch(() => {});
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("final sync: S3 down at shutdown → exit 1, the replica restores as it was", async () => {
  const server = await startS3Server({ buckets: ["final-sync"] });
  const proxy = startFaultProxy(server.endpoint);
  const dir = await Deno.makeTempDir({ prefix: "sluice-final-s3-" });
  const dbPath = join(dir, "app.db");
  const meta = join(dir, ".app.db-sluice");
  const query = "region=us-east-1&force-path-style=true&endpoint=";
  const viaProxy = `s3://final-sync/app?${query}${encodeURIComponent(proxy.url)}`;
  const direct = `s3://final-sync/app?${query}${encodeURIComponent(server.endpoint)}`;
  createDatabase(dbPath);
  const replicate = spawnSluice(["replicate", dbPath, viaProxy]);
  const client = new S3ReplicaClient(s3Spec(server, "final-sync", "app"));
  const replicaTXIDs = async () => {
    let max = 0;
    for await (const file of client.ltxFiles(0)) max = Math.max(max, file.maxTXID);
    return max;
  };
  try {
    await runWriter("--db", dbPath, "--count", "20");
    const shipped = await caughtUp(dbPath, direct, dir);

    proxy.setFaults({ down: true });
    proxy.dropAll();
    await runWriter("--db", dbPath, "--count", "20");
    await until(
      "the new transactions synced locally but not shipped",
      async () => (await replicaTXID(meta)) > (await replicaTXIDs()),
      20_000,
    );
    const stopped = await replicate.stop("SIGTERM");
    assert.equal(stopped.code, 1, `replicate exited ${stopped.code}:\n${stopped.stderr}`);

    const restored = await restoredDigest(direct, dir);
    assert.ok(restored, "the replica still restores");
    assert.equal(restored.integrity, "ok");
    assert.equal(restored.sha256, shipped.sha256, "the replica holds what was shipped");
    assert.notEqual(restored.sha256, (await digest(dbPath)).sha256, "and not the rest");
  } finally {
    await replicate.stop("SIGKILL");
    await client.close();
    await proxy.close();
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
