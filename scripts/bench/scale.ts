/**
 * Scale: one replicator process with many databases.
 *
 * 1. Memory (RSS of the process tree, from /proc) and idle CPU (utime + stime over a quiet
 *    window, as % of one core) with 1, 100 and 1,000 idle databases on file replicas: sluice with
 *    one `dir:` entry (`watch: true`), Litestream v0.3.13 with a config listing every database
 *    (v0.3 has no directory mode). Measured once every database has its first replica file and,
 *    for sluice, its one-time level-1 compaction of those files is done.
 * 2. Time from a database's creation (WAL mode, one table, connection closed) to its first file
 *    on the replica, for 1 and for 1,000 databases created at once into the watched directory
 *    (100 with `--quick`), one after the other by a worker thread while this one stamps the
 *    replica files. Litestream v0.3.13 cannot discover new databases: `n/a`.
 * 3. S3 requests per hour for an idle database and for a busy one (10 writes/s), through a
 *    counting HTTP proxy in front of a local S3 server (fauxqs), extrapolated from a window of
 *    30 s (5 s with `--quick`); both tools run side by side, each through its own proxy, after
 *    the initial snapshot and sluice's one-time level-1 compaction of it.
 *
 * 4. Parked tenants (`park-after: 5s` so that the run is short; the default is 1 min): RSS, idle
 *    CPU over 60 s (one whole sweep of the parked; 10 s with `--quick`) and open descriptors
 *    (/proc/<pid>/fd) once all of 1,000 and of 10,000 (2,000 with `--quick`) databases are
 *    parked; then 50 of the 1,000 written once each, one at a time, by a python3 process (commit,
 *    exit), timed from the commit to the first new file on the directory replica; S3 requests
 *    per hour from 10,000 parked tenants (500 with `--quick`) through the counting proxy.
 *    Tenants are copies of one template database (a WAL-mode file without `-wal`).
 * 5. With `--huge` only: RSS and idle CPU of 100,000 parked databases in 1,000 directories × 100
 *    (it takes many minutes until they are all parked).
 *
 *   deno run -A scripts/bench/scale.ts [--quick] [--huge] [--rows=attached,discovery,s3,parked,parked-s3,huge]
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import { dirname, join } from "node:path";
import { startS3Server } from "../s3_server.ts";
import {
  type Background,
  type BenchOptions,
  type BenchResult,
  exists,
  formatTable,
  LITESTREAM,
  percentile,
  progress,
  result,
  sleep,
  startLitestream,
  startSluice,
  treeCpuSeconds,
  treeRssBytes,
  until,
  withTempDir,
} from "./_common.ts";
import {
  createBenchDatabase,
  litestreamConfig,
  runWriter,
  startReplicator,
  type ToolName,
} from "./_replicators.ts";
import { watchReplica } from "./_watch.ts";
import type { Created, CreateRequest } from "./_tenant_worker.ts";

/** A tenant database: WAL mode, one small table with one row. */
function createTenant(path: string): void {
  const db = new DatabaseSync(path);
  db.exec("PRAGMA journal_mode = wal;");
  db.exec("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)");
  db.exec("INSERT INTO notes (body) VALUES ('hello')");
  db.close();
}

function tenantName(i: number): string {
  return `tenant-${String(i).padStart(4, "0")}.db`;
}

/** Options of {@linkcode sluiceDirConfig} beyond the directory and its replica. */
interface DirConfigOptions {
  /** `park-after` of the entry, e.g. `5s` or `0` (never); unset: sluice's default (1 min). */
  parkAfter?: string;
  /** Databases in subdirectories too. */
  recursive?: boolean;
  /** `addr:` for /metrics (with per-database series off), to see how many are parked. */
  metricsPort?: number;
}

/** sluice config: one watched directory replicated to `replicaUrl` (a directory by default). */
function sluiceDirConfig(
  dbDir: string,
  replicaDir: string,
  options: DirConfigOptions = {},
  replicaUrl = `file://${replicaDir}`,
): string {
  const lines: string[] = [];
  if (options.metricsPort !== undefined) {
    lines.push(`addr: 127.0.0.1:${options.metricsPort}`, "metrics:", "  per-database: false");
  }
  lines.push(
    "dbs:",
    `  - dir: ${JSON.stringify(dbDir)}`,
    '    pattern: "*.db"',
    "    watch: true",
  );
  if (options.recursive) lines.push("    recursive: true");
  if (options.parkAfter !== undefined) lines.push(`    park-after: ${options.parkAfter}`);
  lines.push("    replica:", `      url: ${JSON.stringify(replicaUrl)}`, "");
  return lines.join("\n");
}

