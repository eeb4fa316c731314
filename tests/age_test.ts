/**
 * Client-side age encryption of replicas (issue 19), end to end with real processes: a python3
 * writer, `sluice replicate` / `snapshot` / `restore` / `ltx` from the CLI, a directory replica
 * and the fauxqs S3 emulator. Keys are generated with the `age-encryption` package itself.
 *
 * What must hold: every object written is an age file and none contains a plaintext marker the
 * database holds; compaction, snapshots and point-in-time restores work through the
 * encryption; a replica never mixes encrypted and plaintext files; bad keys are configuration
 * errors with `file:line`; a restore without (or with the wrong) identity fails in one line and
 * writes nothing.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { generateIdentity, identityToRecipient } from "age-encryption";
import { sluice, startReplicate, waitFor } from "./_sluice.ts";
import { FAUXQS_CREDENTIALS, s3Spec, startS3Server } from "./_s3.ts";
import {
  createReplicaClient,
  type ReplicaClient,
  type ReplicaSpec,
  SNAPSHOT_LEVEL,
} from "../src/replica/mod.ts";
import { restore } from "../src/restore/mod.ts";
import { ConfigError, loadConfig } from "../src/config/mod.ts";

Deno.env.set("AWS_ACCESS_KEY_ID", FAUXQS_CREDENTIALS.accessKeyId);
Deno.env.set("AWS_SECRET_ACCESS_KEY", FAUXQS_CREDENTIALS.secretAccessKey);
Deno.env.set("AWS_EC2_METADATA_DISABLED", "true");

/** A string every row holds: it must never be found in anything written to a replica. */
const MARKER = "PLAINTEXT-MARKER-5f1c0e7a";
const AGE_MAGIC = "age-encryption.org/v1";

const identity = await generateIdentity();
const recipient = await identityToRecipient(identity);
const otherIdentity = await generateIdentity();
// The config names the recipient through ${VAR}: the expansion applies to age keys too.
Deno.env.set("SLUICE_TEST_AGE_RECIPIENT", recipient);

/** Inserts `count` rows, one transaction each, from a python3 process. */
async function writeRows(db: string, from: number, count: number): Promise<void> {
  const script = [
    "import sqlite3, sys",
    "c = sqlite3.connect(sys.argv[1], timeout=5)",
    "c.execute('PRAGMA journal_mode=WAL')",
    "c.execute('CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, note TEXT)')",
    "c.commit()",
    "start, n, marker = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]",
    "for i in range(start, start + n):",
    "    c.execute('INSERT INTO t VALUES (?, ?)', (i, (marker + '-%d ' % i) * 8))",
    "    c.commit()",
    "c.close()",
  ].join("\n");
  const out = await new Deno.Command("python3", {
    args: ["-c", script, db, String(from), String(count), MARKER],
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`writer failed: ${new TextDecoder().decode(out.stderr)}`);
}

/** Row count and a hash of every row. */
function contents(path: string): { rows: number; sha: string; integrity: string } {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    const hash = createHash("sha256");
    let rows = 0;
    for (const row of db.prepare("SELECT id, note FROM t ORDER BY id").iterate()) {
      const { id, note } = row as { id: number; note: string };
      hash.update(`${id}:${note}\n`);
      rows++;
    }
    const integrity = (db.prepare("PRAGMA integrity_check").get() as { integrity_check: string })
      .integrity_check;
    return { rows, sha: hash.digest("hex"), integrity };
  } finally {
    db.close();
  }
}

function configText(dbPath: string, replica: string[], age: string[], levels = true): string {
  return [
    ...(levels
      ? [
        "snapshot:",
        "  interval: 1s",
        "  retention: 1h",
        "levels:",
        "  - interval: 1s",
        "  - interval: 1s",
        "l0-retention: 1h",
      ]
      : []),
    "dbs:",
    `  - path: ${dbPath}`,
    "    replica:",
    ...replica.map((line) => `      ${line}`),
    ...(age.length > 0 ? ["      age:", ...age.map((line) => `        ${line}`)] : []),
    "",
  ].join("\n");
}

const AGE_KEYS = ["recipients: [${SLUICE_TEST_AGE_RECIPIENT}]", "identity-files: [id.txt]"];

