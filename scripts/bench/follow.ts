/**
 * Read replicas (`sluice restore --follow`): how long a commit on the primary takes to become
 * visible to a reader of the follower's output, on a directory replica and on S3 (fauxqs), and
 * how many requests an idle follower makes to S3 per hour. Default settings throughout: sync
 * interval 100 ms (file) / 1 s (S3) on the primary, `--interval 1s` on the follower.
 *
 * Method: a writer process commits one small row per transaction at 20/s and records each
 * commit time right after `COMMIT` returns; this process reads `max(k)` from the output every
 * 2 ms (read-only node:sqlite, as an application would) and stamps when each transaction
 * first became visible. Lag = visible − committed. Idle requests: the follower talks to S3
 * through a counting proxy; requests are counted for a stretch with no writes and scaled to
 * an hour. There is no baseline (Litestream v0.3.13 has no follow mode).
 *
 *   deno run -A scripts/bench/follow.ts [--quick]
 *
 * @module
 */

import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import {
  type BenchOptions,
  type BenchResult,
  formatTable,
  percentile,
  progress,
  result,
  ROOT,
  sleep,
  spawnBackground,
  startSluice,
  until,
  withTempDir,
} from "./_common.ts";
import { createBenchDatabase, runWriter } from "./_replicators.ts";
import { FAUXQS_CREDENTIALS, startS3Server } from "../s3_server.ts";

const NONE = "(no follow mode in Litestream v0.3.13)";

interface LagRun {
  lags: number[];
  missing: number;
}

function startFollower(out: string, url: string, env?: Record<string, string>) {
  return spawnBackground(
    "follower",
    Deno.execPath(),
    ["run", "-A", join(ROOT, "main.ts"), "restore", "-f", "-o", out, url],
    env,
  );
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Commit → visible lags at 20 tx/s for `seconds`, through `url`. */
async function measureLag(
  dir: string,
  url: string,
  replicaArgs: { url: string; env?: Record<string, string> },
  seconds: number,
): Promise<LagRun> {
  const db = join(dir, "app.db");
  const out = join(dir, "follow.db");
  createBenchDatabase(db);
  const replicate = startSluice([db, replicaArgs.url], replicaArgs.env);
  let follower: ReturnType<typeof startFollower> | undefined;
  try {
    await runWriter({ db, rate: 0, seconds: 0.2, payloadBytes: 100, firstK: 0 });
    const probe = join(dir, "probe.db");
    if (
      !(await until(
        async () => {
          const r = await new Deno.Command(Deno.execPath(), {
            args: ["run", "-A", join(ROOT, "main.ts"), "restore", "-o", probe, url],
            env: replicaArgs.env,
            stdout: "null",
            stderr: "null",
          }).output();
          await Deno.remove(probe).catch(() => {});
          return r.success;
        },
        30_000,
        200,
      ))
    ) throw new Error("the replica never became restorable");
    follower = startFollower(out, url, replicaArgs.env);
    if (!(await until(() => exists(out), 30_000))) throw new Error("no follower output");
    await sleep(1500);
    const reader = new DatabaseSync(out, { readOnly: true });
    reader.exec("PRAGMA busy_timeout = 1000");
    const query = reader.prepare("SELECT coalesce(max(k), 0) AS k FROM bench");
    const visibleAt = new Map<number, number>();
    let seen = (query.get() as { k: number }).k;
    const firstK = seen + 1;
    let writing = true;
    const run = runWriter({ db, rate: 20, seconds, payloadBytes: 100, firstK }).finally(() =>
      writing = false
    );
    let drainUntil = Infinity;
    for (;;) {
      const now = performance.timeOrigin + performance.now();
      const k = (query.get() as { k: number }).k;
      for (let i = seen + 1; i <= k; i++) visibleAt.set(i, now);
      seen = Math.max(seen, k);
      if (!writing && drainUntil === Infinity) drainUntil = now + 5000;
      if (now > drainUntil) break;
      await sleep(2);
    }
    reader.close();
    const writer = await run;
    const lags: number[] = [];
    let missing = 0;
    writer.times.forEach((committedAt, i) => {
      const at = visibleAt.get(writer.firstK + i);
      if (at === undefined) missing++;
      else lags.push(at - committedAt);
    });
    return { lags, missing };
  } finally {
    await follower?.stop();
    await replicate.stop();
  }
}

/** Requests per hour of an idle follower on S3 (counted through a proxy). */
async function idleRequests(seconds: number): Promise<number> {
  const server = await startS3Server({ buckets: ["bench"] });
  let count = 0;
  let counting = false;
  const proxy = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (req) => {
    if (counting) count++;
    const url = new URL(req.url);
    const target = `${server.endpoint}${url.pathname}${url.search}`;
    const body = req.method === "GET" || req.method === "HEAD"
      ? undefined
      : await req.arrayBuffer();
    const response = await fetch(target, { method: req.method, headers: req.headers, body });
    return new Response(response.body, { status: response.status, headers: response.headers });
  });
  const proxyEndpoint = `http://127.0.0.1:${proxy.addr.port}`;
  const env = {
    AWS_ACCESS_KEY_ID: FAUXQS_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: FAUXQS_CREDENTIALS.secretAccessKey,
  };
  const s3url = (endpoint: string) =>
    `s3://bench/app?endpoint=${
      encodeURIComponent(endpoint)
    }&region=us-east-1&force-path-style=true`;
  try {
    return await withTempDir("follow-idle", async (dir) => {
      const db = join(dir, "app.db");
      const out = join(dir, "follow.db");
      createBenchDatabase(db);
      const replicate = startSluice([db, s3url(server.endpoint)], env);
      let follower: ReturnType<typeof startFollower> | undefined;
      try {
        await runWriter({ db, rate: 0, seconds: 0.2, payloadBytes: 100, firstK: 0 });
        await sleep(3000);
        follower = startFollower(out, s3url(proxyEndpoint), env);
        if (!(await until(() => exists(out), 30_000))) throw new Error("no follower output");
        await sleep(2000);
        counting = true;
        await sleep(seconds * 1000);
        counting = false;
        return (count / seconds) * 3600;
      } finally {
        await follower?.stop();
        await replicate.stop();
      }
    });
  } finally {
    await proxy.shutdown();
    await server.stop();
  }
}

