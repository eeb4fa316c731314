/**
 * Restores survive retention: a file chosen by the restore plan that is deleted before it is
 * read (compaction and retention on the primary) makes the restore plan again from a fresh
 * listing instead of failing.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  FileReplicaClient,
  type ListOptions,
  type LTXFileId,
  type LTXFileInfo,
  NotFoundError,
  type OpenOptions,
  type ReplicaClient,
} from "../src/replica/mod.ts";
import { calcRestorePlan, restore } from "../src/restore/mod.ts";
import {
  createDatabase,
  digest,
  replicaTXID,
  ROOT,
  sluice,
  startReplicate,
  waitFor,
} from "./_sluice.ts";

/**
 * A real file replica whose reads go through `openLTXFile` (no local-path shortcut), with a
 * hook that runs before each open.
 */
class HookedClient implements ReplicaClient {
  readonly type = "file";
  readonly location: string;
  readonly inner: FileReplicaClient;
  beforeOpen: (file: LTXFileId) => Promise<void> = () => Promise.resolve();

  constructor(inner: FileReplicaClient) {
    this.inner = inner;
    this.location = inner.location;
  }
  ltxFiles(level: number, options?: ListOptions): AsyncIterable<LTXFileInfo> {
    return this.inner.ltxFiles(level, options);
  }
  async openLTXFile(file: LTXFileId, options?: OpenOptions) {
    await this.beforeOpen(file);
    return await this.inner.openLTXFile(file, options);
  }
  writeLTXFile(): Promise<LTXFileInfo> {
    throw new Error("read-only in this test");
  }
  deleteLTXFiles(): Promise<void> {
    throw new Error("read-only in this test");
  }
  deleteAll(): Promise<void> {
    throw new Error("read-only in this test");
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

async function runWriter(db: string, ...args: string[]): Promise<void> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "scripts", "writer.ts"), "--db", db, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
}

Deno.test("restore: a planned snapshot deleted before it is opened makes a fresh plan", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-replan-" });
  try {
    const db = join(dir, "app.db");
    const replicaDir = join(dir, "replica");
    const url = `file://${replicaDir}`;
    createDatabase(db);
    // L0 files 1…k, then a level-9 snapshot, then more L0 files.
    let replicate = startReplicate(db, url);
    await runWriter(db, "--count", "30", "--rate", "0");
    await waitFor("level 0", async () =>
      (await Array.fromAsync(
        new FileReplicaClient(replicaDir).ltxFiles(0),
      )).length > 0);
    assert.equal((await replicate.stop()).code, 0);
    const snap = await sluice("snapshot", db, url);
    assert.equal(snap.code, 0, snap.stderr);
    const snapshotTXID = await replicaTXID(replicaDir);
    replicate = startReplicate(db, url);
    await runWriter(db, "--count", "20", "--rate", "0");
    await waitFor("new level-0 files", async () => await replicaTXID(replicaDir) > snapshotTXID);
    const stopped = await replicate.stop();
    assert.equal(stopped.code, 0, stopped.stderr);

    const client = new HookedClient(new FileReplicaClient(replicaDir));
    const plan = await calcRestorePlan(client);
    const snapshot = plan[0];
    assert.equal(snapshot.level, 9, "the plan starts with the snapshot");
    let deleted = 0;
    client.beforeOpen = async (file) => {
      if (file.level === 9 && deleted === 0) {
        deleted++;
        await Deno.remove(client.inner.filePath(file)); // retention, between plan and read
      }
    };
    const replans: string[] = [];
    const out = join(dir, "restored.db");
    const result = await restore(client, {
      outputPath: out,
      integrityCheck: "full",
      onReplan: (err) => replans.push(err.message),
    });
    assert.equal(deleted, 1);
    assert.equal(replans.length, 1);
    assert.ok(
      !result.files.some((f) =>
        f.level === 9 && f.minTXID === snapshot.minTXID && f.maxTXID === snapshot.maxTXID
      ),
      "the new plan does without the deleted snapshot",
    );
    const [restored, source] = [await digest(out), await digest(db)];
    assert.deepEqual(restored, source);
    assert.ok(!(await exists(`${out}.tmp`)));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("restore: re-plans are bounded; a file that keeps vanishing fails with NotFoundError", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-replan-bound-" });
  try {
    const db = join(dir, "app.db");
    const replicaDir = join(dir, "replica");
    createDatabase(db);
    const replicate = startReplicate(db, `file://${replicaDir}`);
    await runWriter(db, "--count", "5", "--rate", "0");
    await waitFor("level 0", async () =>
      (await Array.fromAsync(
        new FileReplicaClient(replicaDir).ltxFiles(0),
      )).length >= 1);
    assert.equal((await replicate.stop()).code, 0);
    const client = new HookedClient(new FileReplicaClient(replicaDir));
    let opens = 0;
    client.beforeOpen = () => {
      opens++;
      return Promise.reject(new NotFoundError("gone again"));
    };
    const out = join(dir, "restored.db");
    await assert.rejects(
      restore(client, { outputPath: out, maxReplans: 2 }),
      (err) => err instanceof NotFoundError,
    );
    assert.ok(opens >= 3, `${opens} opens for 1 plan + 2 re-plans`);
    assert.ok(!(await exists(out)) && !(await exists(`${out}.tmp`)), "nothing installed");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("restore: repeated restores while sluice compacts and applies retention all succeed", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-replan-live-" });
  try {
    const db = join(dir, "app.db");
    const replicaDir = join(dir, "replica");
    createDatabase(db);
    const config = join(dir, "sluice.yml");
    await Deno.writeTextFile(
      config,
      [
        "snapshot:",
        "  interval: 1s",
        "  retention: 1s",
        "levels:",
        "  - interval: 1s",
        "l0-retention: 200ms",
        "dbs:",
        `  - path: ${db}`,
        "    replica:",
        `      url: file://${replicaDir}`,
        "",
      ].join("\n"),
    );
    const replicate = startReplicate("-c", config);
    const writer = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        join(ROOT, "scripts", "writer.ts"),
        "--db",
        db,
        "--rate",
        "50",
        "--duration",
        "6",
      ],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    try {
      await waitFor("level 0", async () =>
        (await Array.fromAsync(
          new FileReplicaClient(replicaDir).ltxFiles(0),
        )).length > 0);
      // Each open waits a moment, so that compaction and retention run between plan and read.
      const client = new HookedClient(new FileReplicaClient(replicaDir));
      client.beforeOpen = () => new Promise((r) => setTimeout(r, 150));
      let restores = 0;
      let replans = 0;
      const writing = writer.status;
      let done = false;
      writing.then(() => done = true);
      while (!done) {
        const out = join(dir, `r${restores}.db`);
        await restore(client, {
          outputPath: out,
          integrityCheck: "quick",
          onReplan: () => replans++,
        });
        const d = await digest(out);
        assert.equal(d.integrity, "ok");
        assert.equal(d.distinctN, d.maxN, "every transaction 1…m, none torn");
        await Deno.remove(out);
        restores++;
      }
      assert.ok(restores >= 3, `${restores} restores`);
      assert.ok(replans >= 1, `no restore met a deleted file in ${restores} restores`);
    } finally {
      try {
        writer.kill("SIGKILL");
      } catch { /* done */ }
      await writer.status;
      await writer.stderr.cancel().catch(() => {});
      await replicate.stop("SIGKILL");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}
