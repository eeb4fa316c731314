/**
 * The Azure Blob Storage replica client against Azurite (a real blob service in its own
 * process): the conformance table, Litestream's layout and metadata, the config keys and URL,
 * and replicate → restore through a real `sluice replicate` process.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { BlobServiceClient, StorageSharedKeyCredential } from "@azure/storage-blob";
import { ABSReplicaClient, type ReplicaClient, ReplicaError } from "../src/replica/mod.ts";
import { parseConfig, parseReplicaURL } from "../src/config/mod.ts";
import { absSpec, type Azurite, AZURITE_ACCOUNT, startAzurite } from "./_azurite.ts";
import { type Backend, id, list, pattern, readAll, runBehaviours } from "./_conformance.ts";
import { startFaultProxy } from "./_proxy.ts";
import { createDatabase, digest, runWriter, sluice, startReplicate, waitFor } from "./_sluice.ts";

// Subprocesses inherit the key (Litestream's variable); the URL names the account.
Deno.env.set("LITESTREAM_AZURE_ACCOUNT_KEY", AZURITE_ACCOUNT.accountKey);

/** A "random" source that fails every other connection, for reproducible fault runs. */
function alternate(): () => number {
  let n = 0;
  return () => (n++ % 2 === 0 ? 0 : 0.99);
}

function absBackend(azurite: Azurite, container: string): Backend {
  let counter = 0;
  const raw = new BlobServiceClient(
    azurite.endpoint,
    new StorageSharedKeyCredential(AZURITE_ACCOUNT.accountName, AZURITE_ACCOUNT.accountKey),
  ).getContainerClient(container);
  const abs = (client: ReplicaClient) => client as ABSReplicaClient;
  const namesUnder = async (prefix: string): Promise<string[]> => {
    const names: string[] = [];
    for await (const item of raw.listBlobsFlat({ prefix })) {
      names.push(item.name.slice(prefix.length));
    }
    return names.sort();
  };
  const put = (name: string, bytes: Uint8Array) =>
    raw.getBlockBlobClient(name).upload(bytes, bytes.length);
  return {
    kind: "abs",
    newClient: () => new ABSReplicaClient(absSpec(azurite, container, `t${++counter}/db`)),
    async plant(client, level, name, bytes) {
      await put(abs(client).levelPrefix(level) + name, bytes);
    },
    rawNames: (client, level) => namesUnder(abs(client).levelPrefix(level)),
    async plantOutside(client, name) {
      await put(`${abs(client).path}/${name}`, new TextEncoder().encode("keep"));
    },
    async outsideExists(client, name) {
      return (await namesUnder(`${abs(client).path}/`)).includes(name);
    },
    async rawTimestamp(client, file) {
      const props = await raw.getBlobClient(abs(client).blobName(file)).getProperties();
      return props.metadata?.litestreamtimestamp;
    },
    // Azure keeps staged blocks of a failed write invisible (and discards them after a week).
    pendingUploads: () => Promise.resolve(0),
  };
}

