/**
 * A new tenant's attach (src/engine/attach.ts) takes shortcuts a burst of a thousand pays for
 * a thousand times: its directory replica, not there yet, is created and known empty (no marker
 * read, no temp-file sweep, no level listing), and SQLite's `-wal` and `-shm` are created off the
 * event loop before its first read (src/engine/db.ts). Each shortcut must keep the guarantees of
 * the long way: one database per replica, an existing replica continued, the first snapshot
 * complete, and the files SQLite creates as it would create them.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { createDatabase, digest, restoreTo } from "./_sluice.ts";
import {
  attachDatabase,
  type Attachment,
  detachDatabase,
  lockMetaDir,
  ReplicaInUseError,
} from "../src/engine/mod.ts";
import {
  FileReplicaClient,
  type ListOptions,
  type LTXFileInfo,
  OWNER_MARKER_NAME,
  type OwnerMarker,
} from "../src/replica/mod.ts";

/** A directory replica that counts the calls a new replica's attach should not make. */
class CountingClient extends FileReplicaClient {
  listings = 0;
  sweeps = 0;
  markerReads = 0;

  override ltxFiles(level: number, options?: ListOptions): AsyncIterable<LTXFileInfo> {
    this.listings++;
    return super.ltxFiles(level, options);
  }

  override removeTempFiles(): Promise<void> {
    this.sweeps++;
    return super.removeTempFiles();
  }

  override ownerMarker(): OwnerMarker {
    const marker = super.ownerMarker();
    return {
      path: marker.path,
      read: () => {
        this.markerReads++;
        return marker.read();
      },
      createExclusive: (text) => marker.createExclusive(text),
    };
  }
}

function attach(path: string, client: FileReplicaClient): Promise<Attachment> {
  const metaDir = `${path}-meta`;
  return attachDatabase(
    { path, metaDir, createClient: () => client },
    { lock: () => lockMetaDir(metaDir, { command: "replicate" }) },
  );
}

function insertRows(path: string, from: number, count: number): void {
  const db = new DatabaseSync(path);
  try {
    db.exec("PRAGMA busy_timeout = 5000");
    const insert = db.prepare("INSERT INTO t (n, payload) VALUES (?, randomblob(300))");
    for (let n = from; n < from + count; n++) insert.run(n);
  } finally {
    db.close();
  }
}

/** Syncs and uploads until the replica holds every local L0 file. */
async function ship(attachment: Attachment): Promise<void> {
  await attachment.db.sync();
  await attachment.replica.upload(attachment.db.txid);
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sluice-attach-new-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("attach: a new database's new directory replica is claimed without a read or a listing, and its first snapshot restores", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "a.db");
    createDatabase(path);
    insertRows(path, 0, 200);
    // The application's last close removed the WAL: the open creates it (and the -shm).
    Deno.chmodSync(path, 0o640);
    assert.throws(() => Deno.statSync(`${path}-wal`), Deno.errors.NotFound);
    const replicaDir = join(dir, "replicas", "a"); // its parent is missing too
    const client = new CountingClient(replicaDir);

    const attachment = await attach(path, client);
    try {
      assert.deepEqual(
        { listings: client.listings, sweeps: client.sweeps, markerReads: client.markerReads },
        { listings: 0, sweeps: 0, markerReads: 0 },
      );
      assert.equal(attachment.replica.knownPosition, 0);
      const owner = JSON.parse(await Deno.readTextFile(join(replicaDir, OWNER_MARKER_NAME)));
      assert.equal(owner.db, path);
      assert.ok(Deno.statSync(join(replicaDir, "ltx", "0")).isDirectory);
      // SQLite's files beside the database, with its permissions.
      for (const suffix of ["-wal", "-shm"]) {
        assert.equal(Deno.statSync(path + suffix).mode! & 0o777, 0o640, suffix);
      }

      await ship(attachment);
      assert.equal(attachment.db.txid, 1);
      // The first upload linked the local L0 file into the level created with the replica.
      const id = { level: 0, minTXID: 1, maxTXID: 1 };
      assert.equal(
        Deno.statSync(client.filePath(id)).ino,
        Deno.statSync(attachment.db.local.filePath(id)).ino,
      );
      // The application goes on writing; the next file follows the snapshot.
      insertRows(path, 200, 50);
      await ship(attachment);
      assert.equal(attachment.db.txid, 2);
    } finally {
      await detachDatabase(attachment);
    }
    const out = join(dir, "restored.db");
    await restoreTo(replicaDir, out);
    assert.deepEqual(await digest(out), await digest(path));

    // Attached again (local history now): the usual way, marker read and replica listed.
    const again = new CountingClient(replicaDir);
    const second = await attach(path, again);
    try {
      assert.equal(again.markerReads, 1);
      assert.equal(again.sweeps, 1);
      assert.ok(again.listings >= 1);
      assert.equal(second.replica.knownPosition, 2);
    } finally {
      await detachDatabase(second);
    }
  });
});