/** True when every one of `names` has at least one file under `<replicaDir>/<name>/`. */
function allReplicated(replicaDir: string, names: string[]): () => Promise<boolean> {
  const pending = new Set(names);
  return async () => {
    for (const name of [...pending]) {
      const base = join(replicaDir, name);
      if (
        (await exists(join(base, "ltx", "0"))) || (await exists(join(base, "ltx", "9"))) ||
        (await exists(join(base, "generations")))
      ) {
        pending.delete(name);
      } else {
        return false; // check the rest on the next poll
      }
    }
    return true;
  };
}

interface IdleFigures {
  rssMB: number;
  cpuPercent: number;
}

/**
 * Waits until a fresh database's one-time compaction is behind it: past the next level-1
 * boundary (default levels compact every 30 s, aligned to the wall clock) plus `settleMs`, and
 * at a point from which a window of `windowMs` does not cross a level-2 boundary (every 5 min).
 * From then on an idle database has nothing to compact, which is what "idle" measures.
 */
async function pastFirstCompaction(settleMs: number, windowMs: number): Promise<void> {
  const now = Date.now();
  let start = Math.ceil(now / 30_000) * 30_000 + settleMs;
  while ((start % 300_000) + windowMs > 299_000) start += 30_000;
  await sleep(start - now);
}

/** RSS and idle CPU of `tool` replicating `count` idle databases (all replicated first). */
export async function idle(
  tool: ToolName,
  count: number,
  windowSeconds: number,
): Promise<IdleFigures> {
  return await withTempDir(`scale-${tool}-${count}`, async (dir) => {
    const dbDir = join(dir, "dbs");
    const replicaDir = join(dir, "replica");
    await Deno.mkdir(dbDir);
    const names = Array.from({ length: count }, (_, i) => tenantName(i));
    for (const name of names) createTenant(join(dbDir, name));
    const configPath = join(dir, "config.yml");
    let replicator: Background;
    if (tool === "sluice") {
      // Never parked: these rows measure databases that keep their connection.
      await Deno.writeTextFile(configPath, sluiceDirConfig(dbDir, replicaDir, { parkAfter: "0" }));
      replicator = startSluice(["-c", configPath]);
    } else {
      await Deno.writeTextFile(
        configPath,
        litestreamConfig(names.map((name) => ({
          dbPath: join(dbDir, name),
          dest: { type: "file", dir: join(replicaDir, name) },
        }))),
      );
      replicator = await startLitestream(configPath);
    }
    try {
      if (!(await until(allReplicated(replicaDir, names), 180_000, 250))) {
        throw new Error(`${tool}: not all ${count} databases replicated within 180 s`);
      }
      await sleep(3000); // initial snapshots and their follow-up syncs settle
      // sluice then compacts each new database's first files once (Litestream v0.3 has no
      // levels): measure after that.
      if (tool === "sluice") await pastFirstCompaction(5000 + count * 10, windowSeconds * 1000);
      const cpuBefore = treeCpuSeconds(replicator.pid);
      const start = performance.now();
      await sleep(windowSeconds * 1000);
      const cpu = treeCpuSeconds(replicator.pid) - cpuBefore;
      const seconds = (performance.now() - start) / 1000;
      return { rssMB: treeRssBytes(replicator.pid) / 2 ** 20, cpuPercent: (cpu / seconds) * 100 };
    } finally {
      await replicator.stop();
    }
  });
}

/** What {@linkcode discovery} measured. */
export interface DiscoveryFigures {
  /** Milliseconds from each database's creation to its first replica file. */
  lags: number[];
  /** Databases never seen on the replica. */
  missing: number;
  /** Milliseconds from the first creation to the last: the lags depend on this rate. */
  createMs: number;
  /** CPU seconds of sluice's process tree from the first creation until all were replicated. */
  cpuSeconds: number;
}

/** Milliseconds from creation to first replica file of each of `count` databases made at once. */
export async function discovery(count: number): Promise<DiscoveryFigures> {
  return await withTempDir(`discover-${count}`, async (dir) => {
    const dbDir = join(dir, "dbs");
    const replicaDir = join(dir, "replica");
    await Deno.mkdir(dbDir);
    const configPath = join(dir, "config.yml");
    await Deno.writeTextFile(configPath, sluiceDirConfig(dbDir, replicaDir));
    const watcher = await watchReplica(replicaDir, 100);
    const replicator = startSluice(["-c", configPath]);
    const created = new Map<string, number>();
    let cpuSeconds = NaN;
    try {
      await sleep(2000); // started and watching (an empty directory)
      // On a worker: this thread stamps the replica files as they appear (_tenant_worker.ts).
      const names = Array.from({ length: count }, (_, i) => tenantName(i));
      const cpuBefore = treeCpuSeconds(replicator.pid);
      for (const [name, at] of await createInWorker(dbDir, names)) created.set(name, at);
      await until(allReplicated(replicaDir, [...created.keys()]), 120_000, 100);
      cpuSeconds = treeCpuSeconds(replicator.pid) - cpuBefore;
      await sleep(300);
    } finally {
      await replicator.stop();
      await watcher.stop();
    }
    const first = new Map<string, number>();
    for (const [path, at] of watcher.seen) {
      const name = path.slice(replicaDir.length + 1).split("/")[0];
      first.set(name, Math.min(first.get(name) ?? Infinity, at));
    }
    const lags: number[] = [];
    let missing = 0;
    for (const [name, at] of created) {
      const seen = first.get(name);
      if (seen === undefined) missing++;
      else lags.push(seen - at);
    }
    const times = [...created.values()];
    const createMs = times.length > 0 ? Math.max(...times) - Math.min(...times) : 0;
    return { lags, missing, createMs, cpuSeconds };
  });
}

