/**
 * `deno task test:chaos`: bounded crash, behaviour, storage-fault, concurrency and speedtest1
 * campaigns against the real `sluice replicate` (docs/RELIABILITY.md lists them and their last
 * results).
 *
 *   deno run -A scripts/chaos.ts [--cycles N] [--rounds N] [--seed S] [--only a,b,c,d,e,f]
 *     [--phase-ms MS] [--speedtest-runs N] [--tenant-seconds N] [--json]
 *
 * - a / crash: N SIGKILL/restart cycles (default 100) during writes, checkpoints, uploads,
 *   compactions and snapshots, with short-lived writers (Python, sqlite3 shell, node:sqlite)
 *   alongside;
 * - b / behaviour: N rounds (default 2) of the application's checkpoints, long reads, VACUUM,
 *   journal mode switch, file replacement, WAL deletion and short-lived writers;
 * - c / storage: S3 500s/resets/down/slow/server kill, meta dir disk full, read-only replica;
 *   Azure (Azurite), WebDAV and SFTP (sshd) outages: faults, slow, down, server SIGKILL/restart;
 * - d / concurrency: a second `replicate` of the same database;
 * - e / speedtest1: SQLite's speedtest1 benchmark as the application, N runs (default 10) over
 *   its VACUUM modes, big transactions, checkpoints, 64 KiB pages and test sets (skipped when
 *   scripts/speedtest1.sh could not build it);
 * - f / tenants: N seconds (default 180) of tenant churn in a watched `dir:` (create, write,
 *   delete, move, re-create the same names, remove whole directories; sluice stopped now and
 *   then), every state of every replica checked (scripts/chaos_tenants.ts).
 * - g / crash-park: the crash campaign (half the cycles) with `park-after: 150ms`, a writer
 *   committing once a second and short-lived writers pausing up to 1.5 s, so that sluice parks
 *   and wakes between its kills (the campaign fails if it never did).
 * - h / crash-age: the crash campaign (a quarter of the cycles, no short-lived writers) on an
 *   age-encrypted replica: every restore decrypts, and every file left on the replica must be
 *   an age file.
 *
 * Every campaign ends with a restore checked against what the writer acknowledged, including
 * the scenarios that once found engine bugs (docs/RELIABILITY.md, "Failures found"). Exit
 * status 1 when a campaign failed.
 * Default size: about 10–13 minutes on 2 cores.
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { CampaignResult } from "./chaos_lib.ts";
import { crashCampaign } from "./chaos_crash.ts";
import { behaviourCampaign } from "./chaos_behaviour.ts";
import { APP_STEPS, type AppStep } from "./chaos_app.ts";
import { storageCampaign, type StorageFault } from "./chaos_storage.ts";
import { concurrencyCampaign, type ConcurrencyCase } from "./chaos_concurrency.ts";
import { SPEEDTEST1_VARIANTS, speedtest1Campaign } from "./chaos_speedtest1.ts";
import { tenantsCampaign } from "./chaos_tenants.ts";

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      cycles: { type: "string", default: "100" },
      rounds: { type: "string", default: "2" },
      seed: { type: "string" },
      only: { type: "string", default: "a,b,c,d,e,f,g,h" },
      "phase-ms": { type: "string", default: "3000" },
      "speedtest-runs": { type: "string", default: String(SPEEDTEST1_VARIANTS.length) },
      "tenant-seconds": { type: "string", default: "180" },
      json: { type: "boolean", default: false },
    },
  });
  const seed = values.seed !== undefined ? Number(values.seed) : Date.now() % 1_000_000;
  const only = new Set(values.only.split(",").map((s) => s.trim()));
  const log = (message: string) =>
    console.error(`${new Date().toISOString().slice(11, 19)} ${message}`);
  log(`chaos: seed ${seed} (rerun with --seed ${seed}), campaigns ${[...only].join(",")}`);
  const storageFaults: StorageFault[] = [
    "s3",
    "replica-readonly",
    "meta-full",
    "abs",
    "sftp",
    "webdav",
  ];
  const concurrencyCases: ConcurrencyCase[] = ["same-db", "same-replica"];

  const started = performance.now();
  const results: CampaignResult[] = [];
  if (only.has("a")) {
    results.push(await crashCampaign({ cycles: Number(values.cycles), seed, log }));
  }
  if (only.has("g")) {
    results.push(
      await crashCampaign({
        cycles: Math.ceil(Number(values.cycles) / 2),
        seed: seed + 1,
        log,
        parkAfter: 150,
      }),
    );
  }
  if (only.has("h")) {
    results.push(
      await crashCampaign({
        cycles: Math.ceil(Number(values.cycles) / 4),
        seed: seed + 8,
        log,
        encrypt: true,
        // Kills during encrypted uploads, compactions and snapshots are the point here; the
        // short-lived writers' scenarios are campaign a's.
        shortWriters: [],
      }),
    );
  }
  if (only.has("b")) {
    // Not `replace-now`: mv over a file while sluice's reader keeps the application's TRUNCATE
    // from emptying the WAL makes SQLite apply the old WAL to the new file, corrupting the
    // application's own database whatever sluice does (docs/RELIABILITY.md, F1).
    const steps: AppStep[] = [...APP_STEPS];
    results.push(
      await behaviourCampaign({ rounds: Number(values.rounds), seed: seed + 1, steps, log }),
    );
  }
  if (only.has("c")) {
    results.push(
      await storageCampaign({
        seed: seed + 2,
        faults: storageFaults,
        phaseMs: Number(values["phase-ms"]),
        log,
      }),
    );
  }
  if (only.has("d")) {
    results.push(await concurrencyCampaign({ seed: seed + 3, cases: concurrencyCases, log }));
  }
  if (only.has("e")) {
    results.push(
      await speedtest1Campaign({ runs: Number(values["speedtest-runs"]), seed: seed + 4, log }),
    );
  }
  if (only.has("f")) {
    const durationMs = Number(values["tenant-seconds"]) * 1000;
    results.push(await tenantsCampaign({ durationMs, seed: seed + 5, log }));
  }
  const seconds = (performance.now() - started) / 1000;
  const failed = results.filter((r) => !r.ok);
  if (values.json) {
    console.log(JSON.stringify({ seed, seconds, results }));
  } else {
    console.log(`chaos: seed ${seed}, ${seconds.toFixed(0)} s`);
    for (const r of results) {
      console.log(
        `  ${r.ok ? "ok  " : "FAIL"} ${r.name}: ${r.size} (${(r.durationMs / 1000).toFixed(0)} s)`,
      );
      for (const note of r.notes) console.log(`       ${note}`);
      if (r.error) console.log(`       ${r.error.split("\n")[0]}`);
    }
  }
  Deno.exit(failed.length > 0 ? 1 : 0);
}