/** Every file of every level, raw (undecorated client). */
async function rawObjects(client: ReplicaClient): Promise<{ name: string; bytes: Uint8Array }[]> {
  const objects = [];
  for (let level = 0; level <= SNAPSHOT_LEVEL; level++) {
    for await (const file of client.ltxFiles(level)) {
      const bytes = new Uint8Array(
        await new Response(await client.openLTXFile(file)).arrayBuffer(),
      );
      objects.push({ name: `${level}/${file.minTXID}-${file.maxTXID}`, bytes });
    }
  }
  return objects;
}

function assertAllEncrypted(objects: { name: string; bytes: Uint8Array }[]): void {
  assert.ok(objects.length > 0);
  const decoder = new TextDecoder("latin1");
  for (const { name, bytes } of objects) {
    const text = decoder.decode(bytes);
    assert.ok(text.startsWith(AGE_MAGIC), `${name} is not an age file`);
    assert.ok(!text.includes(MARKER), `${name} holds the plaintext marker`);
  }
}

async function maxTXID(client: ReplicaClient, level: number): Promise<number> {
  let max = 0;
  for await (const file of client.ltxFiles(level)) max = Math.max(max, file.maxTXID);
  return max;
}

/**
 * The round trip shared by the directory and S3 cases: two phases of writes, compaction and
 * snapshots through the encryption, restores (latest, --txid, --timestamp) by real processes.
 */
async function roundTrip(dir: string, replica: string[], spec: ReplicaSpec, url: string) {
  const dbPath = join(dir, "app.db");
  await Deno.writeTextFile(join(dir, "id.txt"), `# test key\n${identity}\n`);
  const config = join(dir, "sluice.yml");
  await Deno.writeTextFile(config, configText(dbPath, replica, AGE_KEYS));
  await writeRows(dbPath, 1, 1);
  const plain = createReplicaClient(spec);
  const reader = createReplicaClient({ ...spec, age: { recipients: [], identities: [identity] } });
  const replicate = startReplicate("-c", config);
  let txidA = 0;
  let expectedA: ReturnType<typeof contents> | undefined;
  try {
    await writeRows(dbPath, 2, 99);
    // Phase A is on the replica once a restore of it holds all 100 rows.
    await waitFor("phase A on the replica", async () => {
      const out = join(dir, `probe-${Date.now()}.db`);
      try {
        const result = await restore(reader, { outputPath: out });
        txidA = result.txid;
        return contents(out).rows === 100;
      } catch {
        return false;
      } finally {
        await Deno.remove(out).catch(() => {});
      }
    }, 15_000);
    expectedA = contents(dbPath);
    await writeRows(dbPath, 101, 100);
    // Compaction (levels 1 and 2) reads and merges encrypted files; snapshots come after.
    await waitFor("compaction through level 2", async () => {
      const l0 = await maxTXID(plain, 0);
      return l0 > txidA && await maxTXID(plain, 2) === l0 &&
        await maxTXID(plain, SNAPSHOT_LEVEL) > txidA;
    }, 15_000);
  } finally {
    const stopped = await replicate.stop();
    assert.equal(stopped.code, 0, stopped.stderr);
  }
  const expected = contents(dbPath);
  assert.equal(expected.rows, 200);

  // Restores by real processes, side by side: the latest state by the config's identity file
  // and by URL with --age-identity; the state after phase A by TXID and by time (files created
  // strictly before the next L0 file).
  const files = await Array.fromAsync(plain.ltxFiles(0, { useMetadata: true }));
  const next = files.find((file) => file.minTXID === txidA + 1);
  assert.ok(next !== undefined, "no L0 file follows phase A");
  const id = join(dir, "id.txt");
  const txid = txidA.toString(16).padStart(16, "0");
  const outputs = ["latest", "by-url", "pit-txid", "pit-time"].map((name) =>
    join(dir, `${name}.db`)
  );
  const runs = await Promise.all([
    sluice("restore", "-c", config, "-o", outputs[0], dbPath),
    sluice("restore", "--age-identity", id, "-o", outputs[1], url),
    sluice("restore", "--age-identity", id, "--txid", txid, "-o", outputs[2], url),
    sluice(
      "restore",
      "--age-identity",
      id,
      "--timestamp",
      next.createdAt.toISOString(),
      "-o",
      outputs[3],
      url,
    ),
  ]);
  for (const run of runs) assert.equal(run.code, 0, run.stderr);
  assert.deepEqual(contents(outputs[0]), expected);
  assert.deepEqual(contents(outputs[1]), expected);
  assert.deepEqual(contents(outputs[2]), expectedA);
  assert.deepEqual(contents(outputs[3]), expectedA);
  return { plain, reader };
}