/** Creates the tenants `names` in `dbDir` on a worker thread; resolves to their creation times. */
function createInWorker(dbDir: string, names: string[]): Promise<Created> {
  const worker = new Worker(new URL("./_tenant_worker.ts", import.meta.url), { type: "module" });
  return new Promise<Created>((resolve, reject) => {
    worker.onmessage = (event: MessageEvent<Created>) => resolve(event.data);
    worker.onerror = (event) => {
      event.preventDefault();
      worker.terminate();
      reject(new Error(`tenant worker: ${event.message}`));
    };
    worker.postMessage({ dbDir, names } satisfies CreateRequest);
  });
}

/**
 * Creates the tenant databases `names` (paths relative to `dbDir`) as copies of one template made
 * by {@linkcode createTenant}: a WAL-mode file without `-wal` (its last connection closed), so a
 * copy is a valid database and 100,000 of them take seconds rather than minutes.
 */
async function createTenantsByCopy(dbDir: string, names: string[]): Promise<void> {
  const template = join(dbDir, "..", "template.db");
  createTenant(template);
  const dirs = new Set(names.map((name) => dirname(join(dbDir, name))));
  for (const dir of dirs) await Deno.mkdir(dir, { recursive: true });
  const batch = 64;
  for (let i = 0; i < names.length; i += batch) {
    await Promise.all(
      names.slice(i, i + batch).map((name) => Deno.copyFile(template, join(dbDir, name))),
    );
  }
}

/** A free TCP port on 127.0.0.1 (for sluice's /metrics). */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Databases per state from sluice's /metrics (`sluice_databases_by_state`); empty if down. */
async function databasesByState(port: number): Promise<Record<string, number>> {
  const byState: Record<string, number> = {};
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    for (const match of text.matchAll(/^sluice_databases_by_state\{state="(\w+)"\} (\d+)$/gm)) {
      byState[match[1]] = Number(match[2]);
    }
  } catch {
    // not listening yet
  }
  return byState;
}

/**
 * Waits until all `count` databases are parked (sluice parks only caught-up databases, so they
 * are all on the replica too), logging the states every 30 s.
 * @throws Error when they are not within `timeoutMs`, or sluice exited.
 */
async function untilAllParked(
  sluice: Background,
  port: number,
  count: number,
  timeoutMs: number,
): Promise<number> {
  const start = performance.now();
  let lastLog = start;
  let states: Record<string, number> = {};
  let maxFds = 0;
  const done = await until(
    async () => {
      if (!isAlive(sluice.pid)) {
        throw new Error(
          `sluice exited ${((performance.now() - start) / 1000).toFixed(0)} s after start ` +
            `(${JSON.stringify(states)} of ${count} at the last look, up to ${maxFds} open fds ` +
            `seen): ${exitReason(await sluice.stop())}`,
        );
      }
      states = await databasesByState(port);
      const fds = openDescriptors(sluice.pid).main;
      maxFds = Math.max(maxFds, fds);
      if (performance.now() - lastLog > 30_000) {
        lastLog = performance.now();
        progress(`  ${JSON.stringify(states)} of ${count}, ${fds} open fds`);
      }
      return states.parked === count;
    },
    timeoutMs,
    1000,
  );
  if (!done) {
    throw new Error(
      `not all ${count} databases parked within ${timeoutMs / 1000} s: ` +
        JSON.stringify(states),
    );
  }
  return (performance.now() - start) / 1000;
}

/** The panic of a crashed process (Deno's "panicked at" line and the next), else its last line. */
function exitReason(stderrTail: string): string {
  // deno-lint-ignore no-control-regex
  const plain = stderrTail.replace(/\x1b\[[0-9;]*m/g, "");
  const panic = /thread '[^']*' \(\d+\) panicked at .*\n.*/.exec(plain);
  return panic
    ? `Deno panic: ${panic[0].replace("\n", " ")}`
    : plain.trim().split("\n").pop() ?? "";
}

