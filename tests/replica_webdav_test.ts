/**
 * The replica-client conformance table (tests/_conformance.ts) run against WebDAVReplicaClient on
 * a real WebDAV server in its own process (npm `webdav-server`, tests/_webdav_server.ts), plus
 * what is specific to WebDAV: authentication, a server restart (dead properties lost: the
 * timestamp falls back to the LTX header), spooled large uploads, temp-file cleanup, the owner
 * marker, and a real `sluice replicate` → `sluice restore` through the server.
 */

import { encodeHeader, HEADER_FLAG_NO_CHECKSUM } from "../src/ltx/mod.ts";
import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import {
  type LTXFileId,
  type ReplicaClient,
  ReplicaError,
  WebDAVReplicaClient,
  type WebDAVSpec,
} from "../src/replica/mod.ts";
import { parseMultistatus, PROPFIND_BODY } from "../src/replica/mod.ts";
import {
  type Backend,
  id,
  list,
  MiB,
  pattern,
  readAll,
  runBehaviours,
  streamOf,
} from "./_conformance.ts";
import { startWebDAVServer, type WebDAVServer } from "./_webdav_server.ts";
import { createDatabase, digest, runWriter, sluice, startReplicate, waitFor } from "./_sluice.ts";

function spec(server: WebDAVServer, path: string, extra: Partial<WebDAVSpec> = {}): WebDAVSpec {
  return {
    url: server.url,
    username: server.user,
    password: server.password,
    path,
    retryDelayMs: 20,
    ...extra,
  };
}