Deno.test("age: directory replica round trip: compaction, snapshots, point in time, no plaintext", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-age-" });
  try {
    const replicaDir = join(dir, "replica");
    const url = `file://${replicaDir}`;
    const spec: ReplicaSpec = { type: "file", path: replicaDir };
    const { plain, reader } = await roundTrip(dir, [`url: ${url}`], spec, url);
    assertAllEncrypted(await rawObjects(plain));
    // Every file on disk (temp files included) is checked, not only the listed ones.
    const decoder = new TextDecoder("latin1");
    for await (const path of walk(replicaDir)) {
      assert.ok(!decoder.decode(await Deno.readFile(path)).includes(MARKER), path);
    }
    await plain.close();
    await reader.close();

    // ltx without an identity: names, sizes and times, and a note that contents are encrypted.
    // Restore without the identity, or with another one: one line, nothing written.
    const out = join(dir, "denied.db");
    await Deno.writeTextFile(join(dir, "other.txt"), `${otherIdentity}\n`);
    const [ltx, without, wrong] = await Promise.all([
      sluice("ltx", url),
      sluice("restore", "-o", out, url),
      sluice("restore", "--age-identity", join(dir, "other.txt"), "-o", out, url),
    ]);
    assert.equal(ltx.code, 0, ltx.stderr);
    assert.match(ltx.stdout, /^LEVEL/);
    assert.match(ltx.stderr, /encrypted with age/);
    assert.equal(without.code, 1);
    assert.equal(without.stderr.trim().split("\n").length, 1, without.stderr);
    assert.match(without.stderr, /encrypted with age.*--age-identity/);
    assert.equal(wrong.code, 1);
    assert.equal(wrong.stderr.trim().split("\n").length, 1, wrong.stderr);
    assert.match(
      wrong.stderr,
      /\d\/[0-9a-f]{16}-[0-9a-f]{16}\.ltx .*none of the configured age identities/,
    );
    for (const name of ["denied.db", "denied.db.tmp"]) {
      await assert.rejects(Deno.stat(join(dir, name)), Deno.errors.NotFound);
    }
    for (const run of [without, wrong]) {
      assert.ok(!run.stderr.includes(identity) && !run.stderr.includes(otherIdentity));
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

async function* walk(dir: string): AsyncIterable<string> {
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) yield* walk(path);
    else if (entry.isFile) yield path;
  }
}

Deno.test("age: S3 replica round trip with compaction; no object holds plaintext", async () => {
  const server = await startS3Server({ buckets: ["age-test"] });
  const dir = await Deno.makeTempDir({ prefix: "sluice-age-s3-" });
  try {
    const spec: ReplicaSpec = { type: "s3", ...s3Spec(server, "age-test", "app") };
    const url = `s3://age-test/app?endpoint=${encodeURIComponent(server.endpoint)}` +
      `&region=us-east-1&force-path-style=true`;
    const replica = [
      "type: s3",
      "bucket: age-test",
      "path: app",
      "region: us-east-1",
      `endpoint: ${server.endpoint}`,
    ];
    const { plain, reader } = await roundTrip(dir, replica, spec, url);
    assertAllEncrypted(await rawObjects(plain));
    await plain.close();
    await reader.close();
  } finally {
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("age: a replica never mixes encrypted and plaintext files, either way", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-age-mixed-" });
  try {
    await Deno.writeTextFile(join(dir, "id.txt"), `${identity}\n`);
    const dbPath = join(dir, "app.db");
    await writeRows(dbPath, 1, 20);
    const plainReplica = join(dir, "plain");
    const sealed = join(dir, "sealed");
    const write = async (name: string, replica: string, age: string[]) => {
      const path = join(dir, name);
      await Deno.writeTextFile(path, configText(dbPath, [`url: file://${replica}`], age, false));
      return path;
    };
    const encrypting = await write("encrypting.yml", plainReplica, AGE_KEYS);
    const sealing = await write("sealing.yml", sealed, AGE_KEYS);
    const forgetful = await write("forgetful.yml", sealed, []); // age: removed by mistake

    const setup = await Promise.all([
      sluice("snapshot", dbPath, `file://${plainReplica}`),
      sluice("snapshot", "-c", sealing),
    ]);
    for (const run of setup) assert.equal(run.code, 0, run.stderr);
    const [intoPlain, intoSealed] = await Promise.all([
      sluice("snapshot", "-c", encrypting),
      sluice("snapshot", "-c", forgetful),
    ]);
    assert.equal(intoPlain.code, 1);
    assert.match(intoPlain.stderr, /holds plaintext LTX files; sluice will not add age-encrypted/);
    assert.equal(intoSealed.code, 1);
    assert.match(intoSealed.stderr, /holds age-encrypted files; sluice will not add plaintext/);

    for await (const path of walk(join(plainReplica, "ltx"))) {
      assert.ok(!new TextDecoder().decode(await Deno.readFile(path)).startsWith(AGE_MAGIC), path);
    }
    const client = createReplicaClient({ type: "file", path: sealed });
    assertAllEncrypted(await rawObjects(client));
    await client.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("age: bad keys are configuration errors with file:line, never shown", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-age-config-" });
  try {
    const dbPath = join(dir, "app.db");
    const replica = [`url: file://${join(dir, "replica")}`];
    const config = join(dir, "bad.yml");
    const badRecipient = "age1thisisnotavalidrecipientatallqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq";
    await Deno.writeTextFile(join(dir, "id.txt"), `${identity}\n`);
    const env = { SLUICE_TEST_AGE_RECIPIENT: recipient };

    // Through the CLI: exit 2, one line with file:line, the key not shown.
    await writeRows(dbPath, 1, 1);
    await Deno.writeTextFile(
      config,
      configText(dbPath, replica, [
        "recipients:",
        `  - ${recipient}`,
        `  - ${badRecipient}`,
        "identity-files: [id.txt]",
      ], false),
    );
    let run = await sluice("snapshot", "-c", config);
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /bad\.yml:8: .*age\.recipients\[1\] is not a valid age recipient/);
    assert.equal(run.stderr.trim().split("\n").length, 1);
    assert.ok(!run.stderr.includes(badRecipient));

    // The other cases through the loader the CLI uses.
    const cases: { age: string[]; message: RegExp; secret?: string }[] = [
      {
        age: ["recipients: [${SLUICE_TEST_AGE_RECIPIENT}]"],
        message: /bad\.yml:5: .*recipients without an identity: compaction reads/,
      },
      {
        age: ["recipients: [${SLUICE_TEST_AGE_RECIPIENT}]", "identities: [AGE-SECRET-KEY-1NOPE]"],
        message: /bad\.yml:7: .*age\.identities\[0\] is not a valid age identity/,
        secret: "AGE-SECRET-KEY-1NOPE",
      },
      {
        age: ["recipients: [${SLUICE_TEST_AGE_RECIPIENT}]", "identity-files: [missing.txt]"],
        message: /bad\.yml:7: age identity file .*missing\.txt does not exist/,
      },
      { age: ["identities: []"], message: /bad\.yml:5: .*needs recipients/ },
    ];
    for (const { age, message, secret } of cases) {
      await Deno.writeTextFile(config, configText(dbPath, replica, age, false));
      const err = await loadConfig(config, env).then(() => undefined, (e: unknown) => e);
      assert.ok(err instanceof ConfigError, String(err));
      assert.match(err.message, message);
      if (secret !== undefined) assert.ok(!err.message.includes(secret));
    }
    // Valid keys: the spec carries them, identity files read.
    await Deno.writeTextFile(config, configText(dbPath, replica, AGE_KEYS, false));
    const loaded = await loadConfig(config, env);
    assert.deepEqual(loaded.dbs[0].replica.spec.age, {
      recipients: [recipient],
      identities: [identity],
    });

    // A malformed line of an identity file given on the command line: that file's line.
    await Deno.writeTextFile(
      join(dir, "broken.txt"),
      `# key\n${identity}\nAGE-SECRET-KEY-1BROKEN\n`,
    );
    run = await sluice(
      "restore",
      "--age-identity",
      join(dir, "broken.txt"),
      "-o",
      join(dir, "out.db"),
      `file://${join(dir, "replica")}`,
    );
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /broken\.txt:3: .*is not a valid age identity/);
    assert.ok(!run.stderr.includes("AGE-SECRET-KEY-1BROKEN") && !run.stderr.includes(identity));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