function isAlive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return !/^\d+ \(.*\) Z/.test(stat);
  } catch {
    return false;
  }
}

/** Open descriptors of `pid` (/proc/<pid>/fd) and of its children (sluice's watcher). */
function openDescriptors(pid: number): { main: number; tree: number } {
  const count = (p: number) => {
    try {
      return [...Deno.readDirSync(`/proc/${p}/fd`)].length;
    } catch {
      return 0;
    }
  };
  const children: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === pid) {
        children.push(Number(entry.name));
      }
    } catch {
      // exited meanwhile
    }
  }
  const main = count(pid);
  return { main, tree: main + children.reduce((sum, child) => sum + count(child), 0) };
}

/** Figures of {@linkcode parkedIdle}. */
interface ParkedFigures extends IdleFigures {
  /** Seconds from sluice's start until every database was parked. */
  parkedAfterSeconds: number;
  /**
   * The window's CPU split: its first {@linkcode PARKED_SETTLE_SECONDS} (V8's memory-reducing
   * collections and the trims of freed memory after a mass parking fall there) and the rest,
   * each as % of one core over its own span.
   */
  settlingPercent: number;
  settledPercent: number;
  /** The span of `settlingPercent`, s. */
  settleSeconds: number;
  fds: { main: number; tree: number };
  /** A parked tenant's first write → its first new replica file, ms (when asked for). */
  wakeLags: number[];
  wakeMissing: number;
}

/** Options of {@linkcode parkedIdle}. */
interface ParkedOptions {
  count: number;
  /** Tenants per subdirectory (a `recursive: true` entry); unset: all in one directory. */
  perDir?: number;
  windowSeconds: number;
  /** Parked tenants to write one at a time afterwards, measuring their wake-up. */
  wakeWrites?: number;
}

function parkedTenantNames(count: number, perDir?: number): string[] {
  return Array.from(
    { length: count },
    (_, i) =>
      perDir
        ? `d${String(Math.floor(i / perDir)).padStart(4, "0")}/t${
          String(i % perDir).padStart(3, "0")
        }.db`
        : `tenant-${String(i).padStart(6, "0")}.db`,
  );
}

/** `park-after` of the parked rows: short, so that the run is. */
const BENCH_PARK_AFTER = "5s";

/** The first part of the parked rows' CPU window, reported apart (see ParkedFigures). */
const PARKED_SETTLE_SECONDS = 15;

/**
 * RSS, idle CPU and descriptors of sluice with `count` tenants parked (`park-after: 5s`), on a
 * directory replica; then, optionally, the wake-up lag of `wakeWrites` of them written once each.
 */