/** Raw access: the server serves a local directory, read and written directly. */
function webdavBackend(server: WebDAVServer): Backend {
  let counter = 0;
  const dav = (client: ReplicaClient) => client as WebDAVReplicaClient;
  const local = (client: ReplicaClient, ...parts: string[]) =>
    join(server.root, dav(client).path, ...parts);
  const walk = async (dir: string, prefix = ""): Promise<string[]> => {
    const names: string[] = [];
    try {
      for await (const entry of Deno.readDir(dir)) {
        if (entry.isDirectory) {
          names.push(...await walk(join(dir, entry.name), `${prefix}${entry.name}/`));
        } else names.push(prefix + entry.name);
      }
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    return names.sort();
  };
  return {
    kind: "webdav",
    newClient: () => new WebDAVReplicaClient(spec(server, `t${++counter}/db`)),
    async plant(client, level, name, bytes) {
      const path = local(client, "ltx", String(level), name);
      await Deno.mkdir(join(path, ".."), { recursive: true });
      await Deno.writeFile(path, bytes);
    },
    rawNames: (client, level) => walk(local(client, "ltx", String(level))),
    async plantOutside(client, name) {
      await Deno.mkdir(local(client), { recursive: true });
      await Deno.writeTextFile(local(client, name), "keep");
    },
    async outsideExists(client, name) {
      return (await Deno.stat(local(client, name))).isFile;
    },
    async rawTimestamp(client, file: LTXFileId) {
      // The dead property as the server stores it, read with a raw PROPFIND.
      const response = await fetch(dav(client).urlOf(dav(client).filePath(file)), {
        method: "PROPFIND",
        headers: {
          Depth: "0",
          Authorization: `Basic ${btoa(`${server.user}:${server.password}`)}`,
        },
        body: PROPFIND_BODY,
      });
      return parseMultistatus(await response.text())[0]?.timestamp;
    },
    pendingUploads: () => Promise.resolve(0),
  };
}

/** An LTX header (the first 40 bytes are what the client reads) with this file's TXIDs. */
/** A valid LTX header (all a header-time read looks at) for `file`, stamped `timestamp`. */
function ltxHead(file: LTXFileId, timestamp: number): Uint8Array {
  return encodeHeader({
    flags: HEADER_FLAG_NO_CHECKSUM,
    pageSize: 4096,
    commit: 1,
    minTXID: file.minTXID,
    maxTXID: file.maxTXID,
    timestamp,
    preApplyChecksum: 0n,
    walOffset: 0,
    walSize: 0,
    walSalt1: 0,
    walSalt2: 0,
    nodeID: 0n,
  });
}

Deno.test("replica client behaviours: webdav (webdav-server)", async (t) => {
  const server = await startWebDAVServer();
  try {
    await runBehaviours(t, webdavBackend(server));

    await t.step("wrong credentials are a clear ReplicaError without secrets", async () => {
      const client = new WebDAVReplicaClient(spec(server, "auth", { password: "wrong-secret" }));
      const error = await list(client, 0).then(() => undefined, (err) => err);
      assert.ok(error instanceof ReplicaError, String(error));
      assert.match(error.message, /HTTP 401.*check webdav-username and webdav-password/);
      assert.ok(!error.message.includes("wrong-secret") && !client.location.includes("sluice@"));
      await client.close();
    });

    await t.step("a stream body above 16 MiB is spooled and sent whole", async () => {
      const client = new WebDAVReplicaClient(spec(server, "big"));
      const big = pattern(17 * MiB + 5, 31);
      const info = await client.writeLTXFile(id(9, 1, 9), streamOf(big, 512 * 1024), 5000);
      assert.equal(info.size, big.length);
      const stored = await Deno.readFile(
        join(server.root, "big/ltx/9/0000000000000001-0000000000000009.ltx"),
      );
      assert.equal(stored.length, big.length);
      assert.deepEqual(
        await readAll(await client.openLTXFile(id(9, 1, 9), { offset: 17 * MiB, length: 5 })),
        big.slice(17 * MiB),
      );
      await client.close();
    });

    await t.step("after a server restart, the LTX header gives the exact time", async () => {
      const client = new WebDAVReplicaClient(spec(server, "restart"));
      const ts = Date.UTC(2026, 10, 22, 14, 1, 21, 173);
      await client.writeLTXFile(id(0, 5), ltxHead(id(0, 5), ts), ts);
      assert.equal((await list(client, 0))[0].createdAt.getTime(), ts);
      await server.restart(); // this server keeps dead properties in memory: they are gone
      const plain = await list(client, 0); // getlastmodified: the upload time
      assert.ok(Math.abs(plain[0].createdAt.getTime() - Date.now()) < 600_000);
      assert.equal((await list(client, 0, { useMetadata: true }))[0].createdAt.getTime(), ts);
      await client.close();
    });

    await t.step("temp files of a killed writer are removed, finished files kept", async () => {
      const client = new WebDAVReplicaClient(spec(server, "temps"));
      await client.writeLTXFile(id(1, 1, 2), pattern(10), 0);
      const dir = join(server.root, "temps/ltx/1");
      await Deno.writeTextFile(
        join(dir, "0000000000000003-0000000000000004.ltx.ab12cd34.tmp"),
        "x",
      );
      await client.removeTempFiles();
      const names = [...Deno.readDirSync(dir)].map((e) => e.name);
      assert.deepEqual(names, ["0000000000000001-0000000000000002.ltx"]);
      await client.close();
    });

    await t.step("the owner marker is created once", async () => {
      const client = new WebDAVReplicaClient(spec(server, "owner"));
      const marker = client.ownerMarker();
      assert.equal(await marker.read(), undefined);
      assert.equal(await marker.createExclusive('{"db":"a"}'), true);
      assert.equal(await marker.createExclusive('{"db":"b"}'), false);
      assert.equal(await marker.read(), '{"db":"a"}');
      await client.close();
    });
  } finally {
    await server.stop();
  }
});

Deno.test("webdav replica: replicate → restore byte-identical through sluice", async () => {
  const server = await startWebDAVServer();
  const dir = await Deno.makeTempDir({ prefix: "sluice-webdav-e2e-" });
  try {
    const db = join(dir, "app.db");
    createDatabase(db);
    const config = join(dir, "sluice.yml");
    await Deno.writeTextFile(
      config,
      [
        "dbs:",
        `  - path: ${db}`,
        "    replica:",
        "      type: webdav",
        `      webdav-url: ${server.url}`,
        `      webdav-username: ${server.user}`,
        `      webdav-password: ${server.password}`,
        "      path: backups/app",
        "      sync-interval: 100ms",
        "",
      ].join("\n"),
    );
    await runWriter("--db", db, "--count", "200", "--row-size", "3000");
    const replicator = startReplicate("-c", config);
    try {
      await waitFor("the first snapshot on the server", () => {
        try {
          return [...Deno.readDirSync(join(server.root, "backups/app/ltx/9"))].length > 0;
        } catch {
          return false;
        }
      }, 15_000);
      await runWriter("--db", db, "--count", "100", "--row-size", "500", "--seed", "2");
    } finally {
      const stopped = await replicator.stop();
      assert.equal(stopped.code, 0, stopped.stderr);
    }
    const out = join(dir, "restored.db");
    // From the URL alone, Litestream's form: credentials in the userinfo.
    const url = `webdav://${server.user}:${server.password}@127.0.0.1:${server.port}/backups/app`;
    const restored = await sluice("restore", "-o", out, url);
    assert.equal(restored.code, 0, restored.stderr);
    assert.deepEqual(await digest(out), await digest(db));
    const source = new DatabaseSync(db);
    source.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    source.close();
    assert.deepEqual(await Deno.readFile(out), await Deno.readFile(db));
  } finally {
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
