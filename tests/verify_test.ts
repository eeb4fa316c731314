/**
 * `sluice verify` against real replicas: written by a real `sluice replicate` (or `sluice
 * snapshot`) from databases a writer in another process fills, then damaged the ways replicas
 * get damaged (a flipped byte, a truncated upload, a lost file, an overlapping file, a file of
 * another database). Each case works on its own copy of the replica.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Decoder, formatFilename, mergeDecoders } from "../src/ltx/mod.ts";
import { Encoder } from "../src/ltx/mod.ts";
import { FileReplicaClient, S3ReplicaClient } from "../src/replica/mod.ts";
import { FAUXQS_CREDENTIALS, s3Spec, startS3Server } from "./_s3.ts";
import {
  createDatabase,
  replicaTXID,
  runWriter,
  sluice,
  startReplicate,
  waitFor,
} from "./_sluice.ts";

// Subprocesses inherit these: static test credentials, and never the EC2 metadata endpoint.
Deno.env.set("AWS_ACCESS_KEY_ID", FAUXQS_CREDENTIALS.accessKeyId);
Deno.env.set("AWS_SECRET_ACCESS_KEY", FAUXQS_CREDENTIALS.secretAccessKey);
Deno.env.set("AWS_EC2_METADATA_DISABLED", "true");

interface Fixture {
  dir: string;
  /** Replica of database a.db (page size 4096). */
  replicaA: string;
  /** Replica of another database, b.db, written the same way. */
  replicaB: string;
  /** Newest TXID of replica A. */
  latest: number;
}

let fixture: Promise<Fixture> | undefined;

/** Two replicas made once by real `sluice replicate` runs while writers commit. */
function replicas(): Promise<Fixture> {
  return fixture ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "sluice-verify-" });
    const make = async (name: string, rowSize: string) => {
      const db = join(dir, `${name}.db`);
      const replica = join(dir, `rep-${name}`);
      createDatabase(db);
      const replicator = startReplicate(db, `file://${replica}`);
      try {
        await waitFor("the first snapshot", async () => await replicaTXID(replica) >= 1);
        await runWriter("--db", db, "--count", "12", "--rate", "10", "--row-size", rowSize);
      } finally {
        const stopped = await replicator.stop();
        assert.equal(stopped.code, 0, stopped.stderr);
      }
      return replica;
    };
    const [replicaA, replicaB] = await Promise.all([make("a", "300"), make("b", "500")]);
    const latest = await replicaTXID(replicaA);
    assert.ok(latest >= 6, `replica A has ${latest} L0 files; the cases need 6`);
    assert.ok(await replicaTXID(replicaB) >= 6);
    return { dir, replicaA, replicaB, latest };
  })();
}

/** A fresh copy of replica A for one case. */
async function copyOfA(name: string): Promise<{ replica: string; f: Fixture }> {
  const f = await replicas();
  const replica = join(f.dir, `case-${name}`);
  const cp = await new Deno.Command("cp", { args: ["-a", f.replicaA, replica] }).output();
  assert.ok(cp.success);
  return { replica, f };
}

function l0(replica: string, txid: number): string {
  return join(replica, "ltx", "0", formatFilename(txid, txid));
}

function hex(txid: number): string {
  return txid.toString(16).padStart(16, "0");
}

async function verify(...args: string[]) {
  const result = await sluice("verify", ...args);
  return { ...result, json: args.includes("--json") ? JSON.parse(result.stdout) : undefined };
}

Deno.test("verify: a clean replica exits 0 with its range; --restore checks it", async () => {
  const { replicaA, latest } = await replicas();
  const result = await verify("--json", "--restore", `file://${replicaA}`);
  assert.equal(result.code, 0, result.stdout + result.stderr);
  const report = result.json;
  assert.equal(report.ok, true);
  assert.deepEqual(report.problems, []);
  assert.equal(report.range.fromTXID, hex(1));
  assert.equal(report.range.toTXID, hex(latest));
  assert.equal(report.latestTXID, hex(latest));
  assert.ok(Date.parse(report.range.toTime) >= Date.parse(report.range.fromTime));
  assert.match(report.owner, /a\.db$/);
  assert.equal(report.restore.txid, hex(latest));
  assert.equal(report.restore.integrity, "ok");
  assert.ok(report.restore.bytes > 0);
});