async function parkedIdle(options: ParkedOptions): Promise<ParkedFigures> {
  const { count, perDir, windowSeconds } = options;
  return await withTempDir(`parked-${count}`, async (dir) => {
    const dbDir = join(dir, "dbs");
    const replicaDir = join(dir, "replica");
    await Deno.mkdir(dbDir);
    const names = parkedTenantNames(count, perDir);
    const t0 = performance.now();
    await createTenantsByCopy(dbDir, names);
    progress(`  created ${count} tenants in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const port = freePort();
    const configPath = join(dir, "config.yml");
    await Deno.writeTextFile(
      configPath,
      sluiceDirConfig(dbDir, replicaDir, {
        parkAfter: BENCH_PARK_AFTER,
        recursive: perDir !== undefined,
        metricsPort: port,
      }),
    );
    const sluice = startSluice(["-c", configPath]);
    try {
      const parkedAfterSeconds = await untilAllParked(sluice, port, count, 120_000 + count * 30);
      progress(`  all ${count} parked ${parkedAfterSeconds.toFixed(0)} s after start`);
      await sleep(2000);
      const cpuBefore = treeCpuSeconds(sluice.pid);
      const start = performance.now();
      const settle = Math.min(PARKED_SETTLE_SECONDS, windowSeconds / 2);
      await sleep(settle * 1000);
      const cpuSettling = treeCpuSeconds(sluice.pid) - cpuBefore;
      const settling = (performance.now() - start) / 1000;
      await sleep((windowSeconds - settle) * 1000);
      const cpu = treeCpuSeconds(sluice.pid) - cpuBefore;
      const seconds = (performance.now() - start) / 1000;
      const figures: ParkedFigures = {
        rssMB: treeRssBytes(sluice.pid) / 2 ** 20,
        cpuPercent: (cpu / seconds) * 100,
        settlingPercent: (cpuSettling / settling) * 100,
        settledPercent: ((cpu - cpuSettling) / (seconds - settling)) * 100,
        settleSeconds: settle,
        parkedAfterSeconds,
        fds: openDescriptors(sluice.pid),
        wakeLags: [],
        wakeMissing: 0,
      };
      const stillParked = (await databasesByState(port)).parked;
      if (stillParked !== count) {
        throw new Error(`only ${stillParked} of ${count} still parked after the window`);
      }
      const writes = Math.min(options.wakeWrites ?? 0, count);
      for (let i = 0; i < writes; i++) {
        const name = names[Math.floor((i * count) / writes)];
        const lag = await firstWriteLag(join(dbDir, name), join(replicaDir, name));
        if (lag === undefined) figures.wakeMissing++;
        else figures.wakeLags.push(lag);
      }
      return figures;
    } finally {
      await sluice.stop();
    }
  });
}

/**
 * Writes one row into the (parked) database at `dbPath` from a python3 process (commit, close,
 * exit) and returns the ms from its commit to the first new file under `replicaDir`; undefined
 * when none arrives within 10 s.
 */
async function firstWriteLag(dbPath: string, replicaDir: string): Promise<number | undefined> {
  const watcher = await watchReplica(replicaDir, 50);
  try {
    await until(() => watcher.seen.size > 0, 2000);
    await sleep(100); // the first listing is complete
    const before = new Set(watcher.seen.keys());
    const out = await new Deno.Command("python3", {
      args: [
        "-c",
        "import sqlite3, sys, time\n" +
        "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n" +
        "db.execute(\"INSERT INTO notes (body) VALUES ('woken')\")\n" +
        "print(time.time() * 1000)\n" +
        "db.close()\n",
        dbPath,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error(`writer failed: ${new TextDecoder().decode(out.stderr)}`);
    const committed = Number(new TextDecoder().decode(out.stdout).trim());
    const fresh = () => [...watcher.seen].filter(([path]) => !before.has(path));
    if (!(await until(() => fresh().length > 0, 10_000, 10))) return undefined;
    return Math.min(...fresh().map(([, at]) => at)) - committed;
  } finally {
    await watcher.stop();
  }
}

/** S3 requests per hour from `count` parked tenants (one `dir:` entry, through a counting proxy). */
async function parkedS3Requests(
  count: number,
  windowSeconds: number,
): Promise<{ perHour: number; parkedAfterSeconds: number; byMethod: string }> {
  const s3Server = await startS3Server({ buckets: ["bench"] });
  const proxy = countingProxy(s3Server.endpoint);
  try {
    return await withTempDir(`parked-s3-${count}`, async (dir) => {
      const dbDir = join(dir, "dbs");
      await Deno.mkdir(dbDir);
      await createTenantsByCopy(dbDir, parkedTenantNames(count));
      const port = freePort();
      const configPath = join(dir, "config.yml");
      const url = `s3://bench/tenants?endpoint=${
        encodeURIComponent(proxy.url)
      }&region=us-east-1&force-path-style=true`;
      await Deno.writeTextFile(
        configPath,
        sluiceDirConfig(dbDir, "", { parkAfter: BENCH_PARK_AFTER, metricsPort: port }, url),
      );
      const sluice = startSluice(["-c", configPath], {
        AWS_ACCESS_KEY_ID: "test",
        AWS_SECRET_ACCESS_KEY: "test",
        AWS_REGION: "us-east-1",
      });
      try {
        const parkedAfterSeconds = await untilAllParked(sluice, port, count, 120_000 + count * 60);
        progress(`  all ${count} parked ${parkedAfterSeconds.toFixed(0)} s after start`);
        await sleep(2000);
        proxy.reset();
        await sleep(windowSeconds * 1000);
        const total = proxy.total();
        return {
          perHour: (total * 3600) / windowSeconds,
          parkedAfterSeconds,
          byMethod: JSON.stringify(Object.fromEntries(proxy.counts)),
        };
      } finally {
        await sluice.stop();
      }
    });
  } finally {
    await proxy.close();
    await s3Server.stop();
  }
}

/** A counting reverse proxy in front of the S3 server. */
function countingProxy(target: string) {
  const counts = new Map<string, number>();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (request) => {
      const url = new URL(request.url);
      counts.set(request.method, (counts.get(request.method) ?? 0) + 1);
      const upstream = await fetch(`${target}${url.pathname}${url.search}`, {
        method: request.method,
        headers: request.headers,
        body: request.body,
        redirect: "manual",
      });
      return new Response(upstream.body, { status: upstream.status, headers: upstream.headers });
    },
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    counts: counts as ReadonlyMap<string, number>,
    total: () => [...counts.values()].reduce((a, b) => a + b, 0),
    reset: () => counts.clear(),
    close: () => server.shutdown(),
  };
}

/** S3 requests per hour, idle and busy, for `tool`. */
async function s3Requests(
  tool: ToolName,
  s3Endpoint: string,
  windowSeconds: number,
): Promise<{ idle: number; busy: number }> {
  const proxy = countingProxy(s3Endpoint);
  try {
    return await s3RequestsThrough(tool, proxy, windowSeconds);
  } finally {
    await proxy.close();
  }
}

function s3RequestsThrough(
  tool: ToolName,
  proxy: ReturnType<typeof countingProxy>,
  windowSeconds: number,
): Promise<{ idle: number; busy: number }> {
  return withTempDir(`s3-${tool}`, async (dir) => {
    const dbPath = join(dir, "app.db");
    createBenchDatabase(dbPath);
    const replicator = await startReplicator(tool, dbPath, {
      type: "s3",
      endpoint: proxy.url,
      bucket: "bench",
      path: tool,
    }, dir);
    try {
      if (!(await until(() => proxy.total() > 0, 30_000))) {
        throw new Error(`${tool} sent no request to S3 within 30 s`);
      }
      await sleep(2000); // initial snapshot and first syncs
      // Past sluice's one-time level-1 compaction of the new database (both tools wait alike).
      await pastFirstCompaction(5000, windowSeconds * 1000);
      proxy.reset();
      await sleep(windowSeconds * 1000);
      const idleCount = proxy.total();
      proxy.reset();
      const start = performance.now();
      await runWriter({
        db: dbPath,
        rate: 10,
        seconds: windowSeconds,
        payloadBytes: 100,
        firstK: 1,
      });
      const busyCount = proxy.total();
      const seconds = (performance.now() - start) / 1000;
      return {
        idle: (idleCount * 3600) / windowSeconds,
        busy: (busyCount * 3600) / seconds,
      };
    } finally {
      await replicator.stop();
    }
  });
}

/** The parts of the scale bench, in the order they run (`--rows=` picks some when run alone). */
const SECTIONS = ["attached", "discovery", "s3", "parked", "parked-s3", "huge"] as const;
type Section = typeof SECTIONS[number];

/** The scale figures (the 100,000-tenant row only with `huge`). */
export async function run(options: BenchOptions): Promise<BenchResult[]> {
  const sections = new Set<Section>(SECTIONS.filter((s) => s !== "huge" || options.huge));
  return await runSections(options, sections);
}

async function runSections(
  options: BenchOptions,
  sections: Set<Section>,
  parkedCounts = [1000, options.quick ? 2000 : 10_000],
  parkedS3Count = options.quick ? 500 : 10_000,
): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  /** Litestream's idle figures by database count, for the parked rows beside them. */
  const litestreamIdle = new Map<number, IdleFigures>();
  let litestreamFailure: string | undefined;
  /** Runs one part; a failure becomes an `n/a` row naming it, and the rows go to stderr at once. */
  const part = async (name: string, fn: () => Promise<BenchResult[]>) => {
    let rows: BenchResult[];
    try {
      rows = await fn();
    } catch (err) {
      progress(`scale: ${name} failed: ${(err as Error).message}`);
      rows = [result(name, "", NaN, NaN, "", `${name} failed: ${(err as Error).message}`)];
    }
    progress(`scale: ${name} done\n${formatTable(rows)}`);
    results.push(...rows);
  };
  if (sections.has("attached")) {
    await part(
      "attached",
      () => attachedRows(options, litestreamIdle, (f) => litestreamFailure = f),
    );
  }
  if (sections.has("discovery")) await part("discovery", () => discoveryRows(options));
  if (sections.has("s3")) await part("s3", () => s3Rows(options));
  const window = options.quick ? 10 : 60;
  const windowNote = `CPU over ${window} s${
    window >= 60 ? " (one whole sweep of the parked)" : ""
  }`;
  for (const count of sections.has("parked") ? parkedCounts : []) {
    await part(`${count} parked dbs`, async () => {
      const results: BenchResult[] = [];
      progress(`scale: ${count} parked databases, sluice (park-after: ${BENCH_PARK_AFTER})`);
      const p = await parkedIdle({
        count,
        windowSeconds: window,
        wakeWrites: count === 1000 ? 50 : 0,
      });
      const l = litestreamIdle.get(count);
      const target = count <= 1000 ? ["100 MB", "0.5%"] : ["250 MB", "1%"];
      const note = `sluice: one dir: entry with park-after: ${BENCH_PARK_AFTER} (default 1m), ` +
        `measured once all ${count} were parked (${p.parkedAfterSeconds.toFixed(0)} s after ` +
        `start); ${windowNote}; target < ${target[0]} / < ${target[1]}; baseline: ` +
        (l
          ? "Litestream's attached figures above (it cannot park)"
          : count === 1000
          ? litestreamFailure ?? "Litestream measured in the full run only"
          : "Litestream v0.3.13 not run at this count (see its 1,000 attached figures)");
      results.push(
        result(`RSS, ${count} parked dbs`, "MiB", p.rssMB, l?.rssMB ?? NaN, LITESTREAM, note),
        result(
          `idle CPU, ${count} parked dbs`,
          "% core",
          p.cpuPercent,
          l?.cpuPercent ?? NaN,
          LITESTREAM,
          `${note}; of which ${p.settlingPercent.toFixed(2)} % over the first ` +
            `${p.settleSeconds} s (V8's memory-reducing collections, malloc_trim) and ` +
            `${p.settledPercent.toFixed(2)} % over the rest`,
        ),
        result(
          `open fds, ${count} parked dbs (main process / with watcher)`,
          "fds",
          p.fds.main,
          NaN,
          "",
          `/proc/<pid>/fd of sluice (${p.fds.tree} with its watcher child); target < 500 at 10,000`,
        ),
      );
      if (p.wakeLags.length > 0 || p.wakeMissing > 0) {
        const wakeNote = `${p.wakeLags.length + p.wakeMissing} of the ${count} parked tenants, ` +
          `one at a time: python3 inserts a row, commits, exits; from its commit to the first ` +
          `new file in the directory replica${
            p.wakeMissing ? `; ${p.wakeMissing} never arrived within 10 s` : ""
          }; target p99 < 250 ms; Litestream v0.3.13 does not park`;
        for (const q of [0.5, 0.99]) {
          results.push(
            result(
              `parked tenant's first write → replica p${q * 100}`,
              "ms",
              percentile(p.wakeLags, q),
              NaN,
              LITESTREAM,
              wakeNote,
            ),
          );
        }
      }
      return results;
    });
  }
  if (sections.has("parked-s3")) {
    const count = parkedS3Count;
    const s3Window = options.quick ? 10 : 60;
    await part(`S3 requests/hour, ${count} parked dbs`, async () => {
      progress(`scale: S3 requests of ${count} parked databases, ${s3Window} s`);
      const p = await parkedS3Requests(count, s3Window);
      return [result(
        `S3 requests/hour, ${count} parked dbs`,
        "req/h",
        p.perHour,
        NaN,
        LITESTREAM,
        `one dir: entry with park-after: ${BENCH_PARK_AFTER}, through the counting proxy, ` +
          `counted over ${s3Window} s once all were parked (${p.parkedAfterSeconds.toFixed(0)} s ` +
          `after start), ×3600/${s3Window}; by method ${p.byMethod}; target 0; ` +
          `Litestream v0.3.13 not run at this count`,
      )];
    });
  }
  if (sections.has("huge")) {
    const count = 100_000;
    await part(`${count} parked dbs`, async () => {
      progress(`scale: ${count} parked databases in 1,000 directories × 100`);
      const p = await parkedIdle({ count, perDir: 100, windowSeconds: 60 });
      const note = `1,000 dirs × 100 under one recursive dir: entry, park-after: ` +
        `${BENCH_PARK_AFTER}; all parked ${p.parkedAfterSeconds.toFixed(0)} s after start; CPU ` +
        `over 60 s; ${p.fds.main} fds (${p.fds.tree} with the watcher); target < 1.5 GB / < 5%; ` +
        `Litestream v0.3.13 not run`;
      return [
        result(`RSS, ${count} parked dbs`, "MiB", p.rssMB, NaN, LITESTREAM, note),
        result(`idle CPU, ${count} parked dbs`, "% core", p.cpuPercent, NaN, LITESTREAM, note),
      ];
    });
  }
  return results;
}

