/**
 * S3 provider profiles: defaults per provider, detection from the endpoint, overrides from URL
 * and config keys (Litestream's included), `gs://` URLs, and the request shaping each setting
 * stands for, seen on the wire between the SDK and fauxqs: checksum headers, unsigned
 * payloads, Content-MD5, the Tigris header, GCS's single deletes and unsigned Accept-Encoding,
 * and HTTP 408 retried (through the fault proxy).
 */

import assert from "node:assert/strict";
import { s3Spec, startS3Server } from "./_s3.ts";
import { startFaultProxy } from "./_proxy.ts";
import {
  detectProvider,
  GCS_ENDPOINT,
  resolveS3Profile,
  S3ReplicaClient,
  type S3Spec,
} from "../src/replica/mod.ts";
import { ConfigError, parseConfig, parseReplicaURL } from "../src/config/mod.ts";

Deno.test("profiles: endpoint detection follows Litestream's host rules", () => {
  const cases: Array<[string | undefined, string | undefined]> = [
    [undefined, "aws"],
    ["https://s3.eu-central-1.amazonaws.com", "aws"],
    ["https://0123abcd.r2.cloudflarestorage.com", "r2"],
    ["https://s3.us-west-004.backblazeb2.com", "b2"],
    ["https://fsn1.your-objectstorage.com", "hetzner"],
    ["https://fra1.digitaloceanspaces.com", "digitalocean"],
    ["https://fly.storage.tigris.dev", "tigris"],
    ["https://t3.storage.dev", "tigris"],
    ["https://storage.googleapis.com", "gcs"],
    ["https://us-central1-storage.googleapis.com", "gcs"],
    ["https://storage.me-central2.rep.googleapis.com", "gcs"],
    ["https://bucket.storage.googleapis.com", undefined],
    ["https://storage.googleapis.com.evil.com", undefined],
    ["https://storageinsights.googleapis.com", undefined],
    ["http://127.0.0.1:9000", undefined],
  ];
  for (const [endpoint, provider] of cases) {
    assert.equal(detectProvider(endpoint), provider, String(endpoint));
  }
});

Deno.test("profiles: provider defaults, individual keys override them", () => {
  const aws = resolveS3Profile({});
  assert.equal(aws.provider, "aws");
  assert.equal(aws.checksumMode, "when-supported");
  assert.equal(aws.forcePathStyle, false);

  const generic = resolveS3Profile({ endpoint: "http://127.0.0.1:9000" });
  assert.deepEqual(
    [generic.provider, generic.providerSource, generic.checksumMode, generic.forcePathStyle],
    ["generic", "default", "when-required", true],
  );

  const r2 = resolveS3Profile({ endpoint: "https://acct.r2.cloudflarestorage.com" });
  assert.deepEqual([r2.provider, r2.providerSource, r2.checksumMode], [
    "r2",
    "endpoint",
    "when-required",
  ]);

  const tigris = resolveS3Profile({ endpoint: "https://fly.storage.tigris.dev" });
  assert.equal(tigris.tigrisConsistent, true);
  assert.equal(tigris.requireContentMD5, false);

  const gcs = resolveS3Profile({ provider: "gcs", endpoint: GCS_ENDPOINT });
  assert.equal(gcs.signAcceptEncoding, false);
  assert.equal(gcs.batchDelete, false);
  assert.equal(gcs.providerSource, "config");

  const overridden = resolveS3Profile({
    provider: "r2",
    checksumMode: "when-supported",
    signPayload: false,
    concurrency: 6,
    tigrisConsistent: true,
  });
  assert.deepEqual(
    [
      overridden.checksumMode,
      overridden.signPayload,
      overridden.concurrency,
      overridden.tigrisConsistent,
    ],
    ["when-supported", false, 6, true],
  );
  assert.throws(() => resolveS3Profile({ concurrency: 0 }), RangeError);
});

