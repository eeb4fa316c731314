/**
 * The conformance table of replica clients: one list of behaviours every backend must pass,
 * run by each backend's test file against a real server (or a real directory) through
 * {@linkcode runBehaviours}. Behaviours marked `only` use a backend's raw access.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ListObjectsV2Command, type S3Client } from "@aws-sdk/client-s3";
import {
  createReplicaClient,
  type FileReplicaClient,
  type LTXFileId,
  type LTXFileInfo,
  NotFoundError,
  type ReplicaClient,
  ReplicaError,
  S3ReplicaClient,
  type S3Spec,
} from "../src/replica/mod.ts";
import { type S3Server, s3Spec } from "./_s3.ts";
import { startFaultProxy } from "./_proxy.ts";

export const MiB = 1024 * 1024;

/** Raw access to a backend's storage, bypassing the client under test. */
export interface Backend {
  /** The client's `type`: "file", "s3", or another backend's name. */
  kind: string;
  /** A client on a fresh, empty location. */
  newClient(extra?: Partial<S3Spec>): ReplicaClient;
  /** Stores `bytes` under `name` (may contain `/`) in a level's directory or prefix. */
  plant(client: ReplicaClient, level: number, name: string, bytes: Uint8Array): Promise<void>;
  /** Every name stored in a level's directory or prefix (files only, recursive). */
  rawNames(client: ReplicaClient, level: number): Promise<string[]>;
  /** Stores a file at the location root, outside the level directories. */
  plantOutside(client: ReplicaClient, name: string): Promise<void>;
  /** Whether a file planted with plantOutside still exists. */
  outsideExists(client: ReplicaClient, name: string): Promise<boolean>;
  /** The raw creation-time record: file mtime/atime in ms, or the S3 metadata text. */
  rawTimestamp(client: ReplicaClient, file: LTXFileId): Promise<unknown>;
  /** Multipart uploads left on the server (S3), 0 for files. */
  pendingUploads(): Promise<number>;
  /**
   * Capability: the resolution of the storage's own file times when coarser than 1 ms (SFTP
   * keeps whole seconds). Files that are not LTX files then list with their timestamp truncated
   * to it; real LTX files get the exact time from their header under `useMetadata`.
   */
  timestampResolutionMs?: number;
  /** S3 only: the server and the raw SDK client. */
  s3?: { server: S3Server; raw: S3Client; bucket: string };
}