/** RSS and idle CPU of databases that keep their connection (park-after: 0), both tools. */
async function attachedRows(
  options: BenchOptions,
  litestreamIdle: Map<number, IdleFigures>,
  onLitestreamFailure: (message: string) => void,
): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  const counts = options.quick ? [100] : [1, 100, 1000];
  const window = options.quick ? 4 : 10;
  for (const count of counts) {
    progress(`scale: ${count} idle databases (attached), sluice`);
    const s = await idle("sluice", count, window);
    progress(`scale: ${count} idle databases, litestream`);
    let l: IdleFigures | undefined;
    let failure: string | undefined;
    try {
      l = await idle("litestream", count, window);
      litestreamIdle.set(count, l);
    } catch (err) {
      failure = `Litestream not measured: ${(err as Error).message}`;
      onLitestreamFailure(failure);
    }
    results.push(
      result(
        `RSS, ${count} idle dbs (attached)`,
        "MiB",
        s.rssMB,
        l?.rssMB ?? NaN,
        LITESTREAM,
        failure ??
          "sluice: one dir: entry (watch: true) with park-after: 0 (never parked); " +
            "Litestream: dbs: listing every path",
      ),
      result(
        `idle CPU, ${count} idle dbs (attached, ${window} s)`,
        "% core",
        s.cpuPercent,
        l?.cpuPercent ?? NaN,
        LITESTREAM,
      ),
    );
  }
  if (options.quick) {
    for (const count of [1, 1000]) {
      results.push(
        result(`RSS, ${count} idle dbs (attached)`, "MiB", NaN, NaN, LITESTREAM, "full run only"),
      );
    }
  }
  return results;
}