Deno.test("attach: two new databases racing for one new replica: one claims it, the other is refused", async () => {
  await withDir(async (dir) => {
    for (let round = 0; round < 6; round++) {
      const paths = ["a", "b"].map((name) => join(dir, `${name}${round}.db`));
      for (const path of paths) createDatabase(path);
      const replicaDir = join(dir, `replica${round}`);
      const outcomes = await Promise.allSettled(
        (round % 2 ? [...paths].reverse() : paths).map((path) =>
          attach(path, new FileReplicaClient(replicaDir))
        ),
      );
      const attached = outcomes.flatMap((o) => o.status === "fulfilled" ? [o.value] : []);
      const refused = outcomes.flatMap((o) => o.status === "rejected" ? [o.reason] : []);
      try {
        assert.equal(attached.length, 1, `round ${round}: ${refused.join("; ")}`);
        assert.ok(refused[0] instanceof ReplicaInUseError, String(refused[0]));
        const owner = JSON.parse(await Deno.readTextFile(join(replicaDir, OWNER_MARKER_NAME)));
        assert.equal(owner.db, attached[0].db.path);
      } finally {
        for (const attachment of attached) await detachDatabase(attachment);
      }
    }
  });
});

Deno.test("attach: a database without local history and an existing replica continues its TXIDs", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "a.db");
    createDatabase(path);
    insertRows(path, 0, 100);
    const replicaDir = join(dir, "replica");
    const first = await attach(path, new FileReplicaClient(replicaDir));
    try {
      await ship(first);
      insertRows(path, 100, 10);
      await ship(first);
      assert.equal(first.db.txid, 2);
    } finally {
      await detachDatabase(first);
    }
    // The meta directory is lost, and with it the marker too (a replica Litestream wrote).
    await Deno.remove(`${path}-meta`, { recursive: true });
    await Deno.remove(join(replicaDir, OWNER_MARKER_NAME));
    insertRows(path, 110, 10);

    const client = new CountingClient(replicaDir);
    const second = await attach(path, client);
    try {
      assert.equal(client.markerReads, 1); // the replica was not new: read, then created
      assert.equal(second.replica.knownPosition, 2);
      await ship(second);
      assert.equal(second.db.txid, 3); // a snapshot continuing the replica's sequence
    } finally {
      await detachDatabase(second);
    }
    const out = join(dir, "restored.db");
    await restoreTo(replicaDir, out);
    assert.deepEqual(await digest(out), await digest(path));
  });
});

Deno.test("file replica: the owner marker is created in a replica directory that is missing", async () => {
  await withDir(async (dir) => {
    const marker = new FileReplicaClient(join(dir, "x", "y")).ownerMarker();
    assert.equal(await marker.read(), undefined);
    assert.equal(await marker.createExclusive("first\n"), true);
    assert.equal(await marker.createExclusive("second\n"), false);
    assert.equal(await marker.read(), "first\n");
    assert.deepEqual([...Deno.readDirSync(join(dir, "x", "y"))].map((e) => e.name), [
      OWNER_MARKER_NAME,
    ]);
  });
});
