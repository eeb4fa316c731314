/**
 * Shared by the directory monitor tests: `sluice replicate` as a subprocess, writer processes
 * (scripts/writer.ts), database builders, replica inspection and restore checks.
 *
 * Run as a program it creates databases, so in-process monitor tests can create files without
 * the test process itself opening (and closing) descriptors on databases its own Store
 * replicates (that would drop the Store's POSIX locks):
 *
 *   deno run -A tests/_monitor_helpers.ts create ROWS PATH...
 *
 * @module
 */

import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { FileReplicaClient } from "../src/replica/mod.ts";
import { parseWALHeader, type WALHeader } from "../src/sqlite/mod.ts";
import { restore } from "../src/restore/mod.ts";
import { watchWriterStderr, type WriterStderr } from "../scripts/writer.ts";

/** Project root (tests run with cwd = root, but do not rely on it). */
export const ROOT = new URL("..", import.meta.url).pathname;
const MAIN = join(ROOT, "main.ts");
const WRITER = join(ROOT, "scripts", "writer.ts");
const SELF = new URL(import.meta.url).pathname;

/** Sleeps `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Polls `condition` every 25 ms until it holds; fails with `what` after `timeoutMs`.
 * Resolves to the time it took, in ms.
 */
export async function waitFor(
  what: string,
  condition: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
): Promise<number> {
  const started = performance.now();
  while (!(await condition())) {
    if (performance.now() - started > timeoutMs) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await sleep(25);
  }
  return performance.now() - started;
}

/** Options of {@linkcode writeDirConfig}. */
export interface DirConfigOptions {
  pattern?: string;
  recursive?: boolean;
  watch?: boolean;
  /** Extra YAML lines for the dbs entry (indented by the caller's 4 spaces). */
  extra?: string[];
}

/** Writes a config with one `dir:` entry replicating to the `replica` directory. */
export async function writeDirConfig(
  configPath: string,
  dir: string,
  replica: string,
  options: DirConfigOptions = {},
): Promise<string> {
  const lines = [
    "logging: { level: debug }",
    "dbs:",
    `  - dir: ${dir}`,
    `    pattern: "${options.pattern ?? "*.db"}"`,
    `    recursive: ${options.recursive ?? false}`,
    `    watch: ${options.watch ?? true}`,
    "    monitor-interval: 250ms",
    ...(options.extra ?? []).map((line) => `    ${line}`),
    `    replica: { url: "file://${replica}", sync-interval: 50ms }`,
  ];
  await Deno.writeTextFile(configPath, lines.join("\n") + "\n");
  return configPath;
}

/** A running `sluice replicate -c CONFIG` subprocess. */
export class SluiceProcess {
  readonly child: Deno.ChildProcess;
  #log = "";
  #reading: Promise<void>;

