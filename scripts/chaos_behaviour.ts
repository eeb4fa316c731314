/**
 * Campaign (b), application behaviour: scripts/chaos_app.ts runs its steps (random checkpoint
 * modes, long read transactions, VACUUM shrink and regrow, journal mode DELETE and back, the
 * file replaced by a copy, the WAL deleted while sluice is stopped, short-lived writers of three
 * kinds that reconnect for every transaction) against a database that
 * `sluice replicate` is replicating. After every step sluice is stopped (SIGKILL or SIGTERM at
 * random), the replica is restored and checked, and sluice is started again.
 *
 * @module
 */

import { join } from "node:path";
import { ROOT } from "../tests/_sluice.ts";
import { createDatabase } from "../tests/_sluice.ts";
import { APP_STEPS, type AppStep } from "./chaos_app.ts";
import {
  campaign,
  type CampaignResult,
  holdsSharedLock,
  type Log,
  Rng,
  sleep,
  type SluiceProcess,
  spawnSluice,
  verifyReplica,
  writeConfig,
} from "./chaos_lib.ts";

/** Options of {@linkcode behaviourCampaign}. */
export interface BehaviourOptions {
  /** Rounds; each round runs every step once, in a random order. */
  rounds: number;
  seed: number;
  /** Transactions per step. */
  count?: number;
  /** Steps of a round (default {@linkcode APP_STEPS}; `replace-now` reproduces F1). */
  steps?: readonly AppStep[];
  log: Log;
}

async function runApp(
  dbPath: string,
  ackFile: string,
  step: AppStep,
  count: number,
  seed: number,
): Promise<Record<string, unknown>> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      join(ROOT, "scripts", "chaos_app.ts"),
      "--db",
      dbPath,
      "--ack-file",
      ackFile,
      "--step",
      step,
      "--count",
      String(count),
      "--seed",
      String(seed),
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  if (!out.success) {
    throw new Error(`app step ${step} failed (${out.code}): ${decoder.decode(out.stderr).trim()}`);
  }
  return JSON.parse(decoder.decode(out.stdout).trim().split("\n").pop()!);
}

/** Runs the campaign in a temp directory (removed when it passes). */
export function behaviourCampaign(options: BehaviourOptions): Promise<CampaignResult> {
  const { rounds, seed, log } = options;
  const count = options.count ?? 40;
  return campaign("behaviour", log, async (notes) => {
    const dir = await Deno.makeTempDir({ prefix: "sluice-chaos-app-" });
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
  - interval: 2s
snapshot:
  interval: 6s
  retention: 12s
l0-retention: 10m
dbs:
  - path: ${dbPath}
    monitor-interval: 200ms
    checkpoint-interval: 2s
    min-checkpoint-page-count: 64
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
    let sluice: SluiceProcess | undefined;
    const start = async () => {
      const started = sluice = spawnSluice(["replicate", "-c", configPath]);
      // Running (it listens for SIGTERM from its first line; a SIGTERM while Deno still loads
      // the program would be death by signal): it has opened the database, or failed to.
      const deadline = Date.now() + 30_000;
      while (!/ replicating db=| cannot open /.test(started.stderr()) && Date.now() < deadline) {
        await sleep(50);
      }
      await sleep(300); // the first sync
    };
    const stop = async (signal: Deno.Signal) => {
      const s = sluice!;
      sluice = undefined;
      const stopping = Date.now();
      const stopped = await s.stop(signal);
      if (Date.now() - stopping > 2000) {
        log(`[behaviour] ${signal} took ${Date.now() - stopping} ms`);
      }
      if (signal === "SIGTERM" && stopped.code !== 0) {
        throw new Error(`sluice exited ${stopped.code} on SIGTERM: ${stopped.stderr}`);
      }
      if (signal === "SIGKILL" && stopped.signal !== "SIGKILL") {
        throw new Error(`sluice had exited by itself (${stopped.code}): ${stopped.stderr}`);
      }
    };
    let passed = false;
    let steps = 0;
    const journalOutcomes: string[] = [];
    try {
      await start();
      for (let round = 1; round <= rounds; round++) {
        const order = [...(options.steps ?? APP_STEPS)].sort(() => rng.next() - 0.5);
        for (const step of order) {
          const stepStarted = Date.now();
          if (step === "delete-wal") await stop(rng.pick(["SIGKILL", "SIGTERM"] as const));
          let result = await runApp(dbPath, ackFile, step, count, rng.int(1, 1e9));
          const running = sluice;
          if (step === "reconnect" && running && / replicating db=/.test(running.stderr())) {
            // Every writer's close was the application's last: sluice's lock must have stayed.
            if (!(await holdsSharedLock(running.pid, dbPath))) {
              throw new Error(
                `round ${round} reconnect: sluice (pid ${running.pid}) holds no SHARED lock on ` +
                  `the database after the short-lived writers (issue 20)`,
              );
            }
          }
          if (step === "journal") {
            journalOutcomes.push(String(result.journal));
            if (result.journal === "refused") {
              // Refused while sluice holds the database open: do it while sluice is stopped.
              await stop(rng.pick(["SIGKILL", "SIGTERM"] as const));
              result = await runApp(dbPath, ackFile, step, count, rng.int(1, 1e9));
              journalOutcomes.push(`${result.journal} (sluice stopped)`);
              await start();
            }
          }
          if (step === "delete-wal") await start();
          await sleep(rng.int(300, 1200)); // let it sync (and notice a replaced file)
          const signal = rng.pick(["SIGKILL", "SIGTERM"] as const);
          await stop(signal);
          const checked = await verify(`round ${round} ${step}`);
          steps++;
          log(
            `[behaviour] round ${round} ${step} (${signal}, ${Date.now() - stepStarted} ms): ` +
              `restore holds 1..${checked.m} ` +
              `(acked ${checked.acked}, required ≥ ${checked.required}) ${JSON.stringify(result)}`,
          );
          await start();
        }
      }
      await sleep(1000);
      await stop("SIGTERM");
      const final = await verify("final", true);
      notes.push(
        `${steps} steps (${rounds} × ${
          (options.steps ?? APP_STEPS).join(", ")
        }), each followed by a restore; ` +
          `journal switch: ${journalOutcomes.join(", ")}; final restore = source ` +
          `(${final.m} transactions)`,
      );
      passed = true;
      return `${rounds} rounds, ${steps} steps, ${final.m} transactions`;
    } finally {
      if (sluice) await (sluice as SluiceProcess).stop("SIGKILL");
      if (passed) await Deno.remove(dir, { recursive: true });
      else notes.push(`kept ${dir} for inspection`);
    }
  });
}
