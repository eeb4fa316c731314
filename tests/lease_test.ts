/**
 * The owner lease of object-store replicas (src/engine/_lease.ts): on Azurite, which enforces
 * conditional writes, a second replicator is refused, an expired lease of the same database is
 * taken over, `--takeover` takes a live one and the previous holder stops writing; through
 * real `sluice replicate` processes, the second is refused and a clean shutdown releases the
 * lease without opening the replica to another database. On fauxqs, which ignores conditional
 * headers, the probe says so and the plain marker semantics apply.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  ABSReplicaClient,
  type LeaseStore,
  type ReplicaClient,
  S3ReplicaClient,
} from "../src/replica/mod.ts";
import {
  claimOwnership,
  type HeldLease,
  leasedClient,
  LeaseLostError,
  type LeaseRecord,
  ReplicaInUseError,
  ReplicaLeasedError,
} from "../src/engine/mod.ts";
import { absSpec, type Azurite, AZURITE_ACCOUNT, startAzurite } from "./_azurite.ts";
import { ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import { FAUXQS_CREDENTIALS, s3Spec, startS3Server } from "./_s3.ts";
import { id, pattern } from "./_conformance.ts";
import { createDatabase, digest, runWriter, sluice, startReplicate, waitFor } from "./_sluice.ts";

Deno.env.set("LITESTREAM_AZURE_ACCOUNT_KEY", AZURITE_ACCOUNT.accountKey);

const host = (name: string, pid = 1) => ({ identity: { host: name, pid } });

async function leaseRecord(store: LeaseStore): Promise<LeaseRecord | undefined> {
  const current = await store.read();
  return current === undefined ? undefined : JSON.parse(current.text) as LeaseRecord;
}

Deno.test("lease on Azurite", async (t) => {
  const azurite = await startAzurite();
  try {
    await azurite.createContainer("lease");
    await t.step("refusals, expiry, --takeover, release", () => leaseProtocol(azurite));
    await t.step(
      "sluice replicate: the second is refused, stop releases",
      () => leaseThroughCLI(azurite),
    );
  } finally {
    await azurite.stop();
  }
});

async function leaseProtocol(azurite: Azurite): Promise<void> {
  const held: HeldLease[] = [];
  const clients: ReplicaClient[] = [];
  const client = (path: string) => {
    const c = new ABSReplicaClient(absSpec(azurite, "lease", path));
    clients.push(c);
    return c;
  };
  const claim = async (c: ReplicaClient, db: string, options = {}) => {
    const lease = await claimOwnership(c, db, { ttlMs: 1500, renewMs: 250, ...options });
    assert.ok(lease !== undefined);
    held.push(lease);
    return lease;
  };
  try {
    const a = client("db");
    assert.equal(await a.lease().enforcesConditions(), true);
    const leaseA = await claim(a, "/data/a.db", host("h1"));
    assert.equal(leaseA.mode, "lease");
    const store = a.lease();
    const first = await leaseRecord(store);
    assert.equal(first?.db, "/data/a.db");

    // Another database is refused; so is the same database on another host while it is live.
    const other = await claimOwnership(client("db"), "/data/b.db", host("h2")).then(
      () => assert.fail("another database must be refused"),
      (err) => err,
    );
    assert.ok(other instanceof ReplicaLeasedError && other instanceof ReplicaInUseError);
    assert.match(other.message, /belongs to database \/data\/a\.db on h1 \(pid 1\).*--takeover/);
    // Renewals keep it live past its first expiry.
    await waitFor("a renewal", async () => {
      const now = await leaseRecord(store);
      return now !== undefined && now.expires > first!.expires &&
        Date.now() > Date.parse(first!.expires);
    });
    const live = await claimOwnership(client("db"), "/data/a.db", host("h2")).then(
      () => assert.fail("a live lease must be refused"),
      (err) => err,
    );
    assert.ok(live instanceof ReplicaLeasedError, String(live));
    assert.match(live.message, /leased by \/data\/a\.db on h1 \(pid 1\) until .*--takeover/);

    // A holder that died (no renewals) is taken over by the same database once expired.
    const crashed = await claim(client("crash"), "/data/c.db", {
      ...host("h1"),
      renewMs: Infinity,
    });
    const crashStore = client("crash").lease();
    const expires = Date.parse((await leaseRecord(crashStore))!.expires);
    await assert.rejects(
      () => claimOwnership(client("crash"), "/data/c.db", host("h3")),
      ReplicaLeasedError,
    );
    await waitFor("the crashed lease to expire", () => Date.now() > expires + 50, 5_000);
    await claim(client("crash"), "/data/c.db", host("h3"));
    assert.equal((await leaseRecord(crashStore))?.host, "h3");
    assert.equal(crashed.lost, undefined); // it never renews again, so it never finds out

    // --takeover takes a live lease; the old holder's writes fail from its next renewal on.
    const guardedA = leasedClient(a, leaseA);
    await guardedA.writeLTXFile(id(0, 1), pattern(10), 0);
    const b = client("db");
    const leaseB = await claim(b, "/data/b.db", { ...host("h2"), takeover: true });
    assert.equal((await leaseRecord(store))?.db, "/data/b.db");
    await waitFor("the old holder to notice", () => leaseA.lost !== undefined);
    await assert.rejects(() => guardedA.writeLTXFile(id(0, 2), pattern(10), 0), LeaseLostError);
    assert.match(leaseA.lost!.message, /taken over by \/data\/b\.db on h2/);

    // Release ends the lease but keeps the owner: another database is still refused.
    await leasedClient(b, leaseB).close();
    const released = await leaseRecord(store);
    assert.ok(released !== undefined && Date.parse(released.expires) <= Date.now());
    await assert.rejects(
      () => claimOwnership(client("db"), "/data/a.db", host("h1")),
      ReplicaLeasedError,
    );
    await claim(client("db"), "/data/b.db", host("h9")); // its own database: at once
  } finally {
    for (const lease of held) await lease.release().catch(() => {});
    for (const c of clients) await c.close();
  }
}

async function leaseThroughCLI(azurite: Azurite): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sluice-lease-" });
  try {
    const url = `abs://${AZURITE_ACCOUNT.accountName}@lease/cli?endpoint=${
      encodeURIComponent(azurite.endpoint)
    }`;
    const client = new ABSReplicaClient(absSpec(azurite, "lease", "cli"));
    const store = client.lease();
    const dbA = join(dir, "a.db");
    const dbB = join(dir, "b.db");
    createDatabase(dbA);
    createDatabase(dbB);
    const first = startReplicate(dbA, url);
    try {
      await waitFor("the lease", async () => (await leaseRecord(store))?.db === dbA, 15_000);
      const second = await sluice("replicate", dbB, url);
      assert.equal(second.code, 1, second.stderr);
      assert.match(second.stderr, new RegExp(`belongs to database ${dbA}`));
      await runWriter("--db", dbA, "--rate", "500", "--count", "40");
    } finally {
      const stopped = await first.stop();
      assert.equal(stopped.code, 0, stopped.stderr);
    }
    const released = await leaseRecord(store);
    assert.ok(released !== undefined && Date.parse(released.expires) <= Date.now());
    const restored = join(dir, "restored.db");
    const result = await sluice("restore", "-o", restored, url);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(await digest(restored), await digest(dbA));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("lease on fauxqs (conditions ignored): detected, plain marker semantics", async () => {
  const server = await startS3Server({ buckets: ["sluice-lease"] });
  const clients: ReplicaClient[] = [];
  const client = () => {
    const c = new S3ReplicaClient(s3Spec(server, "sluice-lease", "db"));
    clients.push(c);
    return c;
  };
  try {
    assert.equal(await client().lease().enforcesConditions(), false);
    const a = await claimOwnership(client(), "/data/a.db", host("h1"));
    assert.equal(a?.mode, "marker");
    await assert.rejects(() => claimOwnership(client(), "/data/b.db", host("h2")), (err) => {
      assert.ok(err instanceof ReplicaInUseError);
      assert.match(err.message, /belongs to database \/data\/a\.db/);
      return true;
    });
    // The same database from anywhere, as with the directory marker; --takeover moves it.
    assert.equal((await claimOwnership(client(), "/data/a.db", host("h2")))?.mode, "marker");
    await claimOwnership(client(), "/data/b.db", { ...host("h2"), takeover: true });
    await assert.rejects(() => claimOwnership(client(), "/data/a.db"), ReplicaInUseError);
    // The probe left nothing behind but the marker.
    const raw = new S3Client({
      ...s3Spec(server, "sluice-lease", "db"),
      credentials: FAUXQS_CREDENTIALS,
    });
    const listed = await raw.send(new ListObjectsV2Command({ Bucket: "sluice-lease" }));
    raw.destroy();
    assert.deepEqual(listed.Contents?.map((o) => o.Key), ["db/sluice-lease.json"]);
  } finally {
    for (const c of clients) await c.close();
    await server.stop();
  }
});