  private constructor(child: Deno.ChildProcess) {
    this.child = child;
    this.#reading = (async () => {
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
        this.#log += chunk;
      }
    })();
  }

  /** Process id (the deno process itself). */
  get pid(): number {
    return this.child.pid;
  }

  /** Everything written to stderr so far (for failure messages, never for assertions). */
  get log(): string {
    return this.#log;
  }

  /**
   * Starts `sluice replicate -c configPath` and waits until its directory monitors are up
   * (their start line on stderr: a readiness signal, not an assertion).
   */
  static async start(configPath: string, monitors = 1): Promise<SluiceProcess> {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", MAIN, "replicate", "-c", configPath],
      cwd: ROOT,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const sluice = new SluiceProcess(child);
    await waitFor(
      "sluice to start watching",
      () => (sluice.log.match(/ (watching|scanned) directory /g) ?? []).length >= monitors,
      20_000,
    ).catch((err) => {
      throw new Error(`${(err as Error).message}; log:\n${sluice.log}`);
    });
    return sluice;
  }

  /**
   * {@linkcode waitFor}, failing with the tail of this process's log: a condition that never
   * comes on a loaded CI machine must say what sluice was doing meanwhile.
   */
  async waitFor(
    what: string,
    condition: () => boolean | Promise<boolean>,
    timeoutMs?: number,
  ): Promise<number> {
    return await waitFor(what, condition, timeoutMs).catch((err) => {
      throw new Error(`${(err as Error).message}; log (tail):\n${this.#log.slice(-6000)}`);
    });
  }

  /** SIGTERM (final sync), then waits; asserts exit status 0. Returns the log. */
  async stop(): Promise<string> {
    try {
      this.child.kill("SIGTERM");
    } catch { /* already gone */ }
    const status = await this.child.status;
    await this.#reading;
    assert.equal(status.code, 0, `sluice exited with ${status.code}; log:\n${this.#log}`);
    return this.#log;
  }

  /** Paths of the files this process has open (from /proc), for "resources released" checks. */
  async openFiles(): Promise<string[]> {
    const dir = `/proc/${this.pid}/fd`;
    const targets: string[] = [];
    for await (const entry of Deno.readDir(dir)) {
      try {
        targets.push(await Deno.readLink(join(dir, entry.name)));
      } catch { /* closed meanwhile */ }
    }
    return targets;
  }

  /** Whether any open descriptor refers to `dbPath` or its -wal/-shm (deleted or not). */
  async holds(dbPath: string): Promise<boolean> {
    return (await this.openFiles()).some((target) =>
      [dbPath, `${dbPath}-wal`, `${dbPath}-shm`].some((path) =>
        target === path || target === `${path} (deleted)`
      )
    );
  }
}

/**
 * Creates a database (WAL mode, table `t(id, n, payload)` as scripts/writer.ts uses) holding
 * rows n = 1..rows, in this process. Only for processes that do not replicate it themselves.
 */
export function createDatabase(path: string, rows: number, first = 1): void {
  Deno.mkdirSync(dirname(path), { recursive: true });
  const db = new DatabaseSync(path);
  try {
    db.exec("PRAGMA busy_timeout = 5000; PRAGMA journal_mode = wal");
    db.exec("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, n INTEGER, payload BLOB)");
    const insert = db.prepare("INSERT INTO t (n, payload) VALUES (?, ?)");
    db.exec("BEGIN");
    for (let n = first; n < first + rows; n++) insert.run(n, new Uint8Array(64).fill(n & 0xff));
    db.exec("COMMIT");
  } finally {
    db.close();
  }
}

/** Creates databases (see {@linkcode createDatabase}) from a child process. */
export async function createDatabasesInChild(paths: string[], rows: number): Promise<void> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", SELF, "create", String(rows), ...paths],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
}

/** A scripts/writer.ts process writing to one database. */
export class WriterProcess {
  readonly child: Deno.ChildProcess;
  readonly ackFile: string;
  #stderr: WriterStderr;
  #stdout: Promise<string>;

  private constructor(child: Deno.ChildProcess, ackFile: string) {
    this.child = child;
    this.ackFile = ackFile;
    this.#stderr = watchWriterStderr(child.stderr);
    this.#stdout = new Response(child.stdout).text();
  }

