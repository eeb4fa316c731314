import assert from "node:assert/strict";
import { join } from "node:path";
import { FileReplicaClient } from "../src/replica/mod.ts";
import {
  changedPages,
  copyTree,
  fixture,
  snapshotPages,
  withTempDir,
  writeLTX,
} from "./_restore_helpers.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `sluice <args>` as a subprocess, as users and scripts do. */
async function sluice(...args: string[]): Promise<RunResult> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    stdin: "null",
    env: { SLUICE_CONFIG: "/nonexistent/sluice.yml", NO_COLOR: "1" },
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

const V1 = fixture("sqlite/v1.db");
const V2 = fixture("sqlite/v2.db");

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test("cli restore: latest from a replica URL, --json shape, then refusal of the existing output", async () => {
  await withTempDir(async (dir) => {
    const replica = join(dir, "replica");
    await copyTree(fixture("node-written-go-verified/rep-block"), replica);
    const out = join(dir, "out.db");

    const first = await sluice("restore", "--json", "-o", out, `file://${replica}`);
    assert.equal(first.code, 0, first.stderr);
    const json = JSON.parse(first.stdout);
    assert.deepEqual(Object.keys(json).sort(), [
      "durationMs",
      "files",
      "pageSize",
      "path",
      "size",
      "txid",
    ]);
    assert.equal(json.path, out);
    assert.equal(json.txid, "0000000000000002");
    assert.equal(json.pageSize, 4096);
    assert.equal(json.size, (await Deno.stat(V2)).size);
    assert.equal(typeof json.durationMs, "number");
    assert.deepEqual(
      json.files.map((
        f: { level: number; minTXID: string; maxTXID: string },
      ) => [f.level, f.minTXID, f.maxTXID]),
      [[9, "0000000000000001", "0000000000000001"], [0, "0000000000000002", "0000000000000002"]],
    );
    assert.deepEqual(await Deno.readFile(out), await Deno.readFile(V2));

    // The output now exists: refused, untouched.
    await Deno.writeTextFile(out, "keep me");
    const again = await sluice("restore", "-o", out, replica);
    assert.equal(again.code, 1);
    assert.match(
      again.stderr,
      new RegExp(`output ${out} exists; pass -o to restore elsewhere or remove it`),
    );
    assert.equal(await Deno.readTextFile(out), "keep me");

    // --if-db-not-exists turns that into a no-op.
    const skip = await sluice("restore", "--if-db-not-exists", "-o", out, replica);
    assert.equal(skip.code, 0, skip.stderr);
    assert.match(skip.stdout, /exists; nothing restored/);
    assert.equal(await Deno.readTextFile(out), "keep me");

    // A leftover -wal next to a missing output is refused too.
    const other = join(dir, "other.db");
    await Deno.writeTextFile(`${other}-wal`, "stale");
    const stale = await sluice("restore", "-o", other, replica);
    assert.equal(stale.code, 1);
    assert.match(stale.stderr, /other\.db-wal/);
    assert.equal(await exists(other), false);
  });
});

Deno.test("cli restore: --txid, --timestamp, --integrity-check and usage errors", async () => {
  await withTempDir(async (dir) => {
    const replica = join(dir, "replica");
    const client = new FileReplicaClient(replica);
    const v1 = await Deno.readFile(V1);
    const v2 = await Deno.readFile(V2);
    const t1 = Date.parse("2026-01-02T03:04:05.100Z");
    const t2 = Date.parse("2026-01-02T03:04:06.200Z");
    await writeLTX(client, 0, {
      minTXID: 1,
      maxTXID: 1,
      pageSize: 4096,
      commit: v1.byteLength / 4096,
      timestamp: t1,
    }, snapshotPages(v1, 4096));
    await writeLTX(client, 0, {
      minTXID: 2,
      maxTXID: 2,
      pageSize: 4096,
      commit: v2.byteLength / 4096,
      timestamp: t2,
    }, changedPages(v1, v2, 4096));

    const byTXID = await sluice(
      "restore",
      "--txid",
      "0000000000000001",
      "--integrity-check",
      "full",
      "-o",
      join(dir, "a.db"),
      replica,
    );
    assert.equal(byTXID.code, 0, byTXID.stderr);
    assert.deepEqual(await Deno.readFile(join(dir, "a.db")), v1);

    // Strictly before t2: state 1; one millisecond after t2: state 2.
    const before = await sluice(
      "restore",
      "--timestamp",
      "2026-01-02T03:04:06.200Z",
      "-o",
      join(dir, "b.db"),
      replica,
    );
    assert.equal(before.code, 0, before.stderr);
    assert.deepEqual(await Deno.readFile(join(dir, "b.db")), v1);
    const after = await sluice(
      "restore",
      "--timestamp",
      "2026-01-02T04:04:06.201+01:00",
      "-o",
      join(dir, "c.db"),
      replica,
    );
    assert.equal(after.code, 0, after.stderr);
    assert.deepEqual(await Deno.readFile(join(dir, "c.db")), v2);

    const tooEarly = await sluice(
      "restore",
      "--timestamp",
      "2026-01-02T03:04:05Z",
      "-o",
      join(dir, "d.db"),
      replica,
    );
    assert.equal(tooEarly.code, 1);
    assert.match(tooEarly.stderr, /no restore point/);
    const missing = await sluice(
      "restore",
      "--txid",
      "0000000000000009",
      "-o",
      join(dir, "d.db"),
      replica,
    );
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /TXID 0000000000000009 is not available/);
    assert.equal(await exists(join(dir, "d.db")), false);

    for (
      const args of [
        ["--txid", "12", "-o", join(dir, "e.db"), replica],
        [
          "--txid",
          "0000000000000001",
          "--timestamp",
          "2026-01-02T03:04:05Z",
          "-o",
          join(dir, "e.db"),
          replica,
        ],
        ["--integrity-check", "sometimes", "-o", join(dir, "e.db"), replica],
        [`file://${replica}`],
        [replica],
        [],
      ]
    ) {
      const result = await sluice("restore", ...args);
      assert.equal(result.code, 2, `${args.join(" ")}: ${result.stderr}`);
      assert.equal(result.stderr.trim().split("\n").length, 1, result.stderr);
    }
    assert.equal(await exists(join(dir, "e.db")), false);
  });
});