/** One way of damaging a copy of replica A, and what verify must say about it. */
interface DamageCase {
  name: string;
  /** Damages `replica`; returns the arguments for verify when they are not just its URL. */
  damage(replica: string, f: Fixture, middle: number): Promise<void | string[]>;
  check(result: Awaited<ReturnType<typeof verify>>, f: Fixture, middle: number): void;
}

type Found = { kind: string; files: string[]; fromTXID?: string; toTXID?: string };

const DAMAGE: DamageCase[] = [{
  name: "one flipped byte",
  async damage(replica, _f, middle) {
    const path = l0(replica, middle);
    const bytes = await Deno.readFile(path);
    bytes[Math.floor(bytes.length / 2)] ^= 0x01;
    await Deno.writeFile(path, bytes);
  },
  check(result, _f, middle) {
    const damaged = result.json.problems.find((p: Found) => p.kind === "damaged");
    assert.deepEqual(damaged.files, [`L0/${formatFilename(middle, middle)}`]);
    assert.equal(damaged.fromTXID, hex(middle));
    assert.equal(result.json.range.toTXID, hex(middle - 1));
  },
}, {
  name: "one truncated file",
  async damage(replica, _f, middle) {
    const path = l0(replica, middle);
    await Deno.truncate(path, Math.floor((await Deno.stat(path)).size / 2));
  },
  check(result, f, middle) {
    const text = formatProblems(result.json.problems);
    assert.match(text, new RegExp(`damaged: L0/${formatFilename(middle, middle)}`));
    assert.match(text, new RegExp(`unreachable: TXID ${hex(middle)}-${hex(f.latest)}`));
  },
}, {
  name: "a deleted L0 file in the middle",
  async damage(replica, _f, middle) {
    await Deno.remove(l0(replica, middle));
  },
  check(result, _f, middle) {
    const gap = result.json.problems.find((p: Found) => p.kind === "gap");
    assert.equal(gap.fromTXID, hex(middle));
    assert.equal(gap.toTXID, hex(middle));
    assert.equal(result.json.range.toTXID, hex(middle - 1));
  },
}, {
  name: "an overlapping file",
  async damage(replica, _f, middle) {
    // A real LTX file covering middle…middle+2: the compaction of those three L0 files.
    const inputs = await Promise.all([0, 1, 2].map(async (i) => {
      const file = await Deno.open(l0(replica, middle + i));
      return new Decoder(file.readable);
    }));
    const merged = await mergeDecoders(inputs);
    const name = formatFilename(middle, middle + 2);
    const out = await Deno.open(join(replica, "ltx", "0", name), { write: true, create: true });
    const encoder = new Encoder(out.writable, merged.header);
    for await (const page of merged.pages) await encoder.encodePage(page.pgno, page.data);
    await encoder.close();
  },
  check(result, _f, middle) {
    const name = `L0/${formatFilename(middle, middle + 2)}`;
    const overlaps = result.json.problems.filter((p: Found) => p.kind === "overlap");
    assert.ok(overlaps.length > 0);
    assert.ok(overlaps.every((p: Found) => p.files.includes(name)));
  },
}, {
  name: "a file from another database",
  async damage(replica, f, middle) {
    await Deno.copyFile(l0(f.replicaB, middle), l0(replica, middle));
  },
  check(result, _f, middle) {
    const name = `L0/${formatFilename(middle, middle)}`;
    const named = result.json.problems.filter((p: Found) =>
      (p.kind === "foreign" || p.kind === "chain") && p.files.includes(name)
    );
    assert.ok(named.length > 0);
  },
}, {
  name: "a config that gives the replica to another database (owner marker)",
  async damage(replica) {
    const config = `${replica}.yml`;
    await Deno.writeTextFile(
      config,
      `dbs:\n  - path: /srv/other.db\n    replica:\n      url: file://${replica}\n`,
    );
    return ["--json", "-c", config, "/srv/other.db"];
  },
  check(result) {
    const owner = result.json.problems.find((p: Found) => p.kind === "owner");
    assert.match(owner.message, /belongs to database .*a\.db, not \/srv\/other\.db/);
  },
}];

