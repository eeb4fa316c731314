/**
 * Campaign (d), concurrency: two `sluice replicate` processes must never write one database's
 * L0 files or one replica at the same time.
 *
 * - `same-db`: a second `replicate` of a database that one already replicates exits non-zero
 *   at once with one line naming the meta directory and the holder; the first goes on and its
 *   replica restores to the source.
 * - `same-replica`: a second database pointed at a replica path another database already uses
 *   must be refused with a clear error naming the owner marker on the replica. Regression test
 *   for F3 (docs/RELIABILITY.md, fixed): the second process used to write into the first's
 *   replica.
 *
 * @module
 */

import { join } from "node:path";
import { createDatabase } from "../tests/_sluice.ts";
import {
  campaign,
  type CampaignResult,
  type Log,
  replicaPosition,
  sleep,
  spawnSluice,
  startWriter,
  until,
  verifyReplica,
} from "./chaos_lib.ts";

/** The scenarios of this campaign. */
export const CONCURRENCY_CASES = ["same-db", "same-replica"] as const;
/** One scenario. */
export type ConcurrencyCase = (typeof CONCURRENCY_CASES)[number];

/** Options of {@linkcode concurrencyCampaign}. */
export interface ConcurrencyOptions {
  cases?: readonly ConcurrencyCase[];
  seed: number;
  log: Log;
}

/** Runs the scenarios, each in its own temp directory (removed when it passes). */
export function concurrencyCampaign(options: ConcurrencyOptions): Promise<CampaignResult> {
  const cases = options.cases ?? ["same-db"];
  return campaign("concurrency", options.log, async (notes) => {
    for (const name of cases) {
      const dir = await Deno.makeTempDir({ prefix: `sluice-chaos-${name}-` });
      let passed = false;
      try {
        const outcome = name === "same-db"
          ? await sameDatabase(dir, options.seed)
          : await sameReplica(dir);
        notes.push(`${name}: ${outcome}`);
        options.log(`[concurrency] ${name}: ${outcome}`);
        passed = true;
      } finally {
        if (passed) await Deno.remove(dir, { recursive: true });
        else notes.push(`kept ${dir} for inspection`);
      }
    }
    return cases.join(", ");
  });
}

/** Waits for `process` to exit within `ms`; undefined when it is still running. */
async function exitWithin(
  status: Promise<Deno.CommandStatus>,
  ms: number,
): Promise<Deno.CommandStatus | undefined> {
  return await Promise.race([status, sleep(ms).then(() => undefined)]);
}

async function sameDatabase(dir: string, seed: number): Promise<string> {
  const dbPath = join(dir, "app.db");
  const replica = join(dir, "replica");
  const ackFile = join(dir, "acks");
  createDatabase(dbPath);
  const first = spawnSluice(["replicate", dbPath, `file://${replica}`]);
  const writer = startWriter([
    "--db",
    dbPath,
    "--rate",
    "100",
    "--seed",
    String(seed),
    "--ack-file",
    ackFile,
    "--ack-times",
  ]);
  try {
    await until(
      "the first upload",
      async () => (await replicaPosition({ type: "file", path: replica })) > 0,
    );
    const second = spawnSluice(["replicate", dbPath, `file://${join(dir, "other-replica")}`]);
    const status = await exitWithin(second.status, 15_000);
    if (!status) {
      await second.stop("SIGKILL");
      throw new Error("a second sluice replicate of the same database was not refused");
    }
    const stderr = (await second.stop()).stderr.trim();
    const lines = stderr.split("\n");
    const last = lines[lines.length - 1];
    if (status.code === 0) throw new Error(`the refused process exited 0: ${stderr}`);
    if (!last.includes(".app.db-sluice") || !/in use|pid \d+/.test(last)) {
      throw new Error(`the refusal does not name the meta directory and holder: ${last}`);
    }
    if (await exitWithin(first.status, 0)) throw new Error("the first process exited");
    await sleep(500);
    await writer.stop();
    await sleep(500);
    const stopped = await first.stop("SIGTERM");
    if (stopped.code !== 0) throw new Error(`first process exited ${stopped.code}`);
    const final = await verifyReplica({
      label: "same-db final",
      dbPath,
      replicaUrl: `file://${replica}`,
      replicaSpec: { type: "file", path: replica },
      ackFile,
      workDir: dir,
      final: true,
    });
    return `second process refused (exit ${status.code}): "${last.slice(0, 160)}"; ` +
      `first unaffected, restore = source (${final.m} transactions)`;
  } finally {
    await writer.stop().catch(() => {});
    await first.stop("SIGKILL");
  }
}

async function sameReplica(dir: string): Promise<string> {
  const replica = join(dir, "replica");
  const a = join(dir, "a.db");
  const b = join(dir, "b.db");
  createDatabase(a);
  createDatabase(b);
  const first = spawnSluice(["replicate", a, `file://${replica}`]);
  try {
    await until(
      "the first upload",
      async () => (await replicaPosition({ type: "file", path: replica })) > 0,
    );
    const second = spawnSluice(["replicate", b, `file://${replica}`]);
    const status = await exitWithin(second.status, 10_000);
    if (!status) {
      await second.stop("SIGKILL");
      throw new Error(
        "F3: a second database replicating into the same replica path was not refused " +
          "(no marker on the replica)",
      );
    }
    const last = (await second.stop()).stderr.trim().split("\n").pop() ?? "";
    if (status.code === 0) throw new Error(`the refused process exited 0: ${last}`);
    return `second database refused (exit ${status.code}): "${last.slice(0, 160)}"`;
  } finally {
    await first.stop("SIGKILL");
  }
}