Deno.test("cli restore: --if-replica-exists on an empty replica; a configured DB_PATH", async () => {
  await withTempDir(async (dir) => {
    const empty = join(dir, "empty");
    const none = await sluice("restore", "-o", join(dir, "x.db"), empty);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /no backup found at/);
    const skip = await sluice(
      "restore",
      "--if-replica-exists",
      "--json",
      "-o",
      join(dir, "x.db"),
      empty,
    );
    assert.equal(skip.code, 0, skip.stderr);
    assert.equal(JSON.parse(skip.stdout).skipped, "no backup");
    assert.equal(await exists(join(dir, "x.db")), false);

    const replica = join(dir, "replica");
    await copyTree(fixture("node-written-go-verified/rep-l1"), replica);
    const dbPath = join(dir, "app.db");
    const config = join(dir, "sluice.yml");
    await Deno.writeTextFile(
      config,
      `dbs:\n  - path: ${dbPath}\n    replica:\n      url: file://${replica}\n`,
    );

    const restored = await sluice("restore", "-c", config, dbPath);
    assert.equal(restored.code, 0, restored.stderr);
    assert.deepEqual(await Deno.readFile(dbPath), await Deno.readFile(fixture("sqlite/v3.db")));
    assert.match(restored.stdout, /restored .*app\.db to TXID 0000000000000003/);

    const refused = await sluice("restore", "-c", config, dbPath);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /exists; pass -o/);

    const elsewhere = await sluice(
      "restore",
      "-c",
      config,
      "--txid",
      "0000000000000002",
      "-o",
      join(dir, "v2.db"),
      dbPath,
    );
    assert.equal(elsewhere.code, 0, elsewhere.stderr);
    assert.deepEqual(await Deno.readFile(join(dir, "v2.db")), await Deno.readFile(V2));

    const unknown = await sluice("restore", "-c", config, join(dir, "unknown.db"));
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /not in config/);
  });
});

Deno.test("cli ltx: table and JSON listings, per level", async () => {
  await withTempDir(async (dir) => {
    const replica = join(dir, "replica");
    await copyTree(fixture("node-written-go-verified/rep-block"), replica);
    const client = new FileReplicaClient(replica);
    const listed = [];
    for (const level of [0, 9]) for await (const info of client.ltxFiles(level)) listed.push(info);

    const json = await sluice("ltx", "--json", `file://${replica}`);
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(
      JSON.parse(json.stdout),
      listed.map((f) => ({
        level: f.level,
        minTXID: f.minTXID.toString(16).padStart(16, "0"),
        maxTXID: f.maxTXID.toString(16).padStart(16, "0"),
        size: f.size,
        created: f.createdAt.toISOString(),
      })),
    );

    const table = await sluice("ltx", replica);
    assert.equal(table.code, 0, table.stderr);
    const lines = table.stdout.trimEnd().split("\n");
    assert.match(lines[0], /^LEVEL\s+MIN_TXID\s+MAX_TXID\s+SIZE\s+CREATED$/);
    assert.equal(lines.length, 1 + listed.length);
    assert.deepEqual(lines[1].trim().split(/ +/).slice(0, 4), [
      "0",
      "0000000000000001",
      "0000000000000001",
      "27605",
    ]);
    assert.match(lines[1], / \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    // Columns line up under their titles.
    for (const line of lines.slice(1)) {
      assert.equal(line.indexOf("00000000000000"), lines[0].indexOf("MIN_TXID"));
      assert.equal(line.search(/\d{4}-\d\d-/), lines[0].indexOf("CREATED"));
      const sizeEnd = lines[0].indexOf("SIZE") + "SIZE".length; // right-aligned
      assert.match(line.slice(0, sizeEnd), /\d$/);
      assert.equal(line[sizeEnd], " ");
    }

    const level9 = await sluice("ltx", "--level", "9", "--json", replica);
    assert.deepEqual(JSON.parse(level9.stdout).map((f: { level: number }) => f.level), [9]);
    const bad = await sluice("ltx", "--level", "10", replica);
    assert.equal(bad.code, 2);
  });
});