export interface Behaviour {
  name: string;
  only?: string;
  fn(backend: Backend): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** Deterministic, position-dependent bytes (so a misplaced range shows). */
export function pattern(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed * 2654435761 >>> 0;
  for (let i = 0; i < length; i++) {
    x = (x ^ (x << 13)) >>> 0;
    x = (x ^ (x >>> 17)) >>> 0;
    x = (x ^ (x << 5)) >>> 0;
    out[i] = x & 0xff;
  }
  return out;
}

export function streamOf(
  bytes: Uint8Array,
  chunkSize: number,
  failAfterChunks?: number,
): ReadableStream<Uint8Array> {
  let offset = 0;
  let chunks = 0;
  return new ReadableStream({
    pull(controller) {
      if (failAfterChunks !== undefined && chunks >= failAfterChunks) {
        controller.error(new Error("body source failed on purpose"));
        return;
      }
      if (offset >= bytes.length) {
        controller.close();
        return;
      }
      controller.enqueue(bytes.slice(offset, offset + chunkSize));
      offset += chunkSize;
      chunks++;
    },
  }, { highWaterMark: 0 });
}

export async function readAll(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

export async function list(
  client: ReplicaClient,
  level: number,
  options?: { seekTXID?: number; useMetadata?: boolean },
): Promise<LTXFileInfo[]> {
  const out: LTXFileInfo[] = [];
  for await (const info of client.ltxFiles(level, options)) out.push(info);
  return out;
}

export const ids = (infos: LTXFileInfo[]) => infos.map((f) => [f.minTXID, f.maxTXID]);
export const hex = (n: number) => n.toString(16).padStart(16, "0");
export const nameOf = (min: number, max = min) => `${hex(min)}-${hex(max)}.ltx`;
export const id = (level: number, min: number, max = min): LTXFileId => ({
  level,
  minTXID: min,
  maxTXID: max,
});
const requests = (client: ReplicaClient) => (client as S3ReplicaClient).requestCount;

async function runConcurrently<T>(items: T[], limit: number, fn: (item: T) => Promise<void>) {
  let next = 0;
  await Promise.all(Array.from({ length: limit }, async () => {
    while (next < items.length) await fn(items[next++]);
  }));
}

// ---------------------------------------------------------------------------------------------
// The behaviours

export const behaviours: Behaviour[] = [
  {
    name: "writes, lists and reads back the exact bytes",
    async fn(backend) {
      const client = backend.newClient();
      const a = pattern(5000, 1);
      const b = pattern(70_000, 2);
      const ts = Date.UTC(2026, 0, 2, 3, 4, 5, 678);
      const infoA = await client.writeLTXFile(id(0, 1), a, ts);
      assert.deepEqual(infoA, { ...id(0, 1), size: 5000, createdAt: new Date(ts) });
      const infoB = await client.writeLTXFile(id(0, 2), streamOf(b, 4096), ts + 1);
      assert.deepEqual(infoB, { ...id(0, 2), size: 70_000, createdAt: new Date(ts + 1) });
      await client.writeLTXFile(id(9, 1, 2), new Uint8Array(0), ts);

      const level0 = await list(client, 0);
      assert.deepEqual(ids(level0), [[1, 1], [2, 2]]);
      assert.deepEqual(level0.map((f) => [f.level, f.size]), [[0, 5000], [0, 70_000]]);
      assert.deepEqual(ids(await list(client, 9)), [[1, 2]]);
      assert.equal((await list(client, 9))[0].size, 0);
      assert.deepEqual(await list(client, 1), []);

      assert.deepEqual(await readAll(await client.openLTXFile(id(0, 1))), a);
      assert.deepEqual(await readAll(await client.openLTXFile(level0[1])), b);
      assert.deepEqual(await readAll(await client.openLTXFile(id(9, 1, 2))), new Uint8Array(0));

      // Overwriting a name replaces the content.
      await client.writeLTXFile(id(0, 1), b, ts);
      assert.deepEqual(await readAll(await client.openLTXFile(id(0, 1))), b);
      await client.close();
      await client.close(); // idempotent
    },
  },
  {
    name: "lists in (minTXID, maxTXID) order",
    async fn(backend) {
      const client = backend.newClient();
      const order = [[256, 300], [10, 10], [1, 4], [255, 255], [1, 2], [3, 9], [9, 9]];
      for (const [min, max] of order) {
        await client.writeLTXFile(id(1, min, max), pattern(10, min), 0);
      }
      assert.deepEqual(ids(await list(client, 1)), [
        [1, 2],
        [1, 4],
        [3, 9],
        [9, 9],
        [10, 10],
        [255, 255],
        [256, 300],
      ]);
    },
  },
  {
    name: "ignores names that are not strict lowercase LTX names",
    async fn(backend) {
      const client = backend.newClient();
      const junk = [
        "000000000000000A-000000000000000A.ltx", // upper case
        "000000000000000a-000000000000000A.ltx",
        "0000000000000001-0000000000000001.ltx.tmp", // temp file
        "0000000000000001-0000000000000001.LTX",
        "0000000000000001-0000000000000001.ltx.bak",
        "1-1.ltx",
        "00000000000000001-0000000000000001.ltx", // 17 digits
        "0000000000000001_0000000000000001.ltx",
        " 0000000000000005-0000000000000005.ltx",
        "0020000000000000-0020000000000000.ltx", // 2^53: not a safe integer
        "readme.txt",
        "sub/0000000000000006-0000000000000006.ltx", // nested deeper than the level
      ];
      for (const name of junk) await backend.plant(client, 0, name, pattern(20));
      await backend.plant(client, 0, nameOf(3), pattern(33));
      await client.writeLTXFile(id(0, 2), pattern(22), 0);
      const listed = await list(client, 0);
      assert.deepEqual(ids(listed), [[2, 2], [3, 3]]);
      assert.equal(listed[1].size, 33);
      assert.equal((await backend.rawNames(client, 0)).length, junk.length + 2);
    },
  },
  {
    name: "seekTXID skips files whose minTXID is lower",
    async fn(backend) {
      const client = backend.newClient();
      for (let txid = 1; txid <= 6; txid++) await client.writeLTXFile(id(0, txid), pattern(8), 0);
      await client.writeLTXFile(id(1, 1, 3), pattern(8), 0);
      await client.writeLTXFile(id(1, 4, 6), pattern(8), 0);
      await client.writeLTXFile(id(1, 16, 17), pattern(8), 0);
      assert.deepEqual(ids(await list(client, 0, { seekTXID: 4 })), [[4, 4], [5, 5], [6, 6]]);
      assert.deepEqual(ids(await list(client, 0, { seekTXID: 7 })), []);
      assert.equal((await list(client, 0, { seekTXID: 0 })).length, 6);
      assert.deepEqual(ids(await list(client, 1, { seekTXID: 2 })), [[4, 6], [16, 17]]);
      assert.deepEqual(ids(await list(client, 1, { seekTXID: 5 })), [[16, 17]]);
      assert.deepEqual(ids(await list(client, 1, { seekTXID: 16 })), [[16, 17]]);
    },
  },
  {
    name: "reads byte ranges",
    async fn(backend) {
      const client = backend.newClient();
      const data = pattern(100_000, 7);
      await client.writeLTXFile(id(2, 5, 8), data, 0);
      const read = async (offset?: number, length?: number) =>
        await readAll(await client.openLTXFile(id(2, 5, 8), { offset, length }));
      assert.deepEqual(await read(0, 10), data.slice(0, 10));
      assert.deepEqual(await read(1234), data.slice(1234));
      assert.deepEqual(await read(99_990, 10), data.slice(99_990));
      assert.deepEqual(await read(50_000, 1_000_000), data.slice(50_000)); // past the end: clipped
      assert.deepEqual(await read(70_000, 20_000), data.slice(70_000, 90_000));
      assert.deepEqual(await read(100_000), new Uint8Array(0)); // at the end
      assert.deepEqual(await read(10, 0), new Uint8Array(0));
      await assert.rejects(() => client.openLTXFile(id(2, 5, 8), { offset: -1 }), RangeError);

      // Cancelling a stream half-way releases it (the file backend's sanitizer checks the fd).
      const stream = await client.openLTXFile(id(2, 5, 8));
      const reader = stream.getReader();
      assert.equal((await reader.read()).done, false);
      await reader.cancel();
    },
  },
  {
    name: "createdAt is the timestamp given to the write",
    async fn(backend) {
      const client = backend.newClient();
      const stamps = [
        Date.UTC(2026, 10, 22, 14, 1, 21, 173),
        Date.UTC(2026, 10, 22, 14, 1, 21, 170),
        Date.UTC(2026, 10, 22, 14, 1, 21, 0),
        1000,
      ];
      for (const [i, ts] of stamps.entries()) {
        await client.writeLTXFile(id(0, i + 1), pattern(10), ts);
      }
      const resolution = backend.timestampResolutionMs ?? 1;
      const stored = stamps.map((ts) => ts - ts % resolution);
      // The raw record first: a listing that reads file headers (SFTP) updates their atime.
      const raw = await Promise.all(
        stamps.map((_, i) => backend.rawTimestamp(client, id(0, i + 1))),
      );
      const listed = await list(client, 0, { useMetadata: true });
      assert.deepEqual(listed.map((f) => f.createdAt.getTime()), stored);
      if (backend.kind === "s3" || backend.kind === "abs" || backend.kind === "webdav") {
        assert.deepEqual(raw, [
          "2026-11-22T14:01:21.173Z",
          "2026-11-22T14:01:21.17Z",
          "2026-11-22T14:01:21Z",
          "1970-01-01T00:00:01Z",
        ]);
        // Without metadata, S3 reports LastModified (the upload time, i.e. about now); Azure
        // (metadata) and WebDAV (a dead property) listings carry it at no cost, so they always
        // report the timestamp.
        const plain = await list(client, 0);
        if (backend.kind === "s3") {
          for (const f of plain) assert.ok(Math.abs(f.createdAt.getTime() - Date.now()) < 600_000);
        } else assert.deepEqual(plain.map((f) => f.createdAt.getTime()), stamps);
      } else {
        assert.deepEqual(raw, stored.map((ts) => ({ mtime: ts, atime: ts })));
      }
    },
  },
  {
    name: "a failed write leaves nothing behind and keeps the previous version",
    async fn(backend) {
      const client = backend.newClient();
      const failing = streamOf(pattern(50_000), 1000, 10);
      const error = await client.writeLTXFile(id(0, 1), failing, 0).then(
        () => assert.fail("write should fail"),
        (err) => err,
      );
      assert.ok(error instanceof ReplicaError, String(error));
      assert.match(error.message, /body source failed on purpose/);
      assert.deepEqual(await list(client, 0), []);
      assert.deepEqual(await backend.rawNames(client, 0), []);

      const original = pattern(3000, 3);
      await client.writeLTXFile(id(0, 2), original, 0);
      await assert.rejects(
        () => client.writeLTXFile(id(0, 2), streamOf(pattern(9000), 1000, 5), 0),
        ReplicaError,
      );
      assert.deepEqual(await backend.rawNames(client, 0), [nameOf(2)]);
      assert.deepEqual(await readAll(await client.openLTXFile(id(0, 2))), original);
    },
  },
  {
    name: "a large write that fails midway (multipart on S3) leaves nothing behind",
    async fn(backend) {
      const client = backend.newClient();
      const before = await backend.pendingUploads();
      const count = requests(client);
      // 64 KiB chunks, failing after 7 MiB: one 5 MiB part is uploaded before the failure.
      const failing = streamOf(pattern(12 * MiB), 64 * 1024, 112);
      await assert.rejects(() => client.writeLTXFile(id(9, 1, 100), failing, 0), ReplicaError);
      // Create, part 1, abort (the second part never completes: its source failed).
      if (backend.kind === "s3") assert.equal(requests(client) - count, 3);
      assert.deepEqual(await list(client, 9), []);
      assert.deepEqual(await backend.rawNames(client, 9), []);
      assert.equal(await backend.pendingUploads(), before);
    },
  },
  {
    name: "writes bodies larger than the part size",
    async fn(backend) {
      const client = backend.newClient();
      const big = pattern(11 * MiB + 123, 11);
      let count = requests(client);
      const info = await client.writeLTXFile(id(9, 1, 50), streamOf(big, 256 * 1024), 42_000);
      assert.deepEqual(info, { ...id(9, 1, 50), size: big.length, createdAt: new Date(42_000) });
      // Multipart: create + 3 parts + complete.
      if (backend.kind === "s3") assert.equal(requests(client) - count, 5);
      const [listed] = await list(client, 9, { useMetadata: true });
      assert.equal(listed.size, big.length);
      assert.equal(listed.createdAt.getTime(), 42_000);
      assert.deepEqual(await readAll(await client.openLTXFile(id(9, 1, 50))), big);
      assert.deepEqual(
        await readAll(await client.openLTXFile(id(9, 1, 50), { offset: 5 * MiB - 3, length: 7 })),
        big.slice(5 * MiB - 3, 5 * MiB + 4),
      );

      // Exactly the part size is still a single PUT; one byte more is multipart.
      count = requests(client);
      const exact = pattern(5 * MiB, 12);
      await client.writeLTXFile(id(9, 1, 51), exact, 0);
      if (backend.kind === "s3") assert.equal(requests(client) - count, 1);
      count = requests(client);
      const above = pattern(5 * MiB + 1, 13);
      await client.writeLTXFile(id(9, 1, 52), above, 0);
      if (backend.kind === "s3") assert.equal(requests(client) - count, 4);
      assert.deepEqual(await readAll(await client.openLTXFile(id(9, 1, 51))), exact);
      assert.deepEqual(await readAll(await client.openLTXFile(id(9, 1, 52))), above);
    },
  },
  {
    name: "deletes files; missing ones are not an error",
    async fn(backend) {
      const client = backend.newClient();
      for (let txid = 1; txid <= 3; txid++) await client.writeLTXFile(id(0, txid), pattern(9), 0);
      await client.deleteLTXFiles([id(0, 1), id(0, 3), id(0, 99), id(5, 1, 2)]);
      assert.deepEqual(ids(await list(client, 0)), [[2, 2]]);
      await assert.rejects(() => client.openLTXFile(id(0, 1)), NotFoundError);
      await client.deleteLTXFiles([]);
      await client.deleteLTXFiles([id(0, 1)]);
      assert.deepEqual(ids(await list(client, 0)), [[2, 2]]);
    },
  },
  {
    name: "deleteAll removes every level and nothing outside them",
    async fn(backend) {
      const client = backend.newClient();
      await client.writeLTXFile(id(0, 1), pattern(9), 0);
      await client.writeLTXFile(id(1, 1, 2), pattern(9), 0);
      await client.writeLTXFile(id(9, 1, 2), pattern(9), 0);
      await backend.plant(client, 0, "junk.txt", pattern(3));
      await backend.plantOutside(client, "keep.txt");
      await client.deleteAll();
      for (let level = 0; level <= 9; level++) {
        assert.deepEqual(await list(client, level), []);
        assert.deepEqual(await backend.rawNames(client, level), []);
      }
      assert.ok(await backend.outsideExists(client, "keep.txt"));
      await client.deleteAll(); // nothing left: still fine
    },
  },
  {
    name: "lists more than 1000 files in one level",
    async fn(backend) {
      const client = backend.newClient();
      const count = 1001;
      const body = pattern(16);
      const txids = Array.from({ length: count }, (_, i) => i + 1);
      await runConcurrently(txids, 32, (txid) => backend.plant(client, 3, nameOf(txid), body));
      const before = requests(client);
      const listed = await list(client, 3);
      // Two ListObjectsV2 pages on S3, no other request.
      if (backend.kind === "s3") assert.equal(requests(client) - before, 2);
      assert.deepEqual(listed.map((f) => f.minTXID), txids);
      assert.ok(listed.every((f) => f.size === 16 && f.level === 3));
      assert.deepEqual(
        (await list(client, 3, { seekTXID: 990 })).map((f) => f.minTXID),
        txids.slice(989),
      );
      const beforeDelete = requests(client);
      await client.deleteAll();
      // Two LIST pages, each followed by one DeleteObjects (at most 1000 keys per request).
      if (backend.kind === "s3") assert.equal(requests(client) - beforeDelete, 4);
      assert.deepEqual(await list(client, 3), []);
    },
  },
  {
    name: "a missing file is a NotFoundError",
    async fn(backend) {
      const client = backend.newClient();
      await assert.rejects(() => client.openLTXFile(id(0, 1)), NotFoundError);
      await client.writeLTXFile(id(0, 1), pattern(5), 0);
      const error = await client.openLTXFile(id(0, 2)).then(() => undefined, (err) => err);
      assert.ok(error instanceof NotFoundError && error instanceof ReplicaError);
      assert.match(error.message, /0000000000000002-0000000000000002\.ltx/);
    },
  },
  {
    name: "an empty location lists nothing and tolerates deletes",
    async fn(backend) {
      const client = backend.newClient();
      for (let level = 0; level <= 9; level++) assert.deepEqual(await list(client, level), []);
      await client.deleteLTXFiles([id(0, 1)]);
      await client.deleteAll();
    },
  },
  {
    name: "rejects invalid levels and TXID ranges",
    async fn(backend) {
      const client = backend.newClient();
      await assert.rejects(() => list(client, 10), RangeError);
      await assert.rejects(() => list(client, -1), RangeError);
      await assert.rejects(() => client.writeLTXFile(id(0, 0), pattern(1), 0), RangeError);
      await assert.rejects(() => client.writeLTXFile(id(0, 5, 4), pattern(1), 0), RangeError);
      await assert.rejects(() => client.openLTXFile(id(1.5, 1)), RangeError);
      assert.deepEqual(await list(client, 0), []);
    },
  },
  {
    name: "stores files in Litestream's layout",
    async fn(backend) {
      const client = backend.newClient();
      await client.writeLTXFile(id(9, 1, 0x3e8), pattern(4), 0);
      await client.writeLTXFile(id(1, 1, 2), pattern(4), 0);
      if (backend.kind === "file") {
        const root = (client as FileReplicaClient).root;
        assert.ok(
          (await Deno.stat(join(root, "ltx/9/0000000000000001-00000000000003e8.ltx"))).isFile,
        );
        assert.ok(
          (await Deno.stat(join(root, "ltx/1/0000000000000001-0000000000000002.ltx"))).isFile,
        );
        assert.equal(client.location, `file://${root}`);
      } else if (backend.kind === "s3") {
        const { raw, bucket } = backend.s3!;
        const spec = s3Spec(backend.s3!.server, bucket, "/x//y/./z/");
        const layout = createReplicaClient({ type: "s3", ...spec });
        assert.equal(layout.location, `s3://${bucket}/x/y/z`);
        await layout.writeLTXFile(id(9, 1, 0x3e8), pattern(4), 0);
        await layout.writeLTXFile(id(0, 2), pattern(4), 0);
        const keys = await raw.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: "x/" }));
        assert.deepEqual(keys.Contents?.map((o) => o.Key), [
          "x/y/z/0000/0000000000000002-0000000000000002.ltx",
          "x/y/z/0009/0000000000000001-00000000000003e8.ltx",
        ]);
        await layout.deleteAll();
        await layout.close();
      }
    },
  },
  {
    name: "a missing bucket is a clear ReplicaError without secrets",
    only: "s3",
    async fn(backend) {
      const secret = "VerySecretValue/0123456789";
      const keyId = "AKIASECRETKEYID12345";
      const client = new S3ReplicaClient(
        s3Spec(backend.s3!.server, "sluice-no-such-bucket", "db", {
          accessKeyId: keyId,
          secretAccessKey: secret,
        }),
      );
      const expected = `bucket "sluice-no-such-bucket" does not exist at ` +
        `${backend.s3!.server.endpoint}: create it first`;
      const errors = await Promise.all([
        list(client, 0).then(() => undefined, (err) => err),
        client.writeLTXFile(id(0, 1), pattern(10), 0).then(() => undefined, (err) => err),
        client.writeLTXFile(id(0, 1), streamOf(pattern(6 * MiB), MiB), 0).then(
          () => undefined,
          (err) => err,
        ),
        client.openLTXFile(id(0, 1)).then(() => undefined, (err) => err),
        client.deleteLTXFiles([id(0, 1)]).then(() => undefined, (err) => err),
      ]);
      for (const error of errors) {
        assert.ok(error instanceof ReplicaError, String(error));
        assert.ok(!(error instanceof NotFoundError), String(error));
        assert.equal(error.message, expected);
      }
      for (const text of [client.location, ...errors.map((e) => `${e.message} ${e.stack}`)]) {
        assert.ok(!text.includes(secret) && !text.includes(keyId), text);
      }
      await client.close();
    },
  },
  {
    name: "a download cut mid-file resumes and yields the exact bytes",
    only: "s3",
    async fn(backend) {
      const { server, bucket } = backend.s3!;
      const writer = backend.newClient();
      const data = pattern(300_000, 21);
      await writer.writeLTXFile(id(0, 7), data, 0);
      const path = (writer as S3ReplicaClient).path;
      const proxy = startFaultProxy(server.endpoint);
      const client = new S3ReplicaClient(
        s3Spec({ endpoint: proxy.url }, bucket, path, { readRetryDelayMs: 5, maxAttempts: 1 }),
      );
      try {
        // Whole file, cut twice in the body (budgets count response headers too).
        proxy.cutResponses([20_000, 50_000]);
        assert.deepEqual(await readAll(await client.openLTXFile(id(0, 7))), data);
        assert.equal(proxy.cuts, 2);
        assert.equal(client.requestCount, 3); // the first GET and two ranged resumes

        // A range, cut once.
        proxy.cutResponses(9_000, 1);
        const range = await readAll(
          await client.openLTXFile(id(0, 7), { offset: 1000, length: 150_000 }),
        );
        assert.deepEqual(range, data.slice(1000, 151_000));
        assert.equal(proxy.cuts, 3);

        // Resumes that make no progress give up after 3 attempts with a ReplicaError.
        proxy.cutResponses([20_000, 10, 10, 10, 10, 10]);
        const stream = await client.openLTXFile(id(0, 7));
        const error = await readAll(stream).then(() => undefined, (err) => err);
        assert.ok(error instanceof ReplicaError, String(error));
        assert.match(error.message, /download failed at byte \d+ of 300000 after 3 resume/);
        proxy.reset();

        // A file replaced between the cut and the resume is not spliced (If-Match).
        proxy.cutResponses(20_000, 1);
        const replaced = await client.openLTXFile(id(0, 7));
        const reader = replaced.getReader();
        const first = await reader.read();
        assert.equal(first.done, false);
        await writer.writeLTXFile(id(0, 7), pattern(300_000, 22), 0);
        const rest = await (async () => {
          for (;;) if ((await reader.read()).done) return undefined;
        })().then(() => undefined, (err) => err);
        assert.ok(rest instanceof ReplicaError, `expected a failure, got ${rest}`);
      } finally {
        proxy.reset();
        await client.close();
        await writer.close();
        await proxy.close();
      }
    },
  },
  {
    name: "requests are minimal and an idle client makes none",
    only: "s3",
    async fn(backend) {
      const client = backend.newClient() as S3ReplicaClient;
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal(client.requestCount, 0); // constructing a client costs nothing
      await client.writeLTXFile(id(0, 1), pattern(100), 0);
      assert.equal(client.requestCount, 1); // one PUT, no HEAD
      await client.writeLTXFile(id(0, 2), streamOf(pattern(1000), 100), 0);
      assert.equal(client.requestCount, 2);
      await list(client, 0);
      assert.equal(client.requestCount, 3); // one LIST
      await list(client, 0, { useMetadata: true });
      assert.equal(client.requestCount, 6); // LIST + one HEAD per file
      await readAll(await client.openLTXFile(id(0, 1)));
      assert.equal(client.requestCount, 7);
      await client.deleteLTXFiles([id(0, 1), id(0, 2)]);
      assert.equal(client.requestCount, 8); // one DeleteObjects
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.equal(client.requestCount, 8);
    },
  },
  {
    name: "survives a server crash and restart",
    only: "s3",
    async fn(backend) {
      const { server } = backend.s3!;
      const client = backend.newClient({ maxAttempts: 2 });
      const data = pattern(4096, 5);
      await client.writeLTXFile(id(0, 1), data, 1234);
      await server.kill();
      await assert.rejects(() => list(client, 0), ReplicaError);
      await server.restart();
      // Same port, same data; stale keep-alive sockets are retried by the SDK.
      assert.deepEqual(ids(await list(client, 0, { useMetadata: true })), [[1, 1]]);
      assert.equal((await list(client, 0, { useMetadata: true }))[0].createdAt.getTime(), 1234);
      assert.deepEqual(await readAll(await client.openLTXFile(id(0, 1))), data);
    },
  },
];

/** Runs every behaviour that applies to `backend` as a step of `t`. */
export async function runBehaviours(t: Deno.TestContext, backend: Backend): Promise<void> {
  for (const behaviour of behaviours) {
    if (behaviour.only && behaviour.only !== backend.kind) continue;
    await t.step(behaviour.name, () => behaviour.fn(backend));
  }
}
