/**
 * `sluice restore [-c FILE] [-o OUT] [--txid HEX16 | --timestamp RFC3339] [--if-db-not-exists]
 * [--if-replica-exists] [--integrity-check none|quick|full] [--json] DB_PATH|REPLICA_URL`:
 * rebuild a database from its replica, at the latest state, a TXID or a point in time.
 *
 * The source is a replica URL (then `-o` is required) or a database path found in the config
 * (then the database is restored to that path unless `-o` says otherwise). An existing output
 * is never overwritten: a restore over a live database would corrupt it. With `-f` the output
 * is kept up to date until SIGINT/SIGTERM (src/follow/), and an output the follower wrote before
 * is resumed.
 *
 * @module
 */

import {
  ConfigError,
  findDatabase,
  identitiesFromFiles,
  isURL,
  loadConfig,
  parseReplicaURL,
  type ReplicaSpec,
  resolveLocalPath,
} from "../config/mod.ts";
import { follow } from "../follow/mod.ts";
import { createLogger } from "../log/mod.ts";
import { formatTXID } from "../ltx/mod.ts";
import {
  AgeReplicaClient,
  createReplicaClient,
  type LTXFileInfo,
  type ReplicaClient,
  replicaContent,
  ReplicaError,
} from "../replica/mod.ts";
import {
  findExistingOutput,
  NoBackupError,
  OutputExistsError,
  restore,
  type RestoreResult,
} from "../restore/mod.ts";
import { defaultConfigPath, parseRestoreArgs, type RestoreArgs, UsageError } from "./args.ts";

/** Restores larger than this show progress on a terminal. */
const PROGRESS_THRESHOLD = 64 << 20;

/**
 * Runs the command; resolves to the exit code.
 * @throws {UsageError} | {ConfigError} for the user's mistakes (exit 2), anything else for a
 * failed restore (exit 1); `src/cli/mod.ts` prints them.
 */
export async function run(args: string[]): Promise<number> {
  const started = performance.now();
  const options = parseRestoreArgs(args);
  const source = await resolveSource(options.source, options.config);
  source.spec = await withAgeIdentities(source.spec, options.ageIdentityFiles);
  const outputPath = options.output ?? source.dbPath;
  if (outputPath === undefined) {
    throw new UsageError(
      `restoring from the replica at ${options.source} needs -o OUT (the path to restore to); ` +
        `no config lists it as a database`,
      "restore",
    );
  }
  if (options.follow) return await runFollow(source.spec, outputPath, options);

  const existing = await findExistingOutput(outputPath);
  if (existing === outputPath && options.ifDBNotExists) {
    report(
      options.json,
      { path: outputPath, skipped: "output exists" },
      `output ${outputPath} exists; nothing restored (--if-db-not-exists)`,
    );
    return 0;
  }
  if (existing !== undefined) throw new OutputExistsError(existing, outputPath);

  // SIGINT/SIGTERM abort the restore, which then removes its temp file.
  const controller = new AbortController();
  const onSignal = () => controller.abort(new Error("restore interrupted; no output was written"));
  const signals = ["SIGINT", "SIGTERM"] as const;
  for (const signal of signals) Deno.addSignalListener(signal, onSignal);
  const client = createReplicaClient(source.spec);
  const progress = progressReporter(outputPath);
  let result: RestoreResult;
  try {
    result = await restore(client, {
      outputPath,
      txid: options.txid,
      timestamp: options.timestamp,
      integrityCheck: options.integrityCheck,
      onProgress: progress.update,
      signal: controller.signal,
      onReplan: (err, attempt) =>
        console.error(
          `${err.message}; compaction or retention removed it: planning again (${attempt})`,
        ),
    });
  } catch (err) {
    if (err instanceof NoBackupError && options.ifReplicaExists) {
      report(
        options.json,
        { path: outputPath, skipped: "no backup" },
        `${err.message}; nothing restored (--if-replica-exists)`,
      );
      return 0;
    }
    throw await explainEncrypted(client, err);
  } finally {
    progress.done();
    for (const signal of signals) Deno.removeSignalListener(signal, onSignal);
    await client.close();
  }

  const durationMs = Math.round(performance.now() - started);
  report(
    options.json,
    {
      path: result.path,
      txid: formatTXID(result.txid),
      pageSize: result.pageSize,
      size: result.bytes,
      files: fileEntries(result.files),
      durationMs,
    },
    `restored ${result.path} to TXID ${formatTXID(result.txid)}: ${result.bytes} bytes ` +
      `(${result.commit} pages of ${result.pageSize}) from ${result.files.length} ` +
      `file${result.files.length === 1 ? "" : "s"} at ${client.location} in ${durationMs} ms` +
      (result.checksumsVerified ? ", database checksums verified" : ""),
  );
  return 0;
}

/**
 * `spec` with the identities of `--age-identity` files added (the config's stay).
 * @throws {ConfigError} for a missing, empty or malformed identity file.
 */
export async function withAgeIdentities(
  spec: ReplicaSpec,
  files: readonly string[] = [],
): Promise<ReplicaSpec> {
  if (files.length === 0) return spec;
  const identities = await identitiesFromFiles(files);
  return {
    ...spec,
    age: {
      recipients: spec.age?.recipients ?? [],
      identities: [...(spec.age?.identities ?? []), ...identities],
    },
  };
}

