/**
 * `sluice replicate [-c FILE] [--exec CMD] [DB_PATH REPLICA_URL]`: replicate until SIGINT or
 * SIGTERM (or until the `exec` child exits), then sync one last time and exit.
 *
 * @module
 */

import { createLogger } from "../log/mod.ts";
import { describeS3Profiles } from "../replica/mod.ts";
import { type Managed, Store, WorkQueue } from "../engine/mod.ts";
import type { FinalSyncFailure } from "../engine/mod.ts";
import { databaseEntry } from "./_engine.ts";
import { loadCommandConfig, parseReplicateArgs } from "./args.ts";
import type { DatabaseConfig } from "../config/mod.ts";
import { DirectoryMonitor } from "../discovery/mod.ts";
import { ControlServer, snapshotHandler } from "../daemon/mod.ts";
import { checkHealth, type DaemonStatus, type HTTPServer, serveHTTP } from "../daemon/mod.ts";
import { Metrics } from "../daemon/mod.ts";
import { VERSION } from "./version.ts";
import {
  BACKGROUND_WORKER_NICE,
  CODEC_WORKER_LINGER_MS,
  keepIdleWorkers,
  lowerWorkerPriority,
} from "../pipeline/mod.ts";

/** Runs the command; resolves to the exit code. */
export async function run(args: string[]): Promise<number> {
  // SIGINT/SIGTERM stop new work; the store then syncs and uploads one last time. Listening
  // before anything else: a stop that arrives while the configuration loads is a clean exit
  // (systemd stopping a unit that is still starting), not death by signal.
  const stopSignal = Promise.withResolvers<string>();
  const signals = (["SIGINT", "SIGTERM"] as const).map((signal) => {
    const handler = () => stopSignal.resolve(signal);
    Deno.addSignalListener(signal, handler);
    return [signal, handler] as const;
  });
  const options = parseReplicateArgs(args);
  const config = await loadCommandConfig(options);
  const exec = options.exec ?? config.exec;
  const logger = createLogger(config.logging);
  // Once per S3 endpoint: the provider profile that shapes its requests, and why it was chosen.
  const specs = config.dbs.map((db) => db.replica.spec);
  const s3Specs = specs.flatMap((spec) => spec.type === "s3" ? [spec] : []);
  for (const fields of describeS3Profiles(s3Specs)) logger.info("s3 provider profile", fields);
  if (!config.retention.enabled) {
    logger.warn(
      "retention is disabled: no replica file is ever deleted (local L0 cleanup goes on)",
    );
  }
  // The control channel lets `sluice snapshot` ask this process for a snapshot of a database
  // it replicates (src/daemon/control.ts); without it, such a snapshot waits until this process exits.
  const control: ControlServer | undefined = await ControlServer.listen(
    snapshotHandler({
      get: (path: string): Managed | undefined => store.get(path) ?? dirStore.get(path),
    }),
    { logger },
  ).catch((err) => {
    logger.warn("no control channel; sluice snapshot cannot reach this process", {
      error: (err as Error).message,
    });
    return undefined;
  });
  // One heavy-work queue for the process: snapshots and compactions of all databases share it.
  const work = new WorkQueue(config.backgroundJobs);
  // A daemon's large syncs come every interval: the codec worker waits for the next one.
  keepIdleWorkers(CODEC_WORKER_LINGER_MS);
  // Compactions and snapshots yield the CPU to the application and to the syncs.
  lowerWorkerPriority(BACKGROUND_WORKER_NICE);
  const takeover = options.takeover ?? false;
  const store = new Store({ logger, controlSocket: control?.path, work, takeover });

  // Directory entries (`dir:`): one DirectoryMonitor each, started after the path databases
  // and stopped before the stores close. They feed a second store whose databases get their
  // `-wal` wake-ups from the monitor's one watcher (watchWAL: false), not a watcher per directory.
  const dirStore = new Store({
    logger,
    watchWAL: false,
    controlSocket: control?.path,
    work,
    takeover,
  });
  const dirEntries: DatabaseConfig[] = [];
  const monitors: DirectoryMonitor[] = [];
  let http: HTTPServer | undefined;
  let metrics: Metrics | undefined;

  try {
    // `addr:` serves /metrics and /status (src/daemon/http.ts) for both stores; a taken address fails
    // the command before any database is opened.
    if (config.addr !== undefined) {
      const startedAt = new Date().toISOString();
      const status = () =>
        [...store.status(), ...dirStore.status()].sort((a, b) => a.path < b.path ? -1 : 1);
      metrics = new Metrics({
        status,
        version: VERSION,
        perDatabase: config.metrics?.perDatabase,
        perDatabaseLimit: config.metrics?.perDatabaseLimit,
        opening: () => store.openingCount + dirStore.openingCount,
        logger,
      });
      http = await serveHTTP({
        addr: config.addr,
        metrics,
        logger,
        status: (): DaemonStatus => ({
          pid: Deno.pid,
          version: VERSION,
          startedAt,
          config: config.source ?? null,
          databases: status(),
        }),
        health: () =>
          checkHealth(
            [...store.status(), ...dirStore.status()], // unsorted: order does not matter here
            [store, dirStore].flatMap((s) =>
              s.unopenedPaths.map((path) => ({ path, reason: s.refusal(path)?.message }))
            ),
            config.health,
          ),
      });
    }
    for (const dbConfig of config.dbs) {
      if (dbConfig.path === undefined) {
        dirEntries.push(dbConfig); // started below, once the path databases are in
        continue;
      }
      // A database that cannot be opened yet is retried by the store; others go on. One that
      // another `sluice replicate` already replicates is a mistake to report, not to wait out.
      if (!await store.add(databaseEntry(config, dbConfig, dbConfig.path))) {
        const refusal = store.refusal(dbConfig.path);
        if (refusal) {
          await store.close();
          throw refusal;
        }
      }
    }
    try {
      for (const dbConfig of dirEntries) {
        const monitor = new DirectoryMonitor({
          dir: dbConfig.dir!,
          pattern: dbConfig.pattern,
          recursive: dbConfig.recursive,
          watch: dbConfig.watch,
          store: dirStore,
          entryFor: (dbPath) => databaseEntry(config, dbConfig, dbPath),
          scanInterval: dbConfig.monitorInterval,
          logger,
        });
        monitors.push(monitor);
        await monitor.start();
      }
    } catch (err) {
      // A dir entry that cannot work (missing directory; nothing found with watch: false)
      // fails the command, after releasing everything already started.
      await Promise.all(monitors.map((monitor) => monitor.close()));
      await Promise.all([store.close(), dirStore.close()]);
      throw err;
    }
    let code = 0;
    if (exec) {
      // The child gets the signals too (same process group); its exit ends replication.
      code = await runChild(exec, logger);
    } else {
      await stopSignal.promise;
    }
    logger.info("stopping: final sync");
    await Promise.all(monitors.map((monitor) => monitor.close())); // dir entries: stop finding
    const failures = (await Promise.all([store.close(), dirStore.close()])).flat();
    if (failures.length === 0) return code;
    // A replica left behind is a failure even after a clean stop; a failed `exec` child's own
    // exit code still wins (the error is logged either way).
    const error = new FinalSyncError(failures);
    if (code !== 0) {
      logger.error(error.message);
      return code;
    }
    throw error;
  } finally {
    for (const [signal, handler] of signals) Deno.removeSignalListener(signal, handler);
    await http?.close();
    metrics?.close();
    await control?.close();
  }
}

