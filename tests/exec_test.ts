/**
 * The container use case and shutdown: `replicate` with `exec:` (config) or `--exec` runs the
 * application as a child and exits with the child's exit code after a final sync, so a restore
 * holds everything the child wrote; and SIGTERM while a writer commits loses no transaction that
 * was acknowledged before the signal.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { createDatabase, digest, restoreTo, ROOT, startReplicate, waitFor } from "./_sluice.ts";
import { readLockHolder } from "../src/engine/mod.ts";

/** A shell command running the writer for `count` transactions, then exiting with `code`. */
function writerThenExit(dbPath: string, count: number, code: number): string {
  const writer = [Deno.execPath(), "run", "-A", join(ROOT, "scripts", "writer.ts")];
  return `${writer.join(" ")} --db ${dbPath} --rate 0 --count ${count} >/dev/null && exit ${code}`;
}

/** The transaction numbers `n` in a database's table. */
function transactionNumbers(path: string): Set<number> {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    const rows = db.prepare("SELECT DISTINCT n FROM t").all() as Array<{ n: number }>;
    return new Set(rows.map((row) => row.n));
  } finally {
    db.close();
  }
}

Deno.test("exec: `exec:` in the config: sluice exits with the child's code after a final sync", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-exec-" });
  try {
    const dbPath = join(dir, "app.db");
    const replica = join(dir, "replica");
    createDatabase(dbPath);
    const config = join(dir, "sluice.yml");
    await Deno.writeTextFile(
      config,
      [
        "logging: { level: error }",
        `exec: ${JSON.stringify(writerThenExit(dbPath, 40, 7))}`,
        "dbs:",
        `  - path: ${dbPath}`,
        `    replica: { url: file://${replica} }`,
        "",
      ].join("\n"),
    );
    const replicate = startReplicate("-c", config);
    const { code, stderr } = await replicate.stop("SIGCONT"); // a no-op signal: just wait
    assert.equal(code, 7, stderr);
    const source = await digest(dbPath);
    assert.equal(source.maxN, 40);
    const restored = join(dir, "restored.db");
    await restoreTo(replica, restored);
    const copy = await digest(restored);
    assert.equal(copy.sha256, source.sha256, "the restore has every row the child wrote");
    assert.equal(copy.integrity, "ok");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("exec: --exec overrides and returns the child's code (DB_PATH REPLICA_URL form)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-exec-flag-" });
  try {
    const dbPath = join(dir, "app.db");
    const replica = join(dir, "replica");
    createDatabase(dbPath);
    const replicate = startReplicate(
      "--exec",
      writerThenExit(dbPath, 25, 3),
      dbPath,
      `file://${replica}`,
    );
    const { code, stderr } = await replicate.stop("SIGCONT");
    assert.equal(code, 3, stderr);
    const restored = join(dir, "restored.db");
    await restoreTo(replica, restored);
    assert.equal((await digest(restored)).sha256, (await digest(dbPath)).sha256);
    assert.equal((await digest(restored)).maxN, 25);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("exec: SIGTERM during writes loses no acknowledged transaction", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-sigterm-" });
  let writer: Deno.ChildProcess | undefined;
  try {
    const dbPath = join(dir, "app.db");
    const replica = join(dir, "replica");
    const acks = join(dir, "acks");
    createDatabase(dbPath);
    const replicate = startReplicate(dbPath, `file://${replica}`);
    // Attached (its signal handlers are in place by then): SIGTERM means a final sync.
    await waitFor(
      "sluice to take the meta dir",
      async () =>
        (await readLockHolder(join(dir, ".app.db-sluice")))?.pid === replicate.process.pid,
    );
    writer = new Deno.Command(Deno.execPath(), {
      args: [
        ...["run", "-A", join(ROOT, "scripts", "writer.ts"), "--db", dbPath],
        ...["--rate", "300", "--duration", "20", "--ack-file", acks],
        ...["--big-every", "50", "--big-pages", "300"],
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    const acknowledged = async () =>
      (await Deno.readTextFile(acks).catch(() => "")).split("\n").filter((l) => l !== "").map(
        Number,
      );
    await waitFor("writer under way", async () => (await acknowledged()).length >= 100, 15_000);
    // Everything acknowledged up to here must survive; the writer keeps committing meanwhile.
    const before = await acknowledged();
    const { code, stderr } = await replicate.stop("SIGTERM");
    assert.equal(code, 0, stderr);
    writer.kill("SIGTERM");
    await writer.status;
    writer = undefined;

    const restored = join(dir, "restored.db");
    await restoreTo(replica, restored);
    const got = transactionNumbers(restored);
    const lost = before.filter((n) => !got.has(n));
    assert.deepEqual(lost.slice(0, 10), [], `${lost.length} acknowledged transactions lost`);
    // A consistent copy: transaction numbers are exactly 1..m.
    const max = Math.max(...got);
    assert.equal(got.size, max, "no gap in the restored transactions");
    assert.ok(max >= Math.max(...before));
    assert.equal((await digest(restored)).integrity, "ok");
  } finally {
    if (writer) {
      try {
        writer.kill("SIGKILL");
      } catch { /* gone */ }
      await writer.status;
    }
    await Deno.remove(dir, { recursive: true });
  }
});
