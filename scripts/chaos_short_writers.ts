/**
 * Short-lived writers: the most common application there is (a cron job, a CLI script, a PHP
 * request, `sqlite3 app.db "insert …"`) opens the database, commits and closes it again. When
 * the last connection to a WAL database closes, SQLite checkpoints the WAL into the database
 * and deletes it, unless another process (sluice) still holds its SHARED lock on the database
 * file. So these writers find out whether sluice keeps that lock (issue 20).
 *
 * Three kinds, each a real process with its own SQLite: Python's `sqlite3` module, the
 * `sqlite3` command-line shell (Debian package `sqlite3`), and `node:sqlite`
 * (scripts/chaos_node_writer.ts). Every transaction uses a new connection (open, BEGIN IMMEDIATE, insert,
 * COMMIT, close) and has the shape of scripts/writer.ts's: transaction k inserts 1–4 rows of
 * `t(id, n, payload)` with `n = k` (the newest row's `n` + 1, read under the write lock), and
 * `<k> <ms>` is appended to the ack file after the commit, so {@linkcode verifyReplica}
 * checks them like any other writer.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { Rng, sleep } from "./chaos_lib.ts";

/** The three kinds of short-lived writer. */
export const WRITER_KINDS = ["python", "sqlite3", "node"] as const;
/** One kind of short-lived writer process. */
export type WriterKind = (typeof WRITER_KINDS)[number];

const NODE_WRITER = fileURLToPath(new URL("./chaos_node_writer.ts", import.meta.url));
/** Busy timeout of every writer connection, ms: the application waits for sluice's locks. */
const BUSY_TIMEOUT_MS = 5000;

/** A short-lived writer process failed (not SQLITE_BUSY: that is retried). */
export class ShortWriterError extends Error {
  /** Builds the error from the writer's kind, exit code and stderr. */
  constructor(kind: WriterKind, code: number, stderr: string) {
    super(`${kind} short-lived writer exited ${code}: ${stderr.trim()}`);
    this.name = "ShortWriterError";
  }
}

const missing = new Map<WriterKind, string | undefined>();
let pythonPath = "python3";

/**
 * Why `kind` cannot run here (its program is not installed), or undefined when it can.
 * Cached per process.
 */
export async function writerKindMissing(kind: WriterKind): Promise<string | undefined> {
  if (missing.has(kind)) return missing.get(kind);
  let reason: string | undefined;
  if (kind !== "node") {
    // Python: the interpreter itself, not a wrapper such as pyenv's shim (0.5 s per start).
    const [program, args] = kind === "python"
      ? ["python3", ["-c", "import sqlite3, sys; print(sys.executable)"]]
      : ["sqlite3", ["-version"]];
    try {
      const out = await new Deno.Command(program, { args, stdout: "piped", stderr: "null" })
        .output();
      if (!out.success) reason = `${program} ${args.join(" ")} failed (exit ${out.code})`;
      else if (kind === "python") pythonPath = new TextDecoder().decode(out.stdout).trim();
    } catch {
      reason = `${program} is not installed (${
        kind === "python" ? "python3" : "Debian package sqlite3"
      })`;
    }
  }
  missing.set(kind, reason);
  return reason;
}

/** Options of {@linkcode runShortWriter}. */
export interface ShortWriterOptions {
  kind: WriterKind;
  /** The database (WAL mode, table `t` as tests/_sluice.ts `createDatabase()` makes it). */
  db: string;
  /** Transactions, each on a new connection. */
  transactions: number;
  /** Where `<k> <ms>` is appended after each commit. */
  ackFile: string;
  /** Seeds the payload sizes. */
  seed?: number;
}

/** What a short-lived writer did. */
export interface ShortWriterResult {
  /** Transactions committed (and acknowledged). */
  committed: number;
  /** Transaction number of its last commit (0 when none). */
  lastN: number;
  /** Processes started (the shell runs one per transaction; retries on SQLITE_BUSY count). */
  processes: number;
}

// One transaction per connection; SQLITE_BUSY (after the busy timeout) is retried, on a new
// connection, like an application that retries a failed request.
const PYTHON = `
import os, random, sqlite3, sys, time
db, count, ack_path, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
rng = random.Random(seed)
last = 0
with open(ack_path, "a") as ack:
    for _ in range(count):
        while True:
            con = sqlite3.connect(db, timeout=${BUSY_TIMEOUT_MS / 1000}, isolation_level=None)
            try:
                con.execute("BEGIN IMMEDIATE")
                row = con.execute("SELECT n FROM t ORDER BY id DESC LIMIT 1").fetchone()
                n = (row[0] if row else 0) + 1
                for _ in range(rng.randint(1, 4)):
                    con.execute("INSERT INTO t (n, payload) VALUES (?, ?)",
                                (n, os.urandom(rng.randint(50, 300))))
                con.execute("COMMIT")
                break
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) and "busy" not in str(err):
                    raise
                time.sleep(0.01)
            finally:
                con.close()
        ack.write(f"{n} {int(time.time() * 1000)}\\n")
        ack.flush()
        last = n
print(last)
`;

