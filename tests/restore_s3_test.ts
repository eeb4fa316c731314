/**
 * Restore from an S3 replica (a real local S3 server): latest, by TXID, and by timestamp,
 * where createdAt comes from the `litestream-timestamp` metadata rather than upload time.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { S3ReplicaClient } from "../src/replica/mod.ts";
import { restore } from "../src/restore/mod.ts";
import { s3Spec, startS3Server } from "./_s3.ts";
import {
  changedPages,
  fixture,
  planNames,
  snapshotPages,
  withTempDir,
  writeLTX,
} from "./_restore_helpers.ts";

Deno.test("s3: restore latest, --txid and --timestamp (metadata time) from an S3 replica", async () => {
  const server = await startS3Server();
  const client = new S3ReplicaClient(s3Spec(server, "restore-test", "tenants/a.db"));
  try {
    await server.createBucket("restore-test");
    const v1 = await Deno.readFile(fixture("sqlite/v1.db"));
    const v2 = await Deno.readFile(fixture("sqlite/v2.db"));
    const v3 = await Deno.readFile(fixture("sqlite/v3.db"));
    // Header times far in the past: a restore that used upload time would see all files as new.
    const t1 = Date.parse("2025-03-01T10:00:00.100Z");
    const t2 = Date.parse("2025-03-01T10:00:01.200Z");
    const t3 = Date.parse("2025-03-01T10:00:02.300Z");
    await writeLTX(client, 0, {
      minTXID: 1,
      maxTXID: 1,
      pageSize: 4096,
      commit: v1.byteLength / 4096,
      timestamp: t1,
    }, snapshotPages(v1, 4096));
    await writeLTX(client, 0, {
      minTXID: 2,
      maxTXID: 2,
      pageSize: 4096,
      commit: v2.byteLength / 4096,
      timestamp: t2,
    }, changedPages(v1, v2, 4096));
    await writeLTX(client, 0, {
      minTXID: 3,
      maxTXID: 3,
      pageSize: 4096,
      commit: v3.byteLength / 4096,
      timestamp: t3,
    }, changedPages(v2, v3, 4096));
    await writeLTX(
      client,
      9,
      { minTXID: 1, maxTXID: 2, pageSize: 4096, commit: v2.byteLength / 4096, timestamp: t2 },
      snapshotPages(v2, 4096),
      { encoding: "block" },
    );

    await withTempDir(async (dir) => {
      const latest = await restore(client, {
        outputPath: join(dir, "latest.db"),
        integrityCheck: "quick",
      });
      assert.deepEqual(planNames(latest.files), ["L9:1-2", "L0:3-3"]);
      assert.deepEqual(await Deno.readFile(join(dir, "latest.db")), v3);

      await restore(client, { outputPath: join(dir, "txid1.db"), txid: 1 });
      assert.deepEqual(await Deno.readFile(join(dir, "txid1.db")), v1);

      const byTime = await restore(client, {
        outputPath: join(dir, "time.db"),
        timestamp: new Date(t3),
      });
      assert.deepEqual(planNames(byTime.files), ["L9:1-2"]);
      assert.deepEqual(await Deno.readFile(join(dir, "time.db")), v2);
      assert.equal(byTime.files[0].createdAt.getTime(), t2);
    });
  } finally {
    await client.close();
    await server.stop();
  }
});
