/** Tests of scripts/writer.ts, the load generator other tests and benchmarks rely on. */

import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { DatabaseSync } from "node:sqlite";

const WRITER = fileURLToPath(new URL("../scripts/writer.ts", import.meta.url));

interface Summary {
  committed: number;
  busyErrors: number;
  lastId: number;
  checkpoints: number;
  checkpointsBusy: number;
}

function writer(args: string[]) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", WRITER, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
}

function summaryOf(output: Deno.CommandOutput): Summary {
  const stderr = new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 0, stderr);
  return JSON.parse(new TextDecoder().decode(output.stdout).trim());
}

async function acked(path: string): Promise<number[]> {
  return (await Deno.readTextFile(path)).trim().split("\n").map(Number);
}

/** Transaction numbers in the database, and its integrity. */
function inspect(path: string) {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    const ns = db.prepare("SELECT DISTINCT n FROM t ORDER BY n").all().map((r) => Number(r.n));
    const pages = Number(
      (db.prepare("PRAGMA page_count").get() as { page_count: number })
        .page_count,
    );
    const integrity = (db.prepare("PRAGMA integrity_check").get() as { integrity_check: string })
      .integrity_check;
    return { ns, pages, integrity };
  } finally {
    db.close();
  }
}

const range = (from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i);

Deno.test("writer: --count with big transactions and checkpoints; acks every commit", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-writer-" });
  try {
    const db = join(dir, "w.db");
    const ack = join(dir, "ack");
    const args = ["--db", db, "--count", "30", "--big-every", "10", "--big-pages", "60"];
    const summary = summaryOf(
      await writer([
        ...args,
        "--checkpoint-mode",
        "random",
        "--checkpoint-every",
        "7",
        "--ack-file",
        ack,
      ]).output(),
    );
    assert.equal(summary.committed, 30);
    assert.equal(summary.lastId, 30);
    assert.equal(summary.checkpoints, 4);
    assert.deepEqual(await acked(ack), range(1, 30));
    const first = inspect(db);
    assert.equal(first.integrity, "ok");
    assert.deepEqual(first.ns, range(1, 30));
    assert.ok(first.pages > 3 * 60, `${first.pages} pages`);

    // A second run continues the sequence in the same database.
    const again = summaryOf(await writer([...args, "--ack-file", ack]).output());
    assert.equal(again.lastId, 60);
    assert.deepEqual(await acked(ack), range(1, 60));
    assert.deepEqual(inspect(db).ns, range(1, 60));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writer: SIGTERM ends the run cleanly after a committed transaction", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-writer-" });
  try {
    const db = join(dir, "w.db");
    const ack = join(dir, "ack");
    const child = writer(["--db", db, "--rate", "200", "--ack-file", ack]).spawn();
    // Wait until it is writing, then stop it.
    for (let i = 0; i < 200; i++) {
      const size = await Deno.stat(ack).then((s) => s.size, () => 0);
      if (size > 20) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    child.kill("SIGTERM");
    const summary = summaryOf(await child.output());
    assert.ok(summary.committed > 5, `${summary.committed} committed`);
    assert.deepEqual(await acked(ack), range(1, summary.lastId));
    const state = inspect(db);
    assert.equal(state.integrity, "ok");
    assert.deepEqual(state.ns, range(1, summary.lastId));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writer: concurrent writers share one sequence and count busy errors", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-writer-" });
  try {
    const db = join(dir, "w.db");
    const acks = [join(dir, "ack1"), join(dir, "ack2")];
    // Create the database first so the two runs do not race to create the table.
    summaryOf(await writer(["--db", db, "--count", "1"]).output());
    const runs = acks.map((ack, i) =>
      writer([
        "--db",
        db,
        "--duration",
        "0.8",
        "--busy-timeout",
        "0",
        "--seed",
        String(i + 7),
        "--ack-file",
        ack,
      ]).output()
    );
    const summaries = (await Promise.all(runs)).map(summaryOf);
    const total = summaries[0].committed + summaries[1].committed;
    assert.ok(total > 100, `${total} committed`);
    const all = [...await acked(acks[0]), ...await acked(acks[1])].sort((a, b) => a - b);
    assert.deepEqual(all, range(2, total + 1));
    assert.deepEqual(inspect(db).ns, range(1, total + 1));
    // With busy_timeout 0 the two processes collide; each collision is counted and retried.
    assert.ok(summaries[0].busyErrors + summaries[1].busyErrors > 0, JSON.stringify(summaries));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writer: bad arguments exit 2", async () => {
  const output = await writer(["--count", "1"]).output();
  assert.equal(output.code, 2);
  assert.match(new TextDecoder().decode(output.stderr), /--db PATH is required/);
  const mode = await writer(["--db", "x.db", "--checkpoint-mode", "sometimes"]).output();
  assert.equal(mode.code, 2);
});