/**
 * A plain client read an age-encrypted replica (the LTX decoder then fails on the first
 * file): replaces the decoder's error by one that says so and names the fix.
 */
async function explainEncrypted(client: ReplicaClient, err: unknown): Promise<unknown> {
  if (client instanceof AgeReplicaClient || err instanceof ReplicaError) return err;
  const content = await replicaContent(client).catch(() => undefined);
  if (content !== "encrypted") return err;
  return new ReplicaError(
    `replica ${client.location} is encrypted with age and no identity was given; ` +
      `pass --age-identity FILE (or set age.identities in the config); nothing was restored`,
    { cause: err },
  );
}

/**
 * `restore -f`: restores (or resumes) the output, then applies new replica files until
 * SIGINT/SIGTERM, which finish or roll back the application in progress; exit 0 then.
 */
async function runFollow(spec: ReplicaSpec, outputPath: string, options: RestoreArgs) {
  const logger = createLogger({ level: "info" });
  const controller = new AbortController();
  const onSignal = () => controller.abort(new Error("follow stopped by a signal"));
  const signals = ["SIGINT", "SIGTERM"] as const;
  for (const signal of signals) Deno.addSignalListener(signal, onSignal);
  const client = createReplicaClient(spec);
  try {
    await follow(client, {
      outputPath,
      intervalMs: options.intervalMs,
      integrityCheck: options.integrityCheck,
      logger,
      signal: controller.signal,
    }, (start) =>
      report(
        options.json,
        { path: outputPath, txid: formatTXID(start.txid), resumed: start.resumed },
        `${start.resumed ? "resumed" : "restored"} ${outputPath} at TXID ${
          formatTXID(start.txid)
        }; following ${client.location} until SIGINT/SIGTERM`,
      ));
  } catch (err) {
    if (controller.signal.aborted) return 0;
    throw await explainEncrypted(client, err);
  } finally {
    for (const signal of signals) Deno.removeSignalListener(signal, onSignal);
    await client.close();
  }
  return 0;
}

/** Prints the result: one JSON object, or a line for people. */
function report(json: boolean, value: Record<string, unknown>, text: string): void {
  console.log(json ? JSON.stringify(value) : text);
}

/** Progress on stderr, only for large restores on a terminal; redraws at most 5 times a second. */
function progressReporter(outputPath: string): {
  update?: (done: number, total: number) => void;
  done: () => void;
} {
  if (!Deno.stderr.isTerminal()) return { done: () => {} };
  const encoder = new TextEncoder();
  let shown = false;
  let last = 0;
  return {
    update(done, total) {
      if (total <= PROGRESS_THRESHOLD) return;
      const now = performance.now();
      if (done < total && now - last < 200) return;
      last = now;
      shown = true;
      const percent = Math.floor((done / total) * 100);
      const mib = (n: number) => (n / (1 << 20)).toFixed(0);
      Deno.stderr.writeSync(
        encoder.encode(
          `\rrestoring ${outputPath}: ${percent}% (${mib(done)} of ${mib(total)} MiB)`,
        ),
      );
    },
    done() {
      if (shown) Deno.stderr.writeSync(encoder.encode("\n"));
    },
  };
}

/** Where a command reads a replica from, and the database path when it came from a config. */
export interface ReplicaSource {
  spec: ReplicaSpec;
  /** The configured database the replica belongs to (absolute), when looked up in a config. */
  dbPath?: string;
}

/**
 * Resolves a `DB_PATH|REPLICA_URL` argument. With `-c`, a path is a database looked up in that
 * config. Without it, a path listed in the default config (when that file exists) is such a
 * database too; any other path, and every URL, is the replica itself.
 * @throws {ConfigError} for a bad config, a database the config does not list, or a bad URL.
 */
export async function resolveSource(source: string, configPath?: string): Promise<ReplicaSource> {
  if (isURL(source)) return { spec: parseReplicaURL(source) };
  const dbPath = resolveLocalPath(source);
  const fallback = defaultConfigPath();
  const path = configPath ?? (await isFile(fallback) ? fallback : undefined);
  if (path !== undefined) {
    const found = findDatabase(await loadConfig(path), dbPath);
    if (found !== undefined) return { spec: found.replica, dbPath };
    if (configPath !== undefined) {
      throw new ConfigError(
        `database ${dbPath} is not in config ${configPath}; give a configured database path or a replica URL`,
      );
    }
  }
  return { spec: parseReplicaURL(source) };
}

/** The JSON/table form of listed files: TXIDs as 16 hex digits, times as ISO with ms. */
export function fileEntries(files: readonly LTXFileInfo[]): {
  level: number;
  minTXID: string;
  maxTXID: string;
  size: number;
  created: string;
}[] {
  return files.map((file) => ({
    level: file.level,
    minTXID: formatTXID(file.minTXID),
    maxTXID: formatTXID(file.maxTXID),
    size: file.size,
    created: file.createdAt.toISOString(),
  }));
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}
