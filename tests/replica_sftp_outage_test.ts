/**
 * The SFTP client through an outage (Debian's sshd behind tests/_proxy.ts): a server that
 * closes connections before login, and a connection cut in the middle of a write, each end
 * the operation (an error, or a retry on a new connection) instead of leaving it waiting
 * forever. Both once froze `sluice replicate` for good (found by the chaos storage campaign).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ReplicaError, SFTPReplicaClient } from "../src/replica/mod.ts";
import { id, list, pattern, readAll } from "./_conformance.ts";
import { startFaultProxy } from "./_proxy.ts";
import { sshdUnavailable, startSshd } from "./_sshd.ts";

const unavailable = sshdUnavailable();

/** `promise`, or a rejection naming `what` when it has not settled within `ms`. */
async function within<T>(what: string, ms: number, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hung = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} still pending after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, hung]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test({
  name: "sftp client: connections closed before login or cut mid-write never hang an operation",
  ignore: unavailable !== undefined,
  async fn() {
    const server = await startSshd();
    const proxy = startFaultProxy(`http://${server.host}:${server.port}`);
    const spec = {
      host: `127.0.0.1:${proxy.port}`,
      user: server.user,
      keyPath: server.userKeyPath,
      hostKey: server.hostKeyLine,
      path: join(server.dataDir, "outage"),
      retryDelayMs: 20,
    };
    const client = new SFTPReplicaClient(spec);
    try {
      // The connection cut at every stage of the key exchange, login and subsystem start
      // (after 100, 300, … bytes from the server), one attempt each: every listing settles.
      for (let budget = 100; budget <= 2900; budget += 200) {
        const once = new SFTPReplicaClient({ ...spec, attempts: 1 });
        proxy.cutResponses(budget, 1);
        await within(`a listing cut after ${budget} bytes`, 10_000, list(once, 0).catch(() => []));
        proxy.reset();
        await once.close();
      }

      // Every connection closed at once, before the server's banner: each attempt fails.
      proxy.setFaults({ down: true });
      await assert.rejects(
        within("a listing while connections are refused", 15_000, list(client, 0)),
        ReplicaError,
      );
      proxy.setFaults({});
      assert.deepEqual(
        await within("a listing once the server is back", 15_000, list(client, 0)),
        [],
      );

      // A slow link, so the 4 MiB write is surely in flight when every connection is cut:
      // the write is retried on a new connection and the file arrives whole.
      const body = pattern(4 * 1024 * 1024, 7);
      proxy.setFaults({ delayMs: 20 });
      const writing = client.writeLTXFile(id(0, 1), body, Date.now());
      await new Promise((resolve) => setTimeout(resolve, 500));
      proxy.dropAll();
      proxy.setFaults({});
      await within("a write whose connection was cut", 30_000, writing);
      const read = await within("a read", 15_000, client.openLTXFile(id(0, 1)).then(readAll));
      assert.deepEqual(read, body);
      assert.deepEqual((await list(client, 0)).map((f) => f.size), [body.length]);
    } finally {
      await client.close();
      await proxy.close();
      await server.stop();
    }
  },
});
