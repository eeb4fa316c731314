/**
 * Campaign (a), process crashes: a writer commits (with big transactions and checkpoints of
 * every kind) while `sluice replicate` is SIGKILLed at random moments and restarted. The config
 * compacts every second and snapshots every few seconds, so kills land during writes, the
 * application's and sluice's own checkpoints, uploads, compactions and snapshots. Every
 * `checkEvery` cycles the replica is restored and checked while sluice is down; at the end
 * sluice shuts down cleanly and the restore must equal the source.
 *
 * @module
 */

import { join } from "node:path";
import { createDatabase } from "../tests/_sluice.ts";
import {
  campaign,
  type CampaignResult,
  leftoverWatchers,
  type Log,
  Rng,
  sleep,
  spawnSluice,
  startWriter,
  verifyReplica,
  writeConfig,
} from "./chaos_lib.ts";

/** Options of {@linkcode crashCampaign}. */
export interface CrashOptions {
  /** Kill/restart cycles. */
  cycles: number;
  seed: number;
  /** Restore and check every this many cycles (and after the last). */
  checkEvery?: number;
  /** Longest life of one sluice process before its SIGKILL, ms. */
  maxLifeMs?: number;
  log: Log;
}

/** Runs the campaign in a temp directory (removed when it passes). */
export function crashCampaign(options: CrashOptions): Promise<CampaignResult> {
  const { cycles, seed, log } = options;
  const checkEvery = options.checkEvery ?? 5;
  const maxLifeMs = options.maxLifeMs ?? 6000;
  return campaign("crash", log, async (notes) => {
    const dir = await Deno.makeTempDir({ prefix: "sluice-chaos-crash-" });
    const rng = new Rng(seed);
    const dbPath = join(dir, "app.db");
    const replica = join(dir, "replica");
    const ackFile = join(dir, "acks");
    const configPath = join(dir, "sluice.yml");
    createDatabase(dbPath);
    await writeConfig(
      configPath,
      `
levels:
  - interval: 1s
  - interval: 3s
snapshot:
  interval: 4s
  retention: 8s
l0-retention: 10m
dbs:
  - path: ${dbPath}
    monitor-interval: 250ms
    checkpoint-interval: 2s
    min-checkpoint-page-count: 64
    truncate-page-n: 1500
    replica:
      url: file://${replica}
`,
    );
    const verify = (label: string, final = false) =>
      verifyReplica({
        label,
        dbPath,
        replicaUrl: `file://${replica}`,
        replicaSpec: { type: "file", path: replica },
        ackFile,
        workDir: dir,
        final,
      });

    const writer = startWriter([
      "--db",
      dbPath,
      // Sized so the database stays in the tens of MiB over 100 cycles: a restart after the
      // application restarted the WAL must snapshot it within one short life.
      "--rate",
      "80",
      "--big-every",
      "120",
      "--big-pages",
      "60",
      "--checkpoint-mode",
      "random",
      "--checkpoint-every",
      "97",
      "--busy-timeout",
      "100",
      "--seed",
      String(seed),
      "--ack-file",
      ackFile,
      "--ack-times",
    ]);
    let passed = false;
    try {
      let lastM = 0;
      let checks = 0;
      let stalls = 0; // checks where the replica had not moved since the previous one
      for (let cycle = 1; cycle <= cycles; cycle++) {
        const sluice = spawnSluice(["replicate", "-c", configPath]);
        // Mostly short lives (writes, uploads, startup), some long enough for compactions
        // and snapshots.
        const life = rng.next() < 0.7 ? rng.int(50, 1500) : rng.int(1500, maxLifeMs);
        const exited = await Promise.race([
          sleep(life).then(() => false),
          sluice.status.then(() => true),
        ]);
        const stopped = await sluice.stop("SIGKILL");
        if (exited) {
          throw new Error(
            `cycle ${cycle}: sluice exited by itself (${stopped.code}): ${stopped.stderr}`,
          );
        }
        if (cycle % checkEvery === 0 || cycle === cycles) {
          const result = await verify(`cycle ${cycle}`);
          if (result.m < lastM) {
            throw new Error(`cycle ${cycle}: the replica went back from ${lastM} to ${result.m}`);
          }
          if (result.m === lastM) stalls++;
          lastM = result.m;
          checks++;
          log(
            `[crash] cycle ${cycle}/${cycles}: restore holds 1..${result.m} (acked ${result.acked}, required ≥ ${result.required})`,
          );
        }
      }
      const summary = await writer.stop();
      // A clean run after the last crash: SIGTERM syncs everything.
      const sluice = spawnSluice(["replicate", "-c", configPath]);
      await sleep(2500);
      const stopped = await sluice.stop("SIGTERM");
      if (stopped.code !== 0) {
        throw new Error(`clean shutdown exited ${stopped.code}: ${stopped.stderr}`);
      }
      const final = await verify("final", true);
      await sleep(200);
      // Temp files of writes cut by a SIGKILL: harmless (never listed), but never cleaned up.
      let tmpFiles = 0;
      for (const root of [replica, join(dir, ".app.db-sluice")]) {
        for (const level of await Array.fromAsync(Deno.readDir(join(root, "ltx")))) {
          for await (const f of Deno.readDir(join(root, "ltx", level.name))) {
            if (f.name.endsWith(".tmp")) tmpFiles++;
          }
        }
      }
      notes.push(`${tmpFiles} leftover *.ltx.tmp files in the replica and meta dir`);
      const leftovers = await leftoverWatchers(dir);
      if (leftovers.length > 0) {
        throw new Error(`watcher processes outlived their sluice: pids ${leftovers.join(", ")}`);
      }
      notes.push(
        `${cycles} SIGKILLs, ${checks} intermediate restores checked (${stalls} without ` +
          `progress since the previous), final restore = source ` +
          `(${final.m} transactions, ${summary.committed} committed, ${summary.busyErrors} busy)`,
      );
      passed = true;
      return `${cycles} cycles, ${checks + 1} restores, ${final.m} transactions`;
    } finally {
      await writer.stop().catch(() => {});
      if (passed) await Deno.remove(dir, { recursive: true });
      else notes.push(`kept ${dir} for inspection`);
    }
  });
}