/** Creation → first replica file, for 1 and for 1,000 databases created at once. */
async function discoveryRows(options: BenchOptions): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  for (const count of [1, options.quick ? 100 : 1000]) {
    progress(`scale: ${count} databases created at once`);
    const { lags, missing, createMs, cpuSeconds } = await discovery(count);
    // The lags depend on how fast the tenants were created (slower on a loaded machine, which
    // hides sluice's own cost) and on the CPU sluice got: both are shown.
    const note = `sluice: default park-after (1m); Litestream v0.3.13 has no directory watching; ` +
      `created in ${Math.round(createMs)} ms, sluice CPU ${cpuSeconds.toFixed(1)} s, load ${
        Deno.loadavg()[0].toFixed(1)
      }${missing ? `; ${missing} of ${count} never seen` : ""}`;
    const quantiles = count === 1 ? [0.5] : [0.5, 0.99, 1];
    for (const q of quantiles) {
      results.push(
        result(
          q === 1
            ? `create → all on the replica (max), ${count} dbs`
            : `create → first replica file p${q * 100}, ${count} dbs`,
          "ms",
          percentile(lags, q),
          NaN,
          LITESTREAM,
          q === 1 ? `${note}; target < 3 s for 1,000` : note,
        ),
      );
    }
  }
  return results;
}