/** The follow figures. */
export async function run(options: BenchOptions): Promise<BenchResult[]> {
  const seconds = options.quick ? 5 : 20;
  const results: BenchResult[] = [];
  progress("follow: directory replica");
  const dirRun = await withTempDir("follow-dir", (dir) => {
    const replica = `file://${join(dir, "replica")}`;
    return measureLag(dir, replica, { url: replica }, seconds);
  });
  progress("follow: S3 replica");
  const server = await startS3Server({ buckets: ["bench"] });
  let s3Run: LagRun;
  try {
    const url = `s3://bench/lag?endpoint=${encodeURIComponent(server.endpoint)}` +
      `&region=us-east-1&force-path-style=true`;
    const env = {
      AWS_ACCESS_KEY_ID: FAUXQS_CREDENTIALS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: FAUXQS_CREDENTIALS.secretAccessKey,
    };
    s3Run = await withTempDir("follow-s3", (dir) => measureLag(dir, url, { url, env }, seconds));
  } finally {
    await server.stop();
  }
  for (const [where, r] of [["directory", dirRun], ["S3", s3Run]] as const) {
    const note = r.missing ? `${r.missing} of ${r.lags.length + r.missing} tx never seen` : NONE;
    for (const q of [0.5, 0.99]) {
      results.push(result(
        `follower lag p${q * 100}, ${where} replica @ 20 writes/s (${r.lags.length} tx)`,
        "ms",
        percentile(r.lags, q),
        NaN,
        "",
        note,
      ));
    }
  }
  progress("follow: idle requests on S3");
  const idleSeconds = options.quick ? 10 : 60;
  results.push(result(
    `idle follower requests to S3 per hour (--interval 1s, ${idleSeconds} s counted)`,
    "req/h",
    await idleRequests(idleSeconds),
    NaN,
    "",
    NONE,
  ));
  return results;
}

if (import.meta.main) {
  console.log(formatTable(await run({ quick: Deno.args.includes("--quick") })));
}
