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
 *    (100 with `--quick`). Litestream v0.3.13 cannot discover new databases: `n/a`.
 * 3. S3 requests per hour for an idle database and for a busy one (10 writes/s), through a
 *    counting HTTP proxy in front of a local S3 server (fauxqs), extrapolated from a window of
 *    30 s (5 s with `--quick`); both tools run side by side, each through its own proxy, after
 *    the initial snapshot and sluice's one-time level-1 compaction of it.
 *
 *   deno run -A scripts/bench/scale.ts [--quick]
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { startS3Server } from "../s3_server.ts";
import {
  type Background,
  type BenchOptions,
  type BenchResult,
  exists,
  formatTable,
  LITESTREAM,
  nowMs,
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

/** sluice config: one watched directory replicated to a file replica. */
function sluiceDirConfig(dbDir: string, replicaDir: string): string {
  return [
    "dbs:",
    `  - dir: ${JSON.stringify(dbDir)}`,
    '    pattern: "*.db"',
    "    watch: true",
    "    replica:",
    `      url: ${JSON.stringify(`file://${replicaDir}`)}`,
    "",
  ].join("\n");
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
      await Deno.writeTextFile(configPath, sluiceDirConfig(dbDir, replicaDir));
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

/** Milliseconds from creation to first replica file of each of `count` databases made at once. */
export async function discovery(count: number): Promise<{ lags: number[]; missing: number }> {
  return await withTempDir(`discover-${count}`, async (dir) => {
    const dbDir = join(dir, "dbs");
    const replicaDir = join(dir, "replica");
    await Deno.mkdir(dbDir);
    const configPath = join(dir, "config.yml");
    await Deno.writeTextFile(configPath, sluiceDirConfig(dbDir, replicaDir));
    const watcher = await watchReplica(replicaDir, 100);
    const replicator = startSluice(["-c", configPath]);
    const created = new Map<string, number>();
    try {
      await sleep(2000); // started and watching (an empty directory)
      for (let i = 0; i < count; i++) {
        const name = tenantName(i);
        createTenant(join(dbDir, name));
        created.set(name, nowMs());
      }
      await until(allReplicated(replicaDir, [...created.keys()]), 120_000, 100);
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
    return { lags, missing };
  });
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

/** The scale figures. */
export async function run(options: BenchOptions): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  const counts = options.quick ? [100] : [1, 100, 1000];
  const window = options.quick ? 4 : 10;
  for (const count of counts) {
    progress(`scale: ${count} idle databases, sluice`);
    const s = await idle("sluice", count, window);
    progress(`scale: ${count} idle databases, litestream`);
    let l: IdleFigures | undefined;
    let failure: string | undefined;
    try {
      l = await idle("litestream", count, window);
    } catch (err) {
      failure = `Litestream not measured: ${(err as Error).message}`;
    }
    results.push(
      result(
        `RSS, ${count} idle dbs`,
        "MiB",
        s.rssMB,
        l?.rssMB ?? NaN,
        LITESTREAM,
        failure ??
          (count === 1
            ? "sluice: one dir: entry (watch: true); Litestream: dbs: listing every path"
            : "sluice: one dir: entry (watch: true); Litestream: dbs: listing every path"),
      ),
      result(
        `idle CPU, ${count} idle dbs (${window} s)`,
        "% core",
        s.cpuPercent,
        l?.cpuPercent ?? NaN,
        LITESTREAM,
      ),
    );
  }
  if (options.quick) {
    for (const count of [1, 1000]) {
      results.push(result(`RSS, ${count} idle dbs`, "MiB", NaN, NaN, LITESTREAM, "full run only"));
    }
  }
  for (const count of [1, options.quick ? 100 : 1000]) {
    progress(`scale: ${count} databases created at once`);
    const { lags, missing } = await discovery(count);
    const note = `Litestream v0.3.13 has no directory watching${
      missing ? `; ${missing} of ${count} never seen` : ""
    }`;
    for (const q of [0.5, 0.99]) {
      results.push(
        result(
          `create → first replica file p${q * 100}, ${count} dbs`,
          "ms",
          percentile(lags, q),
          NaN,
          LITESTREAM,
          note,
        ),
      );
    }
  }
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
  results.push(
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
  );
  return results;
}

if (import.meta.main) {
  console.log(formatTable(await run({ quick: Deno.args.includes("--quick") })));
}