Deno.test("profiles: URLs and config keys, Litestream's spellings included", () => {
  const gs = parseReplicaURL("gs://my-bucket/app/db");
  assert.equal(gs.type, "s3");
  const gsSpec = gs as S3Spec;
  assert.deepEqual(
    [gsSpec.bucket, gsSpec.path, gsSpec.provider, gsSpec.endpoint, gsSpec.forcePathStyle],
    ["my-bucket", "app/db", "gcs", GCS_ENDPOINT, true],
  );
  assert.equal(new S3ReplicaClient(gsSpec).location, "gs://my-bucket/app/db");

  const url = parseReplicaURL(
    "s3://b/p?endpoint=http://127.0.0.1:9000&provider=minio&signPayload=false" +
      "&require-content-md5=false&checksum-mode=when-supported&concurrency=4&partSize=6291456" +
      "&tigris-consistent=true&sign-accept-encoding=false",
  ) as S3Spec;
  assert.deepEqual(
    [
      url.provider,
      url.signPayload,
      url.requireContentMD5,
      url.checksumMode,
      url.concurrency,
      url.partSize,
      url.tigrisConsistent,
      url.signAcceptEncoding,
    ],
    ["minio", false, false, "when-supported", 4, 6291456, true, false],
  );
  assert.throws(() => parseReplicaURL("s3://b/p?provider=nope"), ConfigError);
  assert.throws(() => parseReplicaURL("s3://b/p?concurrency=0"), ConfigError);
  assert.throws(() => parseReplicaURL("s3://b/p?checksum-mode=always"), ConfigError);

  const config = parseConfig(
    [
      "sign-payload: false # top-level default, as in Litestream",
      "dbs:",
      "  - path: /data/a.db",
      "    replica:",
      "      type: s3",
      "      bucket: backups",
      "      endpoint: https://fly.storage.tigris.dev",
      "      require-content-md5: true",
      "      concurrency: 3",
      "      part-size: 8MiB",
      "  - path: /data/b.db",
      "    replica:",
      "      url: s3://backups/b?endpoint=http://127.0.0.1:9000&sign-payload=true",
      "      provider: hetzner",
      "      checksum-mode: when-required",
      "  - path: /data/c.db",
      "    replica:",
      "      type: gs",
      "      bucket: gcs-bucket",
      "      path: c",
      "      sign-accept-encoding: true",
    ].join("\n"),
  );
  const [a, b, c] = config.dbs.map((db) => db.replica.spec as S3Spec);
  assert.deepEqual([a.signPayload, a.requireContentMD5, a.concurrency, a.partSize], [
    false,
    true,
    3,
    8 * 1024 * 1024,
  ]);
  assert.equal(new S3ReplicaClient(a).profile.provider, "tigris");
  assert.deepEqual([b.provider, b.signPayload, b.checksumMode], [
    "hetzner",
    true,
    "when-required",
  ]);
  assert.deepEqual([c.provider, c.endpoint, c.bucket, c.path, c.signAcceptEncoding], [
    "gcs",
    GCS_ENDPOINT,
    "gcs-bucket",
    "c",
    true,
  ]);
  assert.throws(
    () => parseConfig("dbs:\n  - path: /d.db\n    replica:\n      path: /r\n      provider: r2\n"),
    /only applies to s3 replicas/,
  );
});

/** Request heads (method line and headers, lower-cased names) seen between client and server. */
interface Sniffer {
  endpoint: string;
  heads: string[];
  close(): Promise<void>;
}

/** A TCP relay to `target` that records every request head passing through it. */
function startSniffer(target: string): Sniffer {
  const { port } = new URL(target);
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const heads: string[] = [];
  const conns = new Set<Deno.Conn>();
  const tasks: Promise<void>[] = [];
  const pipe = async (from: Deno.Conn, to: Deno.Conn, record: boolean) => {
    const buffer = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await from.read(buffer);
        if (n === null) break;
        if (record) {
          const text = new TextDecoder().decode(buffer.subarray(0, n));
          for (const head of text.split("\r\n\r\n")) {
            if (/^(GET|PUT|POST|DELETE|HEAD) /.test(head)) heads.push(head.toLowerCase());
          }
        }
        for (let at = 0; at < n;) at += await to.write(buffer.subarray(at, n));
      }
    } catch { /* closed */ }
    for (const conn of [from, to]) {
      try {
        conn.close();
      } catch { /* already closed */ }
    }
  };
  const accepting = (async () => {
    for await (const client of listener) {
      const upstream = await Deno.connect({ hostname: "127.0.0.1", port: Number(port) });
      conns.add(client).add(upstream);
      tasks.push(pipe(client, upstream, true), pipe(upstream, client, false));
    }
  })().catch(() => {});
  return {
    endpoint: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    heads,
    async close() {
      listener.close();
      for (const conn of conns) {
        try {
          conn.close();
        } catch { /* already closed */ }
      }
      await accepting;
      await Promise.all(tasks);
    },
  };
}

const FILE = { level: 0, minTXID: 1, maxTXID: 1 };

/** Writes, lists and deletes one file; returns the request heads of each operation. */
async function exercise(
  sniffer: Sniffer,
  spec: S3Spec,
): Promise<{ put: string; list: string; remove: string[] }> {
  const client = new S3ReplicaClient(spec);
  try {
    sniffer.heads.length = 0;
    await client.writeLTXFile(FILE, new Uint8Array(2048).fill(7), Date.now());
    const put = sniffer.heads.find((h) => h.startsWith("put "))!;
    sniffer.heads.length = 0;
    for await (const _ of client.ltxFiles(0)) { /* drain */ }
    const list = sniffer.heads.find((h) => h.startsWith("get "))!;
    sniffer.heads.length = 0;
    await client.deleteLTXFiles([FILE]);
    return { put, list, remove: [...sniffer.heads] };
  } finally {
    await client.close();
  }
}

function signedHeaders(head: string): string[] {
  return /signedheaders=([^,\s]+)/.exec(head)?.[1].split(";") ?? [];
}