  /** Starts a writer on `db` (`rate` transactions per second; `count` 0 = until stopped). */
  static start(db: string, options: { rate?: number; count?: number } = {}): WriterProcess {
    const ackFile = `${db}.ack`.replace(/\/([^/]+)$/, "/.$1"); // hidden: not a candidate
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--quiet",
        WRITER,
        "--db",
        db,
        "--rate",
        String(options.rate ?? 50),
        "--count",
        String(options.count ?? 0),
        "--row-size",
        "64",
        "--ack-file",
        ackFile,
      ],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    return new WriterProcess(child, ackFile);
  }

  /** Runs a writer to completion (`count` transactions). Resolves to the last acknowledged n. */
  static async run(db: string, count: number): Promise<number> {
    const writer = WriterProcess.start(db, { rate: 0, count });
    return await writer.finish();
  }

  /** Waits for the writer to exit (after SIGTERM when `stop`); returns the last acknowledged n. */
  async finish(stop = false): Promise<number> {
    if (stop) {
      // A SIGTERM before the ready line kills a writer still starting, without its summary.
      await Promise.race([this.#stderr.ready, this.child.status]);
      try {
        this.child.kill("SIGTERM");
      } catch { /* already gone */ }
    }
    const status = await this.child.status;
    await this.#stderr.closed;
    assert.equal(status.code, 0, `writer failed: ${this.#stderr.text()}`);
    return JSON.parse(await this.#stdout).lastId as number;
  }

  /** Stops the writer and returns the last acknowledged transaction number. */
  stop(): Promise<number> {
    return this.finish(true);
  }

  /** Number of transactions acknowledged so far. */
  async acknowledged(): Promise<number> {
    try {
      return (await Deno.readTextFile(this.ackFile)).split("\n").filter((l) => l !== "").length;
    } catch {
      return 0;
    }
  }
}

/** Names of the LTX files on a file replica (all levels), e.g. `0/000…1-000…1.ltx`. */
export function replicaFiles(replicaDir: string): string[] {
  const files: string[] = [];
  let levels: Deno.DirEntry[];
  try {
    levels = [...Deno.readDirSync(join(replicaDir, "ltx"))];
  } catch {
    return files;
  }
  for (const level of levels) {
    for (const entry of Deno.readDirSync(join(replicaDir, "ltx", level.name))) {
      if (entry.name.endsWith(".ltx")) files.push(`${level.name}/${entry.name}`);
    }
  }
  return files.sort();
}

/** Whether the replica of one database holds at least one LTX file. */
export function hasReplica(replicaDir: string): boolean {
  return replicaFiles(replicaDir).length > 0;
}

/**
 * The database directories under a replica root: relative paths of directories holding an
 * `ltx/` folder (one per replicated database).
 */
export function replicatedDatabases(replicaRoot: string): string[] {
  const found: string[] = [];
  const walk = (rel: string) => {
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(join(replicaRoot, rel))];
    } catch {
      return;
    }
    for (const entry of entries) {
      if (!entry.isDirectory) continue;
      if (entry.name === "ltx") found.push(rel);
      else walk(rel === "" ? entry.name : `${rel}/${entry.name}`);
    }
  };
  walk("");
  return found.sort();
}

/**
 * Restores the replica at `replicaDir` (src/restore/restore.ts) into a temp file and returns the `n`
 * column of table `t` in id order; removes the restored file.
 */
export async function restoredRows(replicaDir: string): Promise<number[]> {
  const out = join(await Deno.makeTempDir({ prefix: "sluice-restore-" }), "restored.db");
  try {
    await restore(new FileReplicaClient(replicaDir), { outputPath: out, integrityCheck: "quick" });
    return tableRows(out);
  } finally {
    await Deno.remove(dirname(out), { recursive: true });
  }
}

/** The header of `db`'s WAL (its salts change when the WAL restarts); null when it has none. */
export function walHeaderOf(db: string): WALHeader | null {
  const bytes = new Uint8Array(32);
  const file = Deno.openSync(`${db}-wal`);
  try {
    return file.readSync(bytes) === 32 ? parseWALHeader(bytes) : null;
  } finally {
    file.close();
  }
}

/**
 * The `n` column of table `t` in id order, read through a read-only connection in this process
 * (never in a process that replicates the file: closing it would drop that process's locks).
 */
export function tableRows(path: string): number[] {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    return (db.prepare("SELECT n FROM t ORDER BY id").all() as { n: number }[]).map((r) =>
      Number(r.n)
    );
  } finally {
    db.close();
  }
}

/** The distinct `n` values of `rows`, sorted. */
export function distinct(rows: number[]): number[] {
  return [...new Set(rows)].sort((a, b) => a - b);
}

/** 1..count. */
export function range(count: number, first = 1): number[] {
  return Array.from({ length: count }, (_, i) => first + i);
}

/** A temp directory for one test, removed afterwards. */
export async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sluice-monitor-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const [command, rows, ...paths] = Deno.args;
  if (command !== "create") {
    console.error("usage: _monitor_helpers.ts create ROWS PATH...");
    Deno.exit(2);
  }
  for (const path of paths) createDatabase(path, Number(rows));
}
