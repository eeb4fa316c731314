/**
 * Test support for read replicas (`restore --follow`): the writer and reader programs with
 * their invariant, the source database, content comparison, and process helpers. Shared by
 * tests/follow_test.ts and scripts/chaos_follow.ts.
 *
 * @module
 */

import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { ROOT } from "./_sluice.ts";

/** The CLI entry point. */
export const MAIN = join(ROOT, "main.ts");

/** The writer: transfers between 10 accounts (sum 1000) and a log counted in `meta.n`. */
export const WRITER = `
import { DatabaseSync } from "node:sqlite";
export const [path, seconds, rate] = Deno.args;
export const db = new DatabaseSync(path);
db.exec("PRAGMA busy_timeout = 5000; PRAGMA synchronous = NORMAL");
export const start = Date.now();
export const end = start + Number(seconds) * 1000;
let i = 0;
while (Date.now() < end) {
  const a = i % 10, b = (i * 7 + 3) % 10, amount = (i % 13) + 1;
  db.exec("BEGIN IMMEDIATE");
  db.prepare("UPDATE acct SET bal = bal - ? WHERE id = ?").run(amount, a);
  db.prepare("UPDATE acct SET bal = bal + ? WHERE id = ?").run(amount, b);
  db.prepare("INSERT INTO log (amount, payload) VALUES (?, randomblob(?))")
    .run(amount, i % 17 === 0 ? 30000 : 300);
  db.exec("UPDATE meta SET n = n + 1");
  db.exec("COMMIT");
  i++;
  if (i % 25 === 0) db.exec("PRAGMA wal_checkpoint(PASSIVE)");
  const wait = start + (i * 1000) / Number(rate) - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
}
db.close();
console.log(JSON.stringify({ committed: i }));
`;

/** A node:sqlite reader: read-only, busy timeout, invariant + quick_check per transaction. */
export const DENO_READER = `
import { DatabaseSync } from "node:sqlite";
export const [path, stopFile, readyFile] = Deno.args;
export const db = new DatabaseSync(path, { readOnly: true });
db.exec("PRAGMA busy_timeout = 10000");
let checks = 0, errors = 0, lastError = "";
export const violations = [];
export const stopped = () => { try { Deno.statSync(stopFile); return true; } catch { return false; } };
while (!stopped()) {
  try {
    db.exec("BEGIN");
    const s = db.prepare("SELECT sum(bal) AS s FROM acct").get().s;
    const c = db.prepare("SELECT count(*) AS c FROM log").get().c;
    const n = db.prepare("SELECT n FROM meta").get().n;
    const q = db.prepare("PRAGMA quick_check").get().quick_check;
    db.exec("COMMIT");
    if (s !== 1000 || c !== n || q !== "ok") violations.push({ s, c, n, q });
    if (checks++ === 0) Deno.writeTextFileSync(readyFile, "");
  } catch (e) {
    errors++;
    lastError = String(e.message);
    try { db.exec("ROLLBACK"); } catch { /* none open */ }
  }
  await new Promise((r) => setTimeout(r, 2));
}
console.log(JSON.stringify({ checks, violations, errors, lastError }));
`;

/** The same reader in python3 (its own SQLite build). */
export const PYTHON_READER = `
import json, os, sqlite3, sys, time
path, stop, ready = sys.argv[1], sys.argv[2], sys.argv[3]
db = sqlite3.connect("file:" + path + "?mode=ro", uri=True, timeout=10, isolation_level=None)
checks, errors, last, violations = 0, 0, "", []
while not os.path.exists(stop):
    try:
        db.execute("BEGIN")
        s = db.execute("SELECT sum(bal) FROM acct").fetchone()[0]
        c = db.execute("SELECT count(*) FROM log").fetchone()[0]
        n = db.execute("SELECT n FROM meta").fetchone()[0]
        q = db.execute("PRAGMA quick_check").fetchone()[0]
        db.execute("COMMIT")
        if s != 1000 or c != n or q != "ok":
            violations.append({"s": s, "c": c, "n": n, "q": q})
        if checks == 0:
            open(ready, "w").close()
        checks += 1
    except Exception as e:
        errors += 1
        last = str(e)
        try:
            db.execute("ROLLBACK")
        except Exception:
            pass
    time.sleep(0.002)
print(json.dumps({"checks": checks, "violations": violations, "errors": errors, "lastError": last}))
`;