function formatProblems(problems: { kind: string; message: string }[]): string {
  return problems.map((p) => `${p.kind}: ${p.message}`).join("\n");
}

Deno.test("verify: damage is named with its files and TXIDs (exit 1)", async () => {
  const f = await replicas();
  const middle = Math.floor(f.latest / 2) + 1;
  // Each case on its own copy, all at once (each is one short CLI run).
  const outcomes = await Promise.all(DAMAGE.map(async (c, i) => {
    const { replica } = await copyOfA(String(i));
    const args = await c.damage(replica, f, middle);
    return await verify(...(args ?? ["--json", `file://${replica}`]));
  }));
  DAMAGE.forEach((c, i) => {
    const result = outcomes[i];
    assert.equal(result.code, 1, `${c.name}: ${result.stdout}${result.stderr}`);
    assert.equal(result.json.ok, false);
    try {
      c.check(result, f, middle);
    } catch (err) {
      throw new Error(`${c.name}: ${(err as Error).message}\n${result.stdout}`);
    }
  });
});

Deno.test("verify: an S3 replica (fauxqs)", async () => {
  // Replica A as `aws s3 sync` would copy it: once intact, once with one byte of L0 flipped.
  const [f, server] = await Promise.all([replicas(), startS3Server()]);
  const clients = ["clean", "damaged"].map((path) =>
    new S3ReplicaClient(s3Spec(server, "verify-test", path))
  );
  const local = new FileReplicaClient(f.replicaA);
  const flipped = Math.floor(f.latest / 2) + 1;
  try {
    await server.createBucket("verify-test");
    for (let level = 0; level <= 9; level++) {
      for await (const info of local.ltxFiles(level)) {
        const bytes = new Uint8Array(
          await new Response(await local.openLTXFile(info)).arrayBuffer(),
        );
        await clients[0].writeLTXFile(info, bytes, info.createdAt.getTime());
        if (level === 0 && info.minTXID === flipped) bytes[bytes.length - 40] ^= 0x80;
        await clients[1].writeLTXFile(info, bytes, info.createdAt.getTime());
      }
    }
    const url = (path: string) =>
      `s3://verify-test/${path}?endpoint=${encodeURIComponent(server.endpoint)}` +
      `&region=us-east-1&force-path-style=true`;
    const [clean, damaged] = await Promise.all([
      verify("--json", "--restore", url("clean")),
      verify(url("damaged")),
    ]);
    assert.equal(clean.code, 0, clean.stdout + clean.stderr);
    assert.equal(clean.json.range.toTXID, hex(f.latest));
    assert.equal(clean.json.restore.txid, hex(f.latest));
    assert.equal(clean.json.restore.integrity, "ok");
    assert.equal(damaged.code, 1, damaged.stdout + damaged.stderr);
    assert.match(damaged.stdout, new RegExp(`damaged: L0/${formatFilename(flipped, flipped)}`));
  } finally {
    await Promise.all([...clients, local].map((c) => c.close()));
    await server.stop();
  }
});

Deno.test("verify: usage errors exit 2 naming the culprit", async () => {
  const [none, bad] = await Promise.all([
    sluice("verify"),
    sluice("verify", "--level", "3", "/tmp/x"),
  ]);
  assert.equal(none.code, 2);
  // Line-anchored: Deno may print "Blocking waiting for file lock" first on a busy machine.
  assert.match(none.stderr, /^sluice verify: missing DB_PATH or REPLICA_URL/m);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /^sluice verify: unknown option --level/m);
});

Deno.test({
  name: "verify: cleanup",
  sanitizeResources: false,
  fn: async () => {
    if (fixture) await Deno.remove((await fixture).dir, { recursive: true });
  },
});
