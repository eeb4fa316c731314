/**
 * The replica-client conformance table (tests/_conformance.ts) run against the two built-in
 * backends: FileReplicaClient in a temp dir and S3ReplicaClient against fauxqs (a real HTTP S3
 * server in its own process), plus behaviours specific to each.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import {
  FileReplicaClient,
  type ReplicaClient,
  ReplicaError,
  S3ReplicaClient,
} from "../src/replica/mod.ts";
import { type S3Server, s3Spec, startS3Server } from "./_s3.ts";
import { type Backend, id, list, MiB, pattern, readAll, runBehaviours } from "./_conformance.ts";
// ---------------------------------------------------------------------------------------------
// Backends

function fileBackend(root: string): Backend {
  let counter = 0;
  const levelDir = (client: ReplicaClient, level: number) =>
    (client as FileReplicaClient).levelDir(level);
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
    kind: "file",
    newClient: () => new FileReplicaClient(join(root, `replica-${++counter}`)),
    async plant(client, level, name, bytes) {
      const path = join(levelDir(client, level), name);
      await Deno.mkdir(join(path, ".."), { recursive: true });
      await Deno.writeFile(path, bytes);
    },
    rawNames: (client, level) => walk(levelDir(client, level)),
    async plantOutside(client, name) {
      await Deno.mkdir((client as FileReplicaClient).root, { recursive: true });
      await Deno.writeTextFile(join((client as FileReplicaClient).root, name), "keep");
    },
    async outsideExists(client, name) {
      return (await Deno.stat(join((client as FileReplicaClient).root, name))).isFile;
    },
    async rawTimestamp(client, file) {
      const stat = await Deno.stat((client as FileReplicaClient).filePath(file));
      return { mtime: stat.mtime?.getTime(), atime: stat.atime?.getTime() };
    },
    pendingUploads: () => Promise.resolve(0),
  };
}

function s3Backend(server: S3Server, bucket: string): Backend {
  let counter = 0;
  const raw = new S3Client({
    endpoint: server.endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
  });
  const s3 = (client: ReplicaClient) => client as S3ReplicaClient;
  const keysUnder = async (prefix: string): Promise<string[]> => {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await raw.send(
        new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
      );
      keys.push(...(page.Contents ?? []).map((o) => o.Key!.slice(prefix.length)));
      token = page.NextContinuationToken;
    } while (token);
    return keys.sort();
  };
  return {
    kind: "s3",
    s3: { server, raw, bucket },
    newClient: (extra = {}) =>
      new S3ReplicaClient(s3Spec(server, bucket, `t${++counter}/db`, extra)),
    async plant(client, level, name, bytes) {
      const key = s3(client).levelPrefix(level) + name;
      await raw.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: bytes }));
    },
    rawNames: (client, level) => keysUnder(s3(client).levelPrefix(level)),
    async plantOutside(client, name) {
      const key = `${s3(client).path}/${name}`;
      await raw.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: "keep" }));
    },
    async outsideExists(client, name) {
      return (await keysUnder(`${s3(client).path}/`)).includes(name);
    },
    async rawTimestamp(client, file) {
      const head = await raw.send(
        new HeadObjectCommand({ Bucket: bucket, Key: s3(client).objectKey(file) }),
      );
      return head.Metadata?.["litestream-timestamp"];
    },
    async pendingUploads() {
      let count = 0;
      try {
        for await (const _ of Deno.readDir(join(server.dataDir, "_multipart"))) count++;
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
      return count;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The runs

Deno.test("replica client behaviours: file", async (t) => {
  const root = await Deno.makeTempDir({ prefix: "sluice-replica-test-" });
  try {
    const backend = fileBackend(root);
    await runBehaviours(t, backend);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test({
  name: "replica client behaviours: s3 (fauxqs)",
  async fn(t) {
    const server = await startS3Server();
    const bucket = "sluice-replica-test";
    const backend = s3Backend(server, bucket);
    try {
      await server.createBucket(bucket);
      await runBehaviours(t, backend);
    } finally {
      backend.s3!.raw.destroy();
      await server.stop();
    }
  },
});

Deno.test("file replica: a write into an unwritable location fails cleanly", async () => {
  const root = await Deno.makeTempDir();
  try {
    // The level "directory" is a file: mkdir fails; the body is cancelled, nothing is left.
    await Deno.mkdir(join(root, "ltx"));
    await Deno.writeTextFile(join(root, "ltx", "0"), "not a directory");
    const client = new FileReplicaClient(root);
    let cancelled: unknown;
    const body = new ReadableStream<Uint8Array>({
      cancel(reason) {
        cancelled = reason;
      },
    });
    await assert.rejects(() => client.writeLTXFile(id(0, 1), body, 0), ReplicaError);
    assert.ok(cancelled !== undefined, "the body stream was cancelled");
    await assert.rejects(() => list(client, 0), ReplicaError);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("file replica: temp files of a killed writer are removed, finished files kept", async () => {
  const root = await Deno.makeTempDir();
  try {
    const client = new FileReplicaClient(root);
    await client.writeLTXFile(id(0, 1), new Uint8Array(10), 0);
    const level1 = join(root, "ltx", "1");
    await Deno.mkdir(level1, { recursive: true });
    const leftover = join(level1, "0000000000000001-0000000000000002.ltx.tmp");
    await Deno.writeTextFile(leftover, "half");
    await Deno.writeTextFile(join(root, "notes.tmp"), "not ours");
    await client.removeTempFiles();
    await assert.rejects(Deno.stat(leftover), Deno.errors.NotFound);
    await Deno.stat(join(root, "notes.tmp"));
    assert.deepEqual((await list(client, 0)).map((f) => f.maxTXID), [1]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("s3 replica: cleaned paths and spec defaults", async () => {
  const { cleanPath, isAWSEndpoint } = await import("../src/replica/mod.ts");
  assert.equal(cleanPath("/a//b/./c/"), "a/b/c");
  assert.equal(cleanPath("db"), "db");
  assert.equal(cleanPath(""), "");
  assert.equal(cleanPath("/"), "");
  assert.equal(cleanPath("a/../b"), "b");
  assert.ok(isAWSEndpoint("https://s3.eu-west-1.amazonaws.com"));
  assert.ok(!isAWSEndpoint("http://127.0.0.1:9000"));
  const client = new S3ReplicaClient({
    bucket: "b",
    path: "/x/",
    endpoint: "http://user:pw@127.0.0.1:1/",
    accessKeyId: "k",
    secretAccessKey: "s",
  });
  assert.equal(client.location, "s3://b/x");
  assert.equal(client.endpointLabel, "http://127.0.0.1:1");
  assert.equal(client.levelPrefix(9), "x/0009/");
  assert.throws(() => new S3ReplicaClient({ bucket: "b", path: "x", partSize: MiB }), RangeError);
  assert.throws(() => new S3ReplicaClient({ bucket: "", path: "x" }), RangeError);
  await client.close();
});

Deno.test("resumable download: a body that ends early or errors is resumed where it stopped", async () => {
  const { resumableStream } = await import("../src/replica/mod.ts");
  const data = pattern(30, 9);
  const once = (bytes: Uint8Array, fail?: boolean) => {
    let sent = false;
    return new ReadableStream<Uint8Array>({
      pull(controller) {
        if (!sent) {
          sent = true;
          controller.enqueue(bytes);
        } else if (fail) controller.error(new Error("connection reset"));
        else controller.close();
      },
    });
  };
  const offsets: number[] = [];
  const stream = resumableStream(
    { body: once(data.slice(0, 10)), length: 30 }, // ends cleanly, 20 bytes short
    (received) => {
      offsets.push(received);
      const fail = received === 10;
      const end = fail ? 25 : 30;
      return Promise.resolve({ body: once(data.slice(received, end), fail) });
    },
    { baseDelayMs: 1 },
  );
  assert.deepEqual(await readAll(stream), data);
  assert.deepEqual(offsets, [10, 25]);

  // Permanent failures are reported at once; unknown lengths trust the end of the body.
  let reopened = 0;
  const permanent = resumableStream(
    { body: once(data.slice(0, 5), true), length: 30 },
    () => Promise.resolve({ body: once(new Uint8Array(0)), length: 0 }).finally(() => reopened++),
    { baseDelayMs: 1, isPermanent: () => true },
  );
  await assert.rejects(() => readAll(permanent), /download failed at byte 5 of 30/);
  assert.equal(reopened, 0);
  const unknown = resumableStream({ body: once(data.slice(0, 7)) }, () => {
    throw new Error("must not reopen");
  });
  assert.deepEqual(await readAll(unknown), data.slice(0, 7));
});
