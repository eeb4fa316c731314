/**
 * `sluice restore --follow`: a real follower process keeps OUT up to date while a writer commits
 * ~50 tx/s (with its own checkpoints), `sluice replicate` compacts L1 every second and snapshots
 * every 5 s (with L0 and snapshot retention), and three reader processes (node:sqlite and
 * python3's sqlite3, read-only, with a busy timeout) check an invariant and `quick_check` in a
 * loop. Then: an S3 replica, a restart that resumes without a restore, a replica that was reset.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { startReplicate, waitFor } from "./_sluice.ts";
import {
  configText,
  contents,
  createSource,
  DENO_READER,
  exists,
  MAIN,
  type Proc,
  PYTHON_READER,
  type ReaderReport,
  safeContents,
  spawn,
  startFollower,
  WRITER,
} from "./_follow.ts";
import { FAUXQS_CREDENTIALS, s3Spec, startS3Server } from "./_s3.ts";
import { FileReplicaClient, type ReplicaClient, S3ReplicaClient } from "../src/replica/mod.ts";

interface Scenario {
  dir: string;
  replica: string[];
  url: string;
  env?: Record<string, string>;
  writeSeconds: number;
  convergeMs: number;
  /** The replica, listed in this process to see the first files arrive. */
  client: ReplicaClient;
}

/** Writer + replicate + follower + 3 readers; asserts zero violations and convergence. */
async function runScenario(s: Scenario): Promise<void> {
  const source = join(s.dir, "app.db");
  const out = join(s.dir, "follow.db");
  const stop = join(s.dir, "stop");
  createSource(source);
  const config = join(s.dir, "sluice.yml");
  await Deno.writeTextFile(config, configText(source, s.replica));
  const writerFile = join(s.dir, "writer.ts");
  const denoReader = join(s.dir, "reader.ts");
  const pyReader = join(s.dir, "reader.py");
  await Deno.writeTextFile(writerFile, WRITER);
  await Deno.writeTextFile(denoReader, DENO_READER);
  await Deno.writeTextFile(pyReader, PYTHON_READER);

  const env = s.env ?? {};
  const replicate = spawn(Deno.execPath(), ["run", "-A", MAIN, "replicate", "-c", config], env);
  const procs: Proc[] = [replicate];
  try {
    // The first snapshot must exist before the follower's first restore.
    await waitFor("a first file on the replica", async () => {
      for await (const _ of s.client.ltxFiles(0)) return true;
      return false;
    }, 20_000);
    const follower = startFollower(out, s.url, env);
    procs.push(follower);
    await waitFor("the follower's first restore", () => exists(out), 20_000);

    const ready = [1, 2, 3].map((i) => join(s.dir, `ready${i}`));
    const readers = [
      spawn(Deno.execPath(), ["run", "-A", denoReader, out, stop, ready[0]]),
      spawn(Deno.execPath(), ["run", "-A", denoReader, out, stop, ready[1]]),
      spawn("python3", [pyReader, out, stop, ready[2]]),
    ];
    procs.push(...readers);
    for (const file of ready) await waitFor("a reader's first check", () => exists(file), 20_000);
    const writer = spawn(Deno.execPath(), [
      "run",
      "-A",
      writerFile,
      source,
      String(s.writeSeconds),
      "50",
    ]);
    procs.push(writer);
    const writerCode = await writer.child.status;
    assert.equal(writerCode.code, 0, await writer.stderr);
    const committed = JSON.parse(await writer.stdout).committed as number;
    assert.ok(committed > 20 * s.writeSeconds, `writer committed only ${committed}`);

    const expected = contents(source);
    const started = performance.now();
    await waitFor(
      "OUT to equal the source",
      () => safeContents(out) === expected,
      s.convergeMs + 5_000,
    ).catch(async (err) => {
      throw new Error(
        `${err.message}\nsource: ${expected}\nout:    ${safeContents(out)}\n` +
          `follower: ${(await follower.stop(), await follower.stderr)}`,
      );
    });
    const convergedMs = performance.now() - started;
    await Deno.writeTextFile(stop, "");
    const reports: ReaderReport[] = [];
    for (const reader of readers) {
      await reader.child.status;
      reports.push(JSON.parse(await reader.stdout) as ReaderReport);
    }
    for (const report of reports) {
      assert.deepEqual(report.violations, [], JSON.stringify(report));
      assert.equal(report.errors, 0, JSON.stringify(report));
      assert.ok(report.checks > 1, JSON.stringify(report));
    }
    assert.ok(
      convergedMs <= s.convergeMs,
      `OUT equalled the source ${Math.round(convergedMs)} ms after the writer stopped ` +
        `(limit ${s.convergeMs} ms)`,
    );
    assert.equal(await follower.stop("SIGTERM"), 0, await follower.stderr);
    assert.ok(!(await exists(`${out}-journal`)), "a journal was left behind");
    // OUT stays in rollback-journal mode: readers never made a -wal for it.
    assert.ok(!(await exists(`${out}-wal`)), "OUT was opened in WAL mode");
    const check = new DatabaseSync(out, { readOnly: true });
    try {
      assert.deepEqual(
        { ...check.prepare("PRAGMA journal_mode").get() as object },
        { journal_mode: "delete" },
      );
    } finally {
      check.close();
    }
  } finally {
    await Deno.writeTextFile(stop, "").catch(() => {});
    for (const proc of procs) await proc.stop("SIGKILL");
    await s.client.close();
  }
}

