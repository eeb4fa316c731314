/**
 * Campaign (a), process crashes: a writer commits (with big transactions and checkpoints of
 * every kind) while `sluice replicate` is SIGKILLed at random moments and restarted. The config
 * compacts every second and snapshots every few seconds, so kills land during writes, the
 * application's and sluice's own checkpoints, uploads, compactions and snapshots. Every
 * `checkEvery` cycles the replica is restored and checked while sluice is down; at the end
 * sluice shuts down cleanly and the restore must equal the source.
 *
 * Alongside, short-lived writers (scripts/chaos_short_writers.ts: Python, the sqlite3 shell,
 * node:sqlite; each transaction on a new connection) commit all the time, and the long-lived
 * writer is stopped and restarted at random, so that for stretches of time every connection of
 * the application is short-lived: then the last one to close deletes the WAL unless sluice
 * holds its SHARED lock (issue 20). Before each SIGKILL of a sluice that has started
 * replicating, sluice must hold that lock (`/proc/locks`).
 *
 * With `encrypt` (campaign h, crash-age) the replica is age-encrypted (issue 19): every restore
 * decrypts, and at the end every replica file must be an age file.
 *
 * @module
 */

import { join } from "node:path";
import { createDatabase } from "../tests/_sluice.ts";
import {
  type BackgroundWriter,
  campaign,
  type CampaignResult,
  holdsSharedLock,
  leftoverWatchers,
  type Log,
  Rng,
  sleep,
  spawnSluice,
  startWriter,
  until,
  verifyReplica,
  writeConfig,
} from "./chaos_lib.ts";
import {
  startShortWriters,
  WRITER_KINDS,
  type WriterKind,
  writerKindMissing,
} from "./chaos_short_writers.ts";

/** Options of {@linkcode crashCampaign}. */
export interface CrashOptions {
  /** Kill/restart cycles. */
  cycles: number;
  seed: number;
  /** Restore and check every this many cycles (and after the last). */
  checkEvery?: number;
  /** Longest life of one sluice process before its SIGKILL, ms. */
  maxLifeMs?: number;
  /**
   * Kinds of short-lived writer to run alongside (default: every kind installed here; `[]`
   * for none). With any, the long-lived writer is also stopped and restarted at random.
   */
  shortWriters?: readonly WriterKind[];
  /**
   * Park the database after this many ms without a change (the `crash-park` variant): the
   * steady writer then commits once a second and the short-lived ones pause longer, so that
   * sluice parks and wakes between its kills. A parked sluice holds no lock, so the lock check
   * is skipped.
   */
  parkAfter?: number;
  /** Encrypt the replica with a fresh age key (the `crash-age` variant). */
  encrypt?: boolean;
  log: Log;
}