Deno.test("profiles: request shaping on the wire (fauxqs)", async (t) => {
  const s3 = await startS3Server();
  const sniffer = startSniffer(s3.endpoint);
  try {
    await s3.createBucket("profiles");
    const spec = (extra: Partial<S3Spec>) => s3Spec(sniffer, "profiles", "db", extra);

    await t.step(
      "generic: no checksum headers; payload signed; Content-MD5 on deletes",
      async () => {
        const { put, remove } = await exercise(sniffer, spec({}));
        assert.doesNotMatch(put, /x-amz-checksum-/);
        assert.match(put, /x-amz-content-sha256: [0-9a-f]{64}/);
        assert.equal(remove.length, 1);
        assert.match(remove[0], /^post \/profiles\/\?delete/);
        assert.match(remove[0], /content-md5: /);
        assert.doesNotMatch(remove[0], /x-amz-checksum-/);
      },
    );

    await t.step("aws: CRC32 checksum header on uploads", async () => {
      const { put, remove } = await exercise(sniffer, spec({ provider: "aws" }));
      assert.match(put, /x-amz-checksum-crc32: /);
      assert.match(remove[0], /x-amz-checksum-crc32: /);
    });

    await t.step("sign-payload: false sends UNSIGNED-PAYLOAD", async () => {
      const { put } = await exercise(sniffer, spec({ signPayload: false }));
      assert.match(put, /x-amz-content-sha256: unsigned-payload/);
    });

    await t.step("tigris: consistency header on every request, no Content-MD5", async () => {
      const { put, list, remove } = await exercise(sniffer, spec({ provider: "tigris" }));
      for (const head of [put, list, ...remove]) assert.match(head, /x-tigris-consistent: true/);
      assert.doesNotMatch(remove[0], /content-md5/);
    });

    await t.step("gcs: single-object deletes; Accept-Encoding never signed", async () => {
      // Go's SDK sets Accept-Encoding before signing (Litestream #1394); simulate that here.
      const withAcceptEncoding = async (extra: Partial<S3Spec>) => {
        const client = new S3ReplicaClient(spec(extra));
        const { client: sdkClient } = await client.sdkClient();
        sdkClient.middlewareStack.add((next) => (args) => {
          (args.request as { headers: Record<string, string> }).headers["accept-encoding"] =
            "identity";
          return next(args);
        }, { step: "build", name: "testAcceptEncoding" });
        sniffer.heads.length = 0;
        for await (const _ of client.ltxFiles(0)) { /* drain */ }
        await client.close();
        return sniffer.heads[0];
      };
      const generic = await withAcceptEncoding({});
      assert.ok(signedHeaders(generic).includes("accept-encoding"), generic);
      const gcs = await withAcceptEncoding({ provider: "gcs" });
      assert.ok(signedHeaders(gcs).length > 0, gcs);
      assert.ok(!signedHeaders(gcs).includes("accept-encoding"), gcs);

      const { put, remove } = await exercise(sniffer, spec({ provider: "gcs" }));
      assert.doesNotMatch(put, /x-amz-checksum-/);
      assert.ok(!signedHeaders(put).includes("accept-encoding"));
      assert.equal(remove.length, 1);
      assert.match(
        remove[0],
        /^delete \/profiles\/db\/0000\/0000000000000001-0000000000000001\.ltx/,
      );
    });

    await t.step("HTTP 408 (Tigris load shedding) is retried", async () => {
      const proxy = startFaultProxy(s3.endpoint);
      try {
        let calls = 0;
        proxy.setFaults({
          failRate: 1,
          failWith: { status: 408, reason: "Request Timeout", code: "RequestCanceled" },
          random: () => (calls++ < 2 ? 0 : 1), // the first two connections get a 408
        });
        const client = new S3ReplicaClient(
          s3Spec({ endpoint: proxy.url }, "profiles", "db408", { readRetryDelayMs: 1 }),
        );
        try {
          await client.writeLTXFile(FILE, new Uint8Array(100).fill(1), Date.now());
          assert.equal(proxy.injected.failed, 2);
          const read = await new Response(await client.openLTXFile(FILE)).arrayBuffer();
          assert.deepEqual(new Uint8Array(read), new Uint8Array(100).fill(1));
        } finally {
          await client.close();
        }
        // Without retries the same answer fails the write: the proxy really answered 408.
        calls = 0;
        const once = new S3ReplicaClient(
          s3Spec({ endpoint: proxy.url }, "profiles", "db408", { maxAttempts: 1 }),
        );
        try {
          await assert.rejects(
            once.writeLTXFile(FILE, new Uint8Array(100), Date.now()),
            /HTTP 408|RequestCanceled/,
          );
        } finally {
          await once.close();
        }
      } finally {
        await proxy.close();
      }
    });
  } finally {
    await sniffer.close();
    await s3.stop();
  }
});