Deno.test("replica client behaviours: abs (Azurite)", async (t) => {
  const azurite = await startAzurite();
  try {
    await azurite.createContainer("sluice");
    await runBehaviours(t, absBackend(azurite, "sluice"));

    await t.step("stores Litestream's layout and metadata name", async () => {
      const client = new ABSReplicaClient(absSpec(azurite, "sluice", "/x//y/./z/"));
      assert.equal(client.location, "abs://devstoreaccount1@sluice/x/y/z");
      await client.writeLTXFile(id(9, 1, 0x3e8), pattern(4), Date.UTC(2026, 0, 1, 0, 0, 0, 120));
      await client.writeLTXFile(id(0, 2), pattern(4), 0);
      const raw = new BlobServiceClient(
        azurite.endpoint,
        new StorageSharedKeyCredential(AZURITE_ACCOUNT.accountName, AZURITE_ACCOUNT.accountKey),
      ).getContainerClient("sluice");
      const names: string[] = [];
      for await (const item of raw.listBlobsFlat({ prefix: "x/", includeMetadata: true })) {
        names.push(`${item.name} ${item.metadata?.litestreamtimestamp}`);
      }
      assert.deepEqual(names, [
        "x/y/z/0000/0000000000000002-0000000000000002.ltx 1970-01-01T00:00:00Z",
        "x/y/z/0009/0000000000000001-00000000000003e8.ltx 2026-01-01T00:00:00.12Z",
      ]);
      await client.deleteAll();
    });

    await t.step(
      "a missing container and a wrong key are clear errors without secrets",
      async () => {
        const missing = new ABSReplicaClient(absSpec(azurite, "no-such-container", "db"));
        const error = await list(missing, 0).then(() => undefined, (err) => err);
        assert.ok(error instanceof ReplicaError, String(error));
        assert.equal(
          error.message,
          `container "no-such-container" does not exist at ${azurite.endpoint}: create it first`,
        );
        const wrongKey = btoa("not the right key at all, but valid base64!");
        const denied = new ABSReplicaClient(
          absSpec(azurite, "sluice", "db", { accountKey: wrongKey, maxAttempts: 1 }),
        );
        const refused = await denied.writeLTXFile(id(0, 1), pattern(10), 0).then(
          () => undefined,
          (err) => err,
        );
        assert.ok(refused instanceof ReplicaError, String(refused));
        assert.match(refused.message, /HTTP 403.*account-key/);
        assert.ok(!`${refused.message}`.includes(wrongKey));
      },
    );

    await t.step("a cut download resumes; 503 and 408 answers are retried", async () => {
      const writer = new ABSReplicaClient(absSpec(azurite, "sluice", "cut"));
      const data = pattern(300_000, 21);
      await writer.writeLTXFile(id(0, 7), data, 0);
      const proxy = startFaultProxy(new URL(azurite.endpoint).origin);
      const endpoint = `${proxy.url}${new URL(azurite.endpoint).pathname}`;
      const client = new ABSReplicaClient(
        absSpec({ endpoint }, "sluice", "cut", { readRetryDelayMs: 5 }),
      );
      try {
        proxy.cutResponses([20_000, 50_000]);
        assert.deepEqual(await readAll(await client.openLTXFile(id(0, 7))), data);
        assert.equal(proxy.cuts, 2);
        proxy.cutResponses(9_000, 1);
        assert.deepEqual(
          await readAll(await client.openLTXFile(id(0, 7), { offset: 1000, length: 150_000 })),
          data.slice(1000, 151_000),
        );
        proxy.reset();
        const answers = [
          { status: 503, reason: "Server Busy", code: "ServerBusy" },
          { status: 408, reason: "Request Timeout", code: "OperationTimedOut" },
        ];
        for (const failWith of answers) {
          proxy.setFaults({ failRate: 0.5, failWith, random: alternate() });
          proxy.dropAll(); // kept-alive connections would bypass the faults
          const before = proxy.injected.failed;
          await client.writeLTXFile(id(0, 8), data, 0);
          assert.deepEqual((await list(client, 0)).map((f) => f.maxTXID), [7, 8]);
          assert.ok(proxy.injected.failed > before, `no ${failWith.status} was injected`);
          proxy.setFaults({});
        }
      } finally {
        proxy.reset();
        await proxy.close();
      }
    });

    await t.step("replicate → restore through sluice equals the source", () => endToEnd(azurite));

    await t.step("a write streams blocks without buffering the body", async () => {
      const client = new ABSReplicaClient(
        absSpec(azurite, "sluice", "blocks", { blockSize: 64 * 1024 }),
      );
      const data = pattern(1_000_003, 4);
      let pulled = 0;
      let offset = 0;
      const body = new ReadableStream<Uint8Array>({
        pull(controller) {
          if (offset >= data.length) return controller.close();
          const chunk = data.slice(offset, offset + 10_000);
          offset += chunk.length;
          pulled += chunk.length;
          controller.enqueue(chunk);
        },
      }, { highWaterMark: 0 });
      const info = await client.writeLTXFile(id(9, 1, 9), body, 5);
      assert.equal(info.size, data.length);
      assert.equal(pulled, data.length);
      assert.deepEqual(await readAll(await client.openLTXFile(id(9, 1, 9))), data);
      await client.deleteAll();
    });
  } finally {
    await azurite.stop();
  }
});

Deno.test("abs config: Litestream's keys and URL", () => {
  const config = parseConfig(
    [
      "dbs:",
      "  - path: /tmp/a.db",
      "    replica:",
      "      type: abs",
      "      account-name: acct",
      "      account-key: c2VjcmV0",
      "      bucket: backups",
      "      path: a",
      "  - path: /tmp/b.db",
      "    replica:",
      "      url: abs://acct@backups/b",
      "      sas-token: sv=1&sig=x",
      "      endpoint: http://127.0.0.1:10000/acct",
    ].join("\n"),
  );
  assert.deepEqual(config.dbs[0].replica.spec, {
    type: "abs",
    container: "backups",
    path: "a",
    accountName: "acct",
    accountKey: "c2VjcmV0",
  });
  assert.deepEqual(config.dbs[1].replica.spec, {
    type: "abs",
    container: "backups",
    path: "b",
    accountName: "acct",
    sasToken: "sv=1&sig=x",
    endpoint: "http://127.0.0.1:10000/acct",
  });
  assert.deepEqual(parseReplicaURL("abs://acct@c/p/q"), {
    type: "abs",
    container: "c",
    path: "p/q",
    accountName: "acct",
  });
  assert.throws(() => parseReplicaURL("abs://acct:key@c/p"), /must not contain a key/);
  assert.throws(
    () => parseConfig("dbs:\n  - path: /tmp/a.db\n    replica:\n      type: abs\n      path: a\n"),
    /needs bucket/,
  );
  assert.throws(
    () =>
      parseConfig(
        "dbs:\n  - path: /tmp/a.db\n    replica:\n      url: abs://a@c/p\n      region: x\n",
      ),
    /only applies to s3/,
  );
});

async function endToEnd(azurite: Azurite): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sluice-abs-" });
  try {
    await azurite.createContainer("e2e");
    const dbPath = join(dir, "app.db");
    createDatabase(dbPath);
    const url = `abs://${AZURITE_ACCOUNT.accountName}@e2e/app?endpoint=${
      encodeURIComponent(azurite.endpoint)
    }`;
    const client = new ABSReplicaClient(absSpec(azurite, "e2e", "app"));
    const replicate = startReplicate(dbPath, url);
    try {
      await waitFor("first snapshot", async () => {
        const files = await list(client, 0).catch(() => []);
        return files.length > 0;
      }, 20_000);
      await runWriter(
        "--db",
        dbPath,
        "--rate",
        "200",
        "--count",
        "150",
        "--big-every",
        "75",
        "--big-pages",
        "1100",
      );
    } finally {
      const stopped = await replicate.stop();
      assert.equal(stopped.code, 0, stopped.stderr);
    }
    const restored = join(dir, "restored.db");
    const result = await sluice("restore", "-o", restored, url);
    assert.equal(result.code, 0, result.stderr);
    const source = await digest(dbPath);
    assert.ok(source.rows > 0);
    assert.deepEqual(await digest(restored), source);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