/** What a reader program prints when it stops. */
export interface ReaderReport {
  checks: number;
  violations: unknown[];
  errors: number;
  lastError: string;
}

/** The source database: 10 accounts of 100, `meta.n` = rows of `log`. */
export function createSource(path: string): void {
  const db = new DatabaseSync(path);
  db.exec("PRAGMA journal_mode = wal");
  db.exec("CREATE TABLE acct (id INTEGER PRIMARY KEY, bal INTEGER NOT NULL)");
  db.exec("CREATE TABLE meta (n INTEGER NOT NULL)");
  db.exec("CREATE TABLE log (id INTEGER PRIMARY KEY, amount INTEGER, payload BLOB)");
  db.exec("INSERT INTO meta VALUES (0)");
  for (let i = 0; i < 10; i++) db.exec(`INSERT INTO acct VALUES (${i}, 100)`);
  db.close();
}

/** Rows and integrity of a database, for equality (read-only). */
export function contents(path: string): string {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    db.exec("PRAGMA busy_timeout = 5000");
    const acct = db.prepare("SELECT id, bal FROM acct ORDER BY id").all();
    const meta = db.prepare("SELECT n FROM meta").get();
    const log = db.prepare(
      "SELECT count(*) AS c, coalesce(sum(amount), 0) AS s, coalesce(sum(length(payload)), 0) AS b, " +
        "coalesce(max(id), 0) AS m FROM log",
    ).get();
    const integrity = db.prepare("PRAGMA integrity_check").get();
    return JSON.stringify({ acct, meta, log, integrity });
  } finally {
    db.close();
  }
}

/** {@linkcode contents}, or the error it met. */
export function safeContents(path: string): string {
  try {
    return contents(path);
  } catch (err) {
    return `error: ${(err as Error).message}`;
  }
}

/** A background process whose stdout/stderr are collected. */
export interface Proc {
  child: Deno.ChildProcess;
  stdout: Promise<string>;
  stderr: Promise<string>;
  /** Signals (default SIGTERM) and waits; the exit code. */
  stop(signal?: Deno.Signal): Promise<number>;
}

/** Spawns a process whose output is collected. */
export function spawn(cmd: string, args: string[], env: Record<string, string> = {}): Proc {
  const child = new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped", env }).spawn();
  const stdout = new Response(child.stdout).text();
  const stderr = new Response(child.stderr).text();
  return {
    child,
    stdout,
    stderr,
    async stop(signal: Deno.Signal = "SIGTERM") {
      try {
        child.kill(signal);
      } catch { /* exited */ }
      return (await child.status).code;
    },
  };
}

/** Starts `sluice restore -f --interval 200ms -o out url`. */
export function startFollower(out: string, url: string, env: Record<string, string> = {}): Proc {
  return spawn(Deno.execPath(), [
    "run",
    "-A",
    MAIN,
    "restore",
    "-f",
    "--interval",
    "200ms",
    "-o",
    out,
    url,
  ], env);
}

/** Whether `path` exists. */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** A replicate config: L1 every 1 s, snapshots every 5 s, L0/snapshot retention. */
export function configText(dbPath: string, replica: string[]): string {
  return [
    "snapshot:",
    "  interval: 5s",
    "  retention: 5s",
    "levels:",
    "  - interval: 1s",
    "l0-retention: 1s",
    "dbs:",
    `  - path: ${dbPath}`,
    "    replica:",
    ...replica.map((line) => `      ${line}`),
    "",
  ].join("\n");
}