/** S3 requests per hour of one idle and one busy database, both tools side by side. */
async function s3Rows(options: BenchOptions): Promise<BenchResult[]> {
  const s3Window = options.quick ? 5 : 30;
  const s3: Partial<Record<ToolName, { idle: number; busy: number }>> = {};
  let s3Failure: string | undefined;
  // Both tools at once, each through its own counting proxy to the same S3 server: they are
  // idle or lightly loaded, and this halves the time.
  progress(`scale: S3 requests, sluice and litestream side by side, 2 × ${s3Window} s`);
  const s3Server = await startS3Server({ buckets: ["bench"] });
  try {
    const [sluice, litestream] = await Promise.allSettled(
      (["sluice", "litestream"] as const).map((tool) =>
        s3Requests(tool, s3Server.endpoint, s3Window)
      ),
    );
    if (sluice.status === "rejected") throw sluice.reason;
    s3.sluice = sluice.value;
    if (litestream.status === "fulfilled") s3.litestream = litestream.value;
    else s3Failure = `Litestream not measured: ${(litestream.reason as Error).message}`;
  } finally {
    await s3Server.stop();
  }
  return [
    result(
      "S3 requests/hour, idle db",
      "req/h",
      s3.sluice!.idle,
      s3.litestream?.idle ?? NaN,
      LITESTREAM,
      s3Failure ??
        `counted over ${s3Window} s after the initial snapshot and sluice's one-time level-1 ` +
          `compaction of it, ×3600/${s3Window}`,
    ),
    result(
      "S3 requests/hour, busy db (10 writes/s)",
      "req/h",
      s3.sluice!.busy,
      s3.litestream?.busy ?? NaN,
      LITESTREAM,
      `same window; default sync interval 1 s for both, compaction and retention included when due`,
    ),
  ];
}

if (import.meta.main) {
  // deno run -A scripts/bench/scale.ts [--quick] [--huge] [--rows=parked,huge,…] [--parked-counts=…] [--parked-s3-count=…]
  const rows = Deno.args.find((a) => a.startsWith("--rows="))?.slice(7).split(",");
  const options = { quick: Deno.args.includes("--quick"), huge: Deno.args.includes("--huge") };
  const sections = new Set<Section>(
    rows
      ? SECTIONS.filter((s) => rows.includes(s))
      : SECTIONS.filter((s) => s !== "huge" || options.huge),
  );
  // --parked-counts=1000,5000: other database counts for the parked rows.
  const parkedCounts = Deno.args.find((a) => a.startsWith("--parked-counts="))?.slice(16)
    .split(",").map(Number);
  const s3Count = Deno.args.find((a) => a.startsWith("--parked-s3-count="))?.slice(18);
  console.log(
    formatTable(
      await runSections(options, sections, parkedCounts, s3Count ? Number(s3Count) : undefined),
    ),
  );
}