function shellScript(rows: number, rng: Rng): string {
  const newest = "(SELECT n FROM t ORDER BY id DESC LIMIT 1)";
  const lines = [
    `.timeout ${BUSY_TIMEOUT_MS}`,
    "BEGIN IMMEDIATE;",
    `INSERT INTO t (n, payload) SELECT coalesce(${newest}, 0) + 1, randomblob(${
      rng.int(50, 300)
    });`,
  ];
  for (let i = 1; i < rows; i++) {
    lines.push(`INSERT INTO t (n, payload) SELECT ${newest}, randomblob(${rng.int(50, 300)});`);
  }
  lines.push(`SELECT ${newest};`, "COMMIT;");
  return lines.join("\n") + "\n";
}

async function appendAck(path: string, n: number): Promise<void> {
  await Deno.writeTextFile(path, `${n} ${Date.now()}\n`, { append: true });
}

async function runProcess(
  kind: WriterKind,
  program: string,
  args: string[],
  stdin?: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(program, {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const out = await child.output();
  const decoder = new TextDecoder();
  const result = {
    code: out.code,
    stdout: decoder.decode(out.stdout),
    stderr: decoder.decode(out.stderr),
  };
  if (result.code !== 0 && !/locked|busy/i.test(result.stderr)) {
    throw new ShortWriterError(kind, result.code, result.stderr);
  }
  return result;
}

/**
 * Runs one short-lived writer of `kind` to completion: `transactions` transactions, each on
 * its own connection, acknowledged in `ackFile`. The shell kind is one process per
 * transaction (one shell is one connection); the others are one process that reconnects.
 * @throws {ShortWriterError} when a writer process fails other than with SQLITE_BUSY.
 */
export async function runShortWriter(options: ShortWriterOptions): Promise<ShortWriterResult> {
  const { kind, db, transactions, ackFile } = options;
  const seed = options.seed ?? 1;
  const result: ShortWriterResult = { committed: 0, lastN: 0, processes: 0 };
  if (transactions <= 0) return result;
  const why = await writerKindMissing(kind);
  if (why) throw new ShortWriterError(kind, -1, why);
  if (kind === "sqlite3") {
    const rng = new Rng(seed);
    while (result.committed < transactions) {
      result.processes++;
      const out = await runProcess(kind, "sqlite3", ["-bail", db], shellScript(rng.int(1, 4), rng));
      if (out.code !== 0) { // SQLITE_BUSY after the timeout: a new process tries again
        await sleep(10);
        continue;
      }
      const n = Number(out.stdout.trim().split("\n").pop());
      if (!Number.isSafeInteger(n) || n <= 0) {
        throw new ShortWriterError(kind, 0, `unexpected output ${JSON.stringify(out.stdout)}`);
      }
      await appendAck(ackFile, n);
      result.committed++;
      result.lastN = n;
    }
    return result;
  }
  const [program, args] = kind === "python"
    ? [pythonPath, ["-c", PYTHON, db, String(transactions), ackFile, String(seed)]]
    : [Deno.execPath(), [
      "run",
      "-A",
      "--quiet",
      NODE_WRITER,
      "--db",
      db,
      "--count",
      String(transactions),
      "--ack-file",
      ackFile,
    ]];
  result.processes++;
  const out = await runProcess(kind, program, args);
  if (out.code !== 0) throw new ShortWriterError(kind, out.code, out.stderr);
  result.committed = transactions;
  result.lastN = Number(out.stdout.trim().split("\n").pop());
  return result;
}

/** Options of {@linkcode startShortWriters}. */
export interface ShortWritersLoopOptions {
  db: string;
  ackFile: string;
  /** Kinds to rotate through (those not installed are left out by the caller). */
  kinds: readonly WriterKind[];
  rng: Rng;
  /** Transactions per writer process, drawn from [1, maxTransactions]. Default 5. */
  maxTransactions?: number;
  /** Pause between two writers, drawn from [0, maxPauseMs]. Default 300. */
  maxPauseMs?: number;
}

/** Totals of a {@linkcode startShortWriters} loop. */
export interface ShortWritersSummary {
  /** Writers run, per kind. */
  writers: Record<WriterKind, number>;
  committed: number;
  lastN: number;
}

/** A background loop of short-lived writers. */
export interface ShortWritersLoop {
  /** Lets the running writer finish, stops the loop; rejects with the first writer failure. */
  stop(): Promise<ShortWritersSummary>;
}

/**
 * Starts short-lived writers one after another (a random kind of `kinds`, 1–N transactions
 * each, a random pause between them) until stopped.
 */
export function startShortWriters(options: ShortWritersLoopOptions): ShortWritersLoop {
  const { rng, kinds } = options;
  const summary: ShortWritersSummary = {
    writers: { python: 0, sqlite3: 0, node: 0 },
    committed: 0,
    lastN: 0,
  };
  let stopping = false;
  const loop = (async () => {
    while (!stopping && kinds.length > 0) {
      const kind = rng.pick(kinds);
      const done = await runShortWriter({
        kind,
        db: options.db,
        ackFile: options.ackFile,
        transactions: rng.int(1, options.maxTransactions ?? 5),
        seed: rng.int(1, 1e9),
      });
      summary.writers[kind]++;
      summary.committed += done.committed;
      summary.lastN = Math.max(summary.lastN, done.lastN);
      await sleep(rng.int(0, options.maxPauseMs ?? 300));
    }
    return summary;
  })();
  loop.catch(() => {}); // reported by stop()
  return {
    stop() {
      stopping = true;
      return loop;
    },
  };
}
