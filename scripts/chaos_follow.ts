/**
 * Chaos campaign for read replicas (`sluice restore --follow`): the scenario of
 * tests/follow_test.ts (a writer at 50 tx/s with its own checkpoints, `sluice replicate`
 * compacting L1 every second and snapshotting every 5 s with retention, two node:sqlite readers
 * and a python3 reader checking a running-total invariant and `quick_check` in a loop), for
 * longer, while the follower is killed (SIGKILL) or stopped (SIGTERM) and restarted, the
 * replicator is killed and restarted, and this process holds long read transactions on OUT.
 *
 * Pass: no reader ever saw a violated invariant or a failed `quick_check`, and OUT equals the
 * source within 10 s of the writer's end. Readers' errors are counted, not failures: after a
 * SIGKILL mid-application read-only readers get SQLITE_READONLY_ROLLBACK until the follower is
 * back (README "Read replicas").
 *
 *   deno run -A scripts/chaos_follow.ts [--seconds 60] [--seed N]
 *
 * @module
 */

import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { parseArgs } from "node:util";
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
} from "../tests/_follow.ts";

/** The campaign's outcome. */
export interface FollowChaosResult {
  ok: boolean;
  seed: number;
  committed: number;
  actions: Record<string, number>;
  readers: ReaderReport[];
  convergedMs: number | null;
}

function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(fn: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) return false;
    await sleep(25);
  }
  return true;
}

/** Runs the campaign for `seconds` of writing. */
export async function followChaos(seconds: number, seed: number): Promise<FollowChaosResult> {
  const rand = random(seed);
  const dir = await Deno.makeTempDir({ prefix: "sluice-chaos-follow-" });
  const source = join(dir, "app.db");
  const out = join(dir, "follow.db");
  const stop = join(dir, "stop");
  const replica = join(dir, "replica");
  const url = `file://${replica}`;
  createSource(source);
  const config = join(dir, "sluice.yml");
  await Deno.writeTextFile(config, configText(source, [`url: ${url}`]));
  for (const [name, text] of [["writer.ts", WRITER], ["reader.ts", DENO_READER]]) {
    await Deno.writeTextFile(join(dir, name), text);
  }
  await Deno.writeTextFile(join(dir, "reader.py"), PYTHON_READER);
  const startReplicate = () =>
    spawn(Deno.execPath(), ["run", "-A", MAIN, "replicate", "-c", config]);
  let replicate = startReplicate();
  let follower: Proc | undefined;
  const readers: Proc[] = [];
  const actions: Record<string, number> = {};
  try {
    if (!(await until(() => exists(join(replica, "ltx", "0")), 30_000))) {
      throw new Error("the replica never got a file");
    }
    follower = startFollower(out, url);
    if (!(await until(() => exists(out), 30_000))) throw new Error("no first restore");
    const ready = [1, 2, 3].map((i) => join(dir, `ready${i}`));
    readers.push(
      spawn(Deno.execPath(), ["run", "-A", join(dir, "reader.ts"), out, stop, ready[0]]),
      spawn(Deno.execPath(), ["run", "-A", join(dir, "reader.ts"), out, stop, ready[1]]),
      spawn("python3", [join(dir, "reader.py"), out, stop, ready[2]]),
    );
    for (const file of ready) await until(() => exists(file), 30_000);
    const writer = spawn(Deno.execPath(), [
      "run",
      "-A",
      join(dir, "writer.ts"),
      source,
      String(seconds),
      "50",
    ]);
    let writing = true;
    writer.child.status.then(() => writing = false);
    while (writing) {
      await sleep(500 + rand() * 2000);
      if (!writing) break;
      const r = rand();
      const action = r < 0.4
        ? "follower-kill"
        : r < 0.6
        ? "follower-term"
        : r < 0.75
        ? "replicate-kill"
        : "long-read";
      actions[action] = (actions[action] ?? 0) + 1;
      if (action === "follower-kill" || action === "follower-term") {
        await follower.stop(action === "follower-kill" ? "SIGKILL" : "SIGTERM");
        await sleep(rand() * 1000);
        follower = startFollower(out, url);
      } else if (action === "replicate-kill") {
        await replicate.stop("SIGKILL");
        replicate = startReplicate();
      } else {
        const db = new DatabaseSync(out, { readOnly: true });
        try {
          db.exec("PRAGMA busy_timeout = 5000");
          db.exec("BEGIN");
          db.prepare("SELECT n FROM meta").get();
          await sleep(1000 + rand() * 1000);
          db.exec("COMMIT");
        } catch { /* the follower was mid-recovery: a reader error, not a violation */ }
        db.close();
      }
    }
    const committed = JSON.parse(await writer.stdout).committed as number;
    const expected = contents(source);
    const started = performance.now();
    const converged = await until(() => safeContents(out) === expected, 10_000);
    await Deno.writeTextFile(stop, "");
    const reports: ReaderReport[] = [];
    for (const reader of readers) {
      await reader.child.status;
      reports.push(JSON.parse(await reader.stdout) as ReaderReport);
    }
    const ok = converged && reports.every((report) => report.violations.length === 0);
    return {
      ok,
      seed,
      committed,
      actions,
      readers: reports,
      convergedMs: converged ? Math.round(performance.now() - started) : null,
    };
  } finally {
    await Deno.writeTextFile(stop, "").catch(() => {});
    for (const proc of [...readers, follower, replicate]) await proc?.stop("SIGKILL");
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { seconds: { type: "string", default: "60" }, seed: { type: "string" } },
  });
  const seed = values.seed ? Number(values.seed) : Math.floor(Math.random() * 2 ** 31);
  const result = await followChaos(Number(values.seconds), seed);
  console.log(JSON.stringify(result));
  Deno.exit(result.ok ? 0 : 1);
}