Deno.test("follow: directory replica under compaction, snapshots and three readers", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-follow-dir-" });
  try {
    const replica = join(dir, "replica");
    await runScenario({
      dir,
      replica: [`url: file://${replica}`],
      url: `file://${replica}`,
      writeSeconds: 3,
      convergeMs: 2000,
      client: new FileReplicaClient(replica),
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("follow: S3 replica (fauxqs)", async () => {
  const server = await startS3Server({ buckets: ["follow"] });
  const dir = await Deno.makeTempDir({ prefix: "sluice-follow-s3-" });
  try {
    await runScenario({
      dir,
      replica: [
        "type: s3",
        "bucket: follow",
        "path: app",
        "region: us-east-1",
        `endpoint: ${server.endpoint}`,
        "sync-interval: 200ms",
      ],
      url: `s3://follow/app?endpoint=${encodeURIComponent(server.endpoint)}` +
        `&region=us-east-1&force-path-style=true`,
      env: {
        AWS_ACCESS_KEY_ID: FAUXQS_CREDENTIALS.accessKeyId,
        AWS_SECRET_ACCESS_KEY: FAUXQS_CREDENTIALS.secretAccessKey,
      },
      writeSeconds: 2.5,
      convergeMs: 3000,
      client: new S3ReplicaClient(s3Spec(server, "follow", "app")),
    });
  } finally {
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

/** Commits `count` transactions with the writer program (fast). */
async function write(dir: string, source: string, seconds: number): Promise<void> {
  const writerFile = join(dir, "writer.ts");
  await Deno.writeTextFile(writerFile, WRITER);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", writerFile, source, String(seconds), "100"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
}

async function converge(out: string, source: string, what: string, follower: Proc) {
  const expected = contents(source);
  await waitFor(what, () => safeContents(out) === expected, 10_000).catch(async (err) => {
    await follower.stop("SIGKILL");
    throw new Error(
      `${err.message}\nsource: ${expected}\nout:    ${safeContents(out)}\n` +
        `follower: ${await follower.stderr}`,
    );
  });
}

/** Whether the level-0 file of `txid` is on the replica. */
function level0Has(replicaDir: string, txid: number): Promise<boolean> {
  const hex = txid.toString(16).padStart(16, "0");
  return exists(join(replicaDir, "ltx", "0", `${hex}-${hex}.ltx`));
}

Deno.test("follow: a restart resumes from the record without a restore (from L1 once L0 is gone); a long reader delays it; a reset replica is re-restored", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-follow-restart-" });
  const source = join(dir, "app.db");
  const out = join(dir, "follow.db");
  const replicaDir = join(dir, "replica");
  const url = `file://${replicaDir}`;
  createSource(source);
  const config = join(dir, "sluice.yml");
  await Deno.writeTextFile(config, configText(source, [`url: ${url}`]));
  let replicate = startReplicate("-c", config);
  let follower: Proc | undefined;
  try {
    await write(dir, source, 0.5);
    await waitFor("the replica", () => exists(join(replicaDir, "ltx", "0")), 10_000);
    follower = startFollower(out, url);
    await converge(out, source, "the first restore", follower);
    const record = JSON.parse(await Deno.readTextFile(`${out}.sluice-follow`));
    const inode = (await Deno.stat(out)).ino;
    assert.equal(await follower.stop("SIGTERM"), 0, await follower.stderr);

    // Written while the follower is down, and compacted into L1 with its L0 files deleted:
    // the restart continues from L1, incrementally.
    await write(dir, source, 0.5);
    const next = record.states[0].txid + 1;
    await waitFor("retention to delete the next L0 file", async () => {
      const names = await Array.fromAsync(Deno.readDir(join(replicaDir, "ltx", "0")));
      return names.length > 0 && !(await level0Has(replicaDir, next));
    }, 15_000);
    follower = startFollower(out, url);
    await converge(out, source, "the resumed follower", follower);
    const after = JSON.parse(await Deno.readTextFile(`${out}.sluice-follow`));
    assert.equal(after.restoredAt, record.restoredAt, "the restart restored in full");
    assert.equal((await Deno.stat(out)).ino, inode);
    const second = startFollower(out, url);
    assert.equal((await second.child.status).code, 1, "a second follower of the same OUT");
    await converge(out, source, "the first follower, undisturbed", follower);

    // A reader in a long read transaction: the follower waits for it, and other readers still
    // read (PENDING is let go after a while).
    const reader = new DatabaseSync(out, { readOnly: true });
    reader.exec("PRAGMA busy_timeout = 5000");
    reader.exec("BEGIN");
    const seen = (reader.prepare("SELECT n FROM meta").get() as { n: number }).n;
    await write(dir, source, 0.3);
    // The journal exists from before the follower asks for EXCLUSIVE until its commit: once it
    // appears, the follower has the new pages and waits for this reader.
    await waitFor("the follower's journal, written while it waits", () => exists(`${out}-journal`));
    assert.equal((reader.prepare("SELECT n FROM meta").get() as { n: number }).n, seen);
    assert.ok(await exists(`${out}-journal`), "the follower still waits for the reader");
    assert.equal(
      (reader.prepare("PRAGMA quick_check").get() as { quick_check: string }).quick_check,
      "ok",
    );
    const other = contents(out); // another reader gets in meanwhile
    assert.match(other, /"integrity_check":"ok"/);
    reader.exec("COMMIT");
    reader.close();
    await converge(out, source, "the follower after the long reader", follower);
    // The source shrinks (VACUUM): OUT is truncated with it.
    const sizeBefore = (await Deno.stat(out)).size;
    const shrink = new DatabaseSync(source);
    shrink.exec("PRAGMA busy_timeout = 5000");
    shrink.exec("DELETE FROM log WHERE id > 5; UPDATE meta SET n = (SELECT count(*) FROM log)");
    shrink.exec("VACUUM");
    shrink.close();
    await converge(out, source, "the follower after a VACUUM", follower);
    // The DELETE already gives the same content: wait for the VACUUM's own (smaller) file too.
    await waitFor(
      "OUT to be truncated after the VACUUM",
      async () => (await Deno.stat(out)).size < sizeBefore,
      10_000,
    );

    await write(dir, source, 0.2); // applied from L0 again: the follower knows its L0 file
    await converge(out, source, "the follower from level 0", follower);

    // The replica is reset: a new database, a new meta directory, an empty replica. Its TXIDs
    // start again at 1, behind the follower's.
    const stopped = await replicate.stop();
    assert.equal(stopped.code, 0, stopped.stderr);
    await Deno.remove(replicaDir, { recursive: true });
    for (const suffix of ["", "-wal", "-shm"]) await Deno.remove(source + suffix).catch(() => {});
    await Deno.remove(join(dir, ".app.db-sluice"), { recursive: true }).catch(() => {});
    createSource(source);
    const db = new DatabaseSync(source);
    db.exec("INSERT INTO log (amount, payload) VALUES (7, x'00'); UPDATE meta SET n = 1");
    db.close();
    replicate = startReplicate("-c", config);
    await converge(out, source, "the re-restore after a reset", follower);
    const reset = JSON.parse(await Deno.readTextFile(`${out}.sluice-follow`));
    assert.notEqual(reset.restoredAt, record.restoredAt);
    assert.equal((await Deno.stat(out)).ino, inode, "re-restored in place");
    assert.equal(await follower.stop("SIGTERM"), 0, await follower.stderr);
  } finally {
    await follower?.stop("SIGKILL");
    await replicate.stop("SIGKILL");
    await Deno.remove(dir, { recursive: true });
  }
});

/** Whether a journal with SQLite's magic (sealed: SQLite would roll it back) is there. */
async function sealedJournal(path: string): Promise<boolean> {
  try {
    const head = (await Deno.readFile(path)).subarray(0, 8);
    return head.length === 8 && head[0] === 0xd9 && head[1] === 0xd5 && head[7] === 0xd7;
  } catch {
    return false;
  }
}

/** Opens a copy of OUT (and its journal) read-write in python3: SQLite rolls the journal back. */
async function checkCopyRollsBack(out: string, scratch: string): Promise<string> {
  await Deno.copyFile(out, scratch);
  const hadJournal = await exists(`${out}-journal`);
  if (hadJournal) await Deno.copyFile(`${out}-journal`, `${scratch}-journal`);
  const script = `
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
s = db.execute("SELECT sum(bal) FROM acct").fetchone()[0]
c = db.execute("SELECT count(*) FROM log").fetchone()[0]
n = db.execute("SELECT n FROM meta").fetchone()[0]
q = db.execute("PRAGMA integrity_check").fetchone()[0]
print("ok" if s == 1000 and c == n and q == "ok" else f"bad {s} {c} {n} {q}")
`;
  const result = await new Deno.Command("python3", { args: ["-c", script, scratch] }).output();
  const verdict = new TextDecoder().decode(result.stdout).trim() ||
    new TextDecoder().decode(result.stderr).trim();
  // SQLite deletes a hot journal once it has played it back.
  const journalLeft = await exists(`${scratch}-journal`);
  for (const p of [scratch, `${scratch}-journal`]) await Deno.remove(p).catch(() => {});
  return `${verdict}${hadJournal ? " (journal)" : ""}${journalLeft ? " (journal left)" : ""}`;
}

Deno.test("follow: a follower killed mid-application leaves a journal SQLite rolls back", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-follow-kill-" });
  const source = join(dir, "app.db");
  const out = join(dir, "follow.db");
  const replicaDir = join(dir, "replica");
  const url = `file://${replicaDir}`;
  createSource(source);
  const replicate = startReplicate(source, url);
  let follower: Proc | undefined;
  let writer: Proc | undefined;
  try {
    await write(dir, source, 0.2);
    await waitFor("the replica", () => exists(join(replicaDir, "ltx", "0")), 10_000);
    follower = startFollower(out, url);
    await converge(out, source, "the first restore", follower);
    writer = spawn(Deno.execPath(), ["run", "-A", join(dir, "writer.ts"), source, "3", "100"]);
    const verdicts: string[] = [];
    const deadline = Date.now() + 3000;
    while (Date.now() < deadline && verdicts.length < 2) {
      if (!(await sealedJournal(`${out}-journal`))) continue;
      await follower.stop("SIGKILL");
      verdicts.push(await checkCopyRollsBack(out, join(dir, "copy.db")));
      follower = startFollower(out, url);
      await new Promise((r) => setTimeout(r, 300));
    }
    await writer.child.status;
    await converge(out, source, "the follower after the kills", follower);
    assert.ok(verdicts.length > 0, "never caught the follower with a journal");
    for (const verdict of verdicts) assert.match(verdict, /^ok/, verdicts.join("; "));
    assert.equal(await follower.stop("SIGTERM"), 0, await follower.stderr);
    assert.ok(!(await exists(`${out}-journal`)));
  } finally {
    await writer?.stop("SIGKILL");
    await follower?.stop("SIGKILL");
    await replicate.stop("SIGKILL");
    await Deno.remove(dir, { recursive: true });
  }
});
