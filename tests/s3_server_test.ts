/**
 * The local S3 server used by tests and the demo: loopback only, ready when returned,
 * restartable with its data, and gone without orphans when stopped.
 */

import assert from "node:assert/strict";
import { GetObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { startS3Server } from "./_s3.ts";

/** Local addresses (hex, as in /proc/net/tcp) of sockets listening on `port`. */
async function listenAddresses(port: number): Promise<string[]> {
  const addresses: string[] = [];
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text: string;
    try {
      text = await Deno.readTextFile(file);
    } catch {
      continue;
    }
    for (const line of text.trim().split("\n").slice(1)) {
      const [, local, , state] = line.trim().split(/\s+/);
      const [address, portHex] = local.split(":");
      if (state === "0A" && parseInt(portHex, 16) === port) addresses.push(address);
    }
  }
  return addresses;
}

function processExists(pid: number): boolean {
  try {
    Deno.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function rawClient(endpoint: string): S3Client {
  return new S3Client({
    endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
    maxAttempts: 1,
  });
}

Deno.test({
  name: "s3 server: loopback only, restart keeps data, stop leaves nothing behind",
  async fn() {
    const server = await startS3Server();
    const client = rawClient(server.endpoint);
    const firstPid = server.pid;
    try {
      assert.match(server.endpoint, /^http:\/\/127\.0\.0\.1:\d+$/);
      // 0100007F is 127.0.0.1: nothing listens on a wildcard or external address.
      assert.deepEqual(await listenAddresses(server.port), ["0100007F"]);

      await assert.rejects(() => server.createBucket("ab"), RangeError);
      await server.createBucket("s3-server-test");
      await client.send(
        new PutObjectCommand({
          Bucket: "s3-server-test",
          Key: "k",
          Body: "kept",
          Metadata: { a: "b" },
        }),
      );

      await server.kill();
      assert.ok(!processExists(firstPid));
      await server.restart();
      assert.notEqual(server.pid, firstPid);
      const object = await client.send(
        new GetObjectCommand({ Bucket: "s3-server-test", Key: "k" }),
      );
      assert.equal(await object.Body!.transformToString(), "kept");
      assert.deepEqual(object.Metadata, { a: "b" });
    } finally {
      client.destroy();
      await server.stop();
    }
    assert.ok(!processExists(server.pid));
    await assert.rejects(() => Deno.stat(server.dataDir), Deno.errors.NotFound);
    await server.stop(); // idempotent
  },
});

Deno.test({
  name: "s3 server CLI: prints the endpoint, serves, and exits cleanly on SIGTERM",
  async fn() {
    const script = new URL("../scripts/s3_server.ts", import.meta.url).pathname;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", script, "start", "--bucket", "cli-bucket"],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let output = "";
    while (!output.includes("\n")) {
      const { done, value } = await reader.read();
      if (done) break;
      output += value;
    }
    const endpoint = output.trim();
    assert.match(endpoint, /^http:\/\/127\.0\.0\.1:\d+$/);
    const client = rawClient(endpoint);
    try {
      await client.send(new PutObjectCommand({ Bucket: "cli-bucket", Key: "x", Body: "1" }));
    } finally {
      client.destroy();
    }
    const port = Number(new URL(endpoint).port);
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0);
    await reader.cancel();
    assert.deepEqual(await listenAddresses(port), []); // the server process is gone too
  },
});