/**
 * The final sync of at least one database failed: its replica is behind the database, by the
 * TXIDs and bytes the message gives. `replicate` then exits 1.
 */
export class FinalSyncError extends Error {
  /** The databases whose final sync failed. */
  readonly failures: readonly FinalSyncFailure[];
  /** Builds an error naming each database, how far behind its replica is, and why. */
  constructor(failures: readonly FinalSyncFailure[]) {
    const each = failures.map((f) =>
      `${f.path}: local TXID ${hex(f.localTXID)}, replica TXID ${
        f.replicaTXID === undefined ? "unknown" : hex(f.replicaTXID)
      }, ${f.files} L0 file(s) not shipped (${f.ltxBytes} bytes, ${f.walBytes} bytes of WAL) ` +
      `(${f.error})`
    );
    super(
      `final sync failed; ${
        failures.length === 1 ? "a replica is behind its database" : "replicas are behind"
      } (the next start ships the rest): ${each.join("; ")}`,
    );
    this.name = "FinalSyncError";
    this.failures = failures;
  }
}

function hex(txid: number): string {
  return txid.toString(16).padStart(16, "0");
}

/** Runs the application command through the shell; forwards SIGINT/SIGTERM to it. */
async function runChild(command: string, logger: ReturnType<typeof createLogger>): Promise<number> {
  const child = new Deno.Command("/bin/sh", {
    args: ["-c", command],
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  const forward = (signal: Deno.Signal) => () => {
    try {
      child.kill(signal);
    } catch { /* already gone */ }
  };
  const handlers = (["SIGINT", "SIGTERM"] as const).map((s) => [s, forward(s)] as const);
  for (const [s, h] of handlers) Deno.addSignalListener(s, h);
  try {
    const status = await child.status;
    logger.info("exec child exited", { code: status.code });
    return status.code;
  } finally {
    for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
  }
}