/** Runs the campaign in a temp directory (removed when it passes). */
export function crashCampaign(options: CrashOptions): Promise<CampaignResult> {
  const { cycles, seed, log } = options;
  const checkEvery = options.checkEvery ?? 5;
  const maxLifeMs = options.maxLifeMs ?? 6000;
  const parkAfter = options.parkAfter;
  const name = parkAfter !== undefined ? "crash-park" : options.encrypt ? "crash-age" : "crash";
  return campaign(name, log, async (notes) => {
    const dir = await Deno.makeTempDir({ prefix: "sluice-chaos-crash-" });
    const rng = new Rng(seed);
    const dbPath = join(dir, "app.db");
    const replica = join(dir, "replica");
    const ackFile = join(dir, "acks");
    const configPath = join(dir, "sluice.yml");
    createDatabase(dbPath);
    const age = options.encrypt ? await ageKeys(dir) : undefined;
    await writeConfig(
      configPath,
      `logging: { level: debug }
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
    checkpoint-interval: 2s${parkAfter === undefined ? "" : `\n    park-after: ${parkAfter}ms`}
    min-checkpoint-page-count: 64
    truncate-page-n: 1500
    replica:
      url: file://${replica}${age === undefined ? "" : age.config}
`,
    );
    const verify = (label: string, final = false) =>
      verifyReplica({
        label,
        dbPath,
        replicaUrl: `file://${replica}`,
        replicaSpec: {
          type: "file",
          path: replica,
          ...(age === undefined ? {} : { age: { recipients: [], identities: [age.identity] } }),
        },
        ...(age === undefined ? {} : { restoreArgs: ["--age-identity", age.identityFile] }),
        ackFile: ackFiles,
        workDir: dir,
        final,
      });

    const kinds = options.shortWriters ??
      (await Promise.all(
        WRITER_KINDS.map(async (kind) => (await writerKindMissing(kind)) ? [] : [kind]),
      )).flat();
    const shortAckFile = join(dir, "acks-short");
    const startSteadyWriter = () =>
      startWriter([
        "--db",
        dbPath,
        // Sized so the database stays in the tens of MiB over 100 cycles: a restart after the
        // application restarted the WAL must snapshot it within one short life.
        "--rate",
        parkAfter === undefined ? "80" : "1",
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
    let writer: BackgroundWriter | undefined = startSteadyWriter();
    const steady = { committed: 0, busyErrors: 0, stops: 0 };
    const stopSteadyWriter = async () => {
      const summary = await writer!.stop();
      writer = undefined;
      steady.committed += summary.committed;
      steady.busyErrors += summary.busyErrors;
      steady.stops++;
    };
    const shortWriters = kinds.length > 0
      ? startShortWriters({
        db: dbPath,
        ackFile: shortAckFile,
        kinds,
        rng: new Rng(seed + 7),
        // Parking needs quiet spells: pauses of up to 1.5 s between the short writers.
        ...(parkAfter === undefined ? {} : { maxPauseMs: 1500 }),
      })
      : undefined;
    const ackFiles = shortWriters ? [ackFile, shortAckFile] : [ackFile];
    let lockChecks = 0;
    let parks = 0;
    let readTxLost = 0;
    let wakes = 0;
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
        // Its start line is a readiness signal: from then on, sluice must hold the lock.
        const started = !exited && / replicating db=/.test(sluice.stderr());
        const lockLost = started && parkAfter === undefined &&
          !(await holdsSharedLock(sluice.pid, dbPath));
        if (started) lockChecks++;
        const stopped = await sluice.stop("SIGKILL");
        // Each life's debug log stays in the campaign's directory, kept when it fails.
        await Deno.writeTextFile(join(dir, `sluice-${cycle}.log`), stopped.stderr);
        readTxLost += (stopped.stderr.match(/ read transaction lost /g) ?? []).length;
        parks += (stopped.stderr.match(/ parked db=/g) ?? []).length;
        wakes += (stopped.stderr.match(/ waking parked database /g) ?? []).length;
        if (lockLost) {
          throw new Error(
            `cycle ${cycle}: sluice (pid ${sluice.pid}) replicates but holds no SHARED lock on ` +
              `the database after ${life} ms (issue 20)`,
          );
        }
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
        // Only short-lived writers for a while, then the long-lived one again.
        if (shortWriters && rng.next() < 0.25) {
          if (writer) await stopSteadyWriter();
          else writer = startSteadyWriter();
        }
      }
      if (writer) await stopSteadyWriter();
      const short = await shortWriters?.stop();
      // A clean run after the last crash: SIGTERM syncs everything.
      const sluice = spawnSluice(["replicate", "-c", configPath]);
      // Started (a SIGTERM before Deno installs sluice's handler kills it: exit 143), then
      // a moment of replication; the SIGTERM's final sync uploads the rest.
      await until(
        "the final sluice replicating",
        () => / replicating db=/.test(sluice.stderr()),
        60_000,
      );
      await sleep(1000);
      const stopped = await sluice.stop("SIGTERM");
      await Deno.writeTextFile(join(dir, "sluice-final.log"), stopped.stderr);
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
      // A re-begin of sluice's read transaction that failed: recovered from by the next sync.
      notes.push(`${readTxLost} read transactions lost and begun again`);
      if (age !== undefined) {
        const files = await assertEncrypted(replica);
        notes.push(`all ${files} replica files are age files`);
      }
      const leftovers = await leftoverWatchers(dir);
      if (leftovers.length > 0) {
        throw new Error(`watcher processes outlived their sluice: pids ${leftovers.join(", ")}`);
      }
      if (parkAfter !== undefined) {
        if (parks === 0 || wakes === 0) {
          throw new Error(`the database never parked and woke (${parks} parks, ${wakes} wakes)`);
        }
        notes.push(`parked ${parks} times, woken ${wakes} times between the kills`);
      }
      notes.push(
        `${cycles} SIGKILLs, ${checks} intermediate restores checked (${stalls} without ` +
          `progress since the previous), SHARED lock held at ${lockChecks} kills, final ` +
          `restore = source (${final.m} transactions; long-lived writer ${steady.committed} ` +
          `committed, ${steady.busyErrors} busy, stopped ${steady.stops} times` +
          (short
            ? `; short-lived writers ${short.committed} committed by ${short.writers.python} ` +
              `python, ${short.writers.sqlite3} sqlite3 shell, ${short.writers.node} node:sqlite`
            : "; no short-lived writers") +
          ")",
      );
      passed = true;
      return `${cycles} cycles, ${checks + 1} restores, ${final.m} transactions`;
    } finally {
      await writer?.stop().catch(() => {});
      await shortWriters?.stop().catch(() => {});
      if (passed) await Deno.remove(dir, { recursive: true });
      else notes.push(`kept ${dir} for inspection`);
    }
  });
}

/** A fresh age key pair: the identity, its file, and the config lines of a replica. */
async function ageKeys(
  dir: string,
): Promise<{ identity: string; identityFile: string; config: string }> {
  const age = await import("age-encryption");
  const identity = await age.generateIdentity();
  const identityFile = join(dir, "age-identity.txt");
  await Deno.writeTextFile(identityFile, `${identity}\n`);
  const recipient = await age.identityToRecipient(identity);
  const config = `\n      age:\n        recipients: [${recipient}]\n` +
    `        identity-files: [${identityFile}]`;
  return { identity, identityFile, config };
}

/**
 * Every LTX file of the replica (temp files of killed writes included) starts with age's magic.
 * @returns how many files were checked.
 */
async function assertEncrypted(replica: string): Promise<number> {
  const magic = "age-encryption.org/v1";
  let files = 0;
  for (const level of await Array.fromAsync(Deno.readDir(join(replica, "ltx")))) {
    for await (const f of Deno.readDir(join(replica, "ltx", level.name))) {
      const path = join(replica, "ltx", level.name, f.name);
      const head = await Deno.open(path).then(async (file) => {
        try {
          const buffer = new Uint8Array(magic.length);
          const n = await file.read(buffer);
          return new TextDecoder().decode(buffer.subarray(0, n ?? 0));
        } finally {
          file.close();
        }
      });
      // A temp file cut by a SIGKILL may be empty or short; anything it holds is age's.
      if (!magic.startsWith(head) || (!f.name.endsWith(".tmp") && head !== magic)) {
        throw new Error(`${path} is not an age file`);
      }
      files++;
    }
  }
  return files;
}
