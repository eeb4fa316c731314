/**
 * Loading the YAML config file: environment expansion, parsing with line numbers, strict key
 * checking, validation, defaults, and checks across databases.
 *
 * @module
 */

import { isMap, LineCounter, parseDocument } from "yaml";
import { dirname, resolve } from "node:path";
import { ConfigError } from "./error.ts";
import { expandEnv } from "./_env.ts";
import { describe, type KeyRules, type MapReader, MapReader as Reader, Source } from "./_yaml.ts";
import {
  cleanS3Path,
  isURL,
  normalizeEndpoint,
  parseReplicaURL,
  type ReplicaSpec,
  resolveLocalPath,
} from "./replica_url.ts";
import {
  type Config,
  type DatabaseConfig,
  DEFAULTS,
  type LogLevel,
  type LogType,
  type MetricsConfig,
  type PageEncoding,
  type ReplicaConfig,
} from "./types.ts";
import { patternProblem } from "./pattern.ts";
import { ABS_ONLY_KEYS, absSpecFromKeys, applyABSSettings, refuseABSKeys } from "./_abs.ts";
import {
  applySFTPWebDAVSettings,
  refuseSFTPWebDAVKeys,
  SFTP_WEBDAV_KEYS,
  sftpSpecFromKeys,
  webdavSpecFromKeys,
} from "./_sftp_webdav.ts";
import { checkDatabases } from "./_checks.ts";
import { adoptPendingAgeKeys, pendingAgeKeys, readAgeKeys } from "./_age_keys.ts";
import { checkAgeKeys } from "./age.ts";
import { gcsSpec, readProfileKeys, S3_PROFILE_KEYS } from "./_s3_profile_keys.ts";

/** S3's smallest multipart part (except the last), 5 MiB. */
const MIN_PART_SIZE = 5 * 1024 * 1024;

/** Where `sluice` looks for a config file when neither `-c` nor positional arguments are given. */
export const DEFAULT_CONFIG_PATH = "/etc/sluice.yml";

/** Litestream replica settings sluice does not implement (other backends, encryption, …). */
const UNSUPPORTED_REPLICA_SETTINGS: Record<string, boolean | null> = {
  "validation-interval": null,
  "auto-recover": false,
  "sse-customer-algorithm": null,
  "sse-customer-key": null,
  "sse-customer-key-path": null,
  "sse-kms-key-id": null,
  jwt: null,
  seed: null,
  creds: null,
  nkey: null,
  username: null,
  token: null,
  tls: null,
  "root-cas": null,
  "client-cert": null,
  "client-key": null,
  "max-reconnects": null,
  "reconnect-wait": null,
  timeout: null,
};

/** Replica settings that may also be given once at the top level as defaults (as in Litestream). */
const SHARED_REPLICA_KEYS = [
  "sync-interval",
  "access-key-id",
  "secret-access-key",
  "region",
  "bucket",
  "endpoint",
  "force-path-style",
  "skip-verify",
  "part-size",
  ...S3_PROFILE_KEYS,
  ...ABS_ONLY_KEYS,
  ...SFTP_WEBDAV_KEYS,
] as const;

const S3_ONLY_KEYS = [
  "bucket",
  "region",
  "endpoint",
  "force-path-style",
  "access-key-id",
  "secret-access-key",
  "part-size",
  ...S3_PROFILE_KEYS,
] as const;

const DB_KEYS = [
  "path",
  "dir",
  "pattern",
  "recursive",
  "watch",
  "meta-path",
  "monitor-interval",
  "checkpoint-interval",
  "busy-timeout",
  "min-checkpoint-page-count",
  "truncate-page-n",
  "park-after",
  "replica",
  "replicas",
] as const;

const REPLICA_KEYS = ["type", "url", "path", "encoding", "age", ...SHARED_REPLICA_KEYS] as const;

const TOP_RULES: KeyRules = {
  known: [
    "addr",
    "logging",
    "metrics",
    "health",
    "snapshot",
    "levels",
    "l0-retention",
    "background-jobs",
    "retention",
    "exec",
    "dbs",
    ...SHARED_REPLICA_KEYS,
  ],
  ignored: ["l0-retention-check-interval", "shutdown-sync-timeout", "shutdown-sync-interval"],
  unsupported: {
    ...UNSUPPORTED_REPLICA_SETTINGS,
    socket: null,
    validation: null,
    "heartbeat-url": null,
    "heartbeat-interval": null,
    "mcp-addr": null,
    "verify-compaction": false,
  },
  elsewhere: {
    ...Object.fromEntries(DB_KEYS.map((key) => [key, "each dbs entry"])),
    type: "a replica", // after the DB keys: "path" etc. belong to dbs entries first
    url: "a replica",
    encoding: "a replica",
    age: "a replica",
    interval: "snapshot or levels",
    level: "logging",
    "per-database": "metrics",
    "per-database-limit": "metrics",
    "max-lag": "health",
    "max-upload-age": "health",
  },
};

const DB_RULES: KeyRules = {
  known: DB_KEYS,
  unsupported: { "restore-if-db-not-exists": false },
  elsewhere: {
    ...Object.fromEntries(REPLICA_KEYS.filter((k) => k !== "path").map((k) => [k, "replica"])),
    name: "replica",
  },
};

const REPLICA_RULES: KeyRules = {
  known: REPLICA_KEYS,
  ignored: ["name"],
  unsupported: UNSUPPORTED_REPLICA_SETTINGS,
  elsewhere: Object.fromEntries(
    DB_KEYS.filter((k) => k !== "path").map((k) => [k, "the dbs entry, not its replica"]),
  ),
};

/** Options of {@linkcode parseConfig}. */
export interface ParseConfigOptions {
  /** Name used in messages (`file:line:`). Default "config". */
  file?: string;
  /** Environment for `${VAR}` expansion and `~`. Default: none (an empty environment). */
  env?: Record<string, string>;
  /** Directory relative paths are resolved against. Default: the current directory. */
  baseDir?: string;
}

/**
 * Reads and validates the config file at `path`. `${VAR}`/`$VAR` are expanded from `env`
 * first (unset variables are an error; `${VAR:-default}` gives a fallback). Relative paths in
 * the file are resolved against the file's directory.
 * @throws {ConfigError} with `file:line:` for every problem, including a missing file.
 */
export async function loadConfig(
  path: string,
  env: Record<string, string> = Deno.env.toObject(),
): Promise<Config> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new ConfigError(`config file ${path} does not exist`);
    }
    if (err instanceof Deno.errors.PermissionDenied) {
      throw new ConfigError(`config file ${path} is not readable (permission denied)`);
    }
    if (err instanceof Deno.errors.IsADirectory) {
      throw new ConfigError(`config file ${path} is a directory`);
    }
    throw new ConfigError(`cannot read config file ${path}: ${(err as Error).message}`, undefined, {
      cause: err,
    });
  }
  const absolute = resolve(path);
  const config = parseConfig(text, { file: path, env, baseDir: dirname(absolute) });
  config.source = absolute;
  // age keys are parsed by the age package itself (loaded only when a replica has age:).
  await checkAgeKeys(pendingAgeKeys(config));
  return config;
}

/**
 * Validates config text (see {@linkcode loadConfig}); no file access.
 * @throws {ConfigError} with `file:line:`.
 */
export function parseConfig(text: string, options: ParseConfigOptions = {}): Config {
  const file = options.file ?? "config";
  const env = options.env ?? {};
  const baseDir = options.baseDir ?? Deno.cwd();
  const expanded = expandEnv(text.replace(/^\uFEFF/, ""), env, file);
  const lines = new LineCounter();
  const doc = parseDocument(expanded, {
    lineCounter: lines,
    prettyErrors: false,
    uniqueKeys: true,
    strict: true,
    version: "1.2",
    merge: false,
  });
  const problem = doc.errors[0] ?? doc.warnings[0];
  if (problem !== undefined) {
    const line = lines.linePos(problem.pos[0]).line;
    // yaml quotes the offending token; it may be an expanded secret, so drop it.
    const message = problem.message.split("\n")[0].replace(/: ".*"$/, "").replace(
      /\s+at line.*$/,
      "",
    );
    throw new ConfigError(`invalid YAML: ${message}`, { file, line });
  }
  const src: Source = new Source(file, doc, lines);
  const root = src.resolve(doc.contents);
  if (root === null) {
    throw new ConfigError("the file is empty; it needs at least a dbs: list", { file, line: 1 });
  }
  if (!isMap(root)) src.fail(root, `expected a mapping at the top level, got ${describe(root)}`);
  const top = new Reader(src, root, "", TOP_RULES);
  const config = readConfig(top, { env, baseDir });
  adoptPendingAgeKeys(src, config);
  return config;
}

interface Context {
  env: Record<string, string>;
  baseDir: string;
}

function readConfig(top: MapReader, ctx: Context): Config {
  const config: Config = {
    logging: { level: DEFAULTS.logLevel, type: DEFAULTS.logType },
    metrics: defaultMetrics(),
    snapshot: { interval: DEFAULTS.snapshotInterval, retention: DEFAULTS.snapshotRetention },
    levels: DEFAULTS.levelIntervals.map((interval) => ({ interval })),
    l0Retention: DEFAULTS.l0Retention,
    backgroundJobs: DEFAULTS.backgroundJobs,
    retention: { enabled: true },
    dbs: [],
  };
  const addr = top.string("addr");
  if (addr !== undefined) {
    const problem = listenAddressProblem(addr);
    if (problem !== undefined) top.fail("addr", problem);
    config.addr = addr;
  }

  const logging = top.map("logging", { known: ["level", "type", "stderr"] });
  if (logging !== undefined) {
    config.logging.level = logging.choice<LogLevel>("level", ["debug", "info", "warn", "error"]) ??
      config.logging.level;
    config.logging.type = logging.choice<LogType>("type", ["text", "json"]) ?? config.logging.type;
    const stderr = logging.bool("stderr");
    if (stderr !== undefined) config.logging.stderr = stderr;
  }

  const health = top.map("health", { known: ["max-lag", "max-upload-age"] });
  if (health !== undefined) {
    config.health = {
      maxLag: health.duration("max-lag") ?? DEFAULTS.healthMaxLag,
      maxUploadAge: health.duration("max-upload-age") ?? DEFAULTS.healthMaxUploadAge,
    };
  }

  const metrics = top.map("metrics", { known: ["per-database", "per-database-limit"] });
  if (metrics !== undefined) {
    config.metrics = {
      perDatabase: metrics.bool("per-database") ?? DEFAULTS.metricsPerDatabase,
      perDatabaseLimit: metrics.integer("per-database-limit", 0) ??
        DEFAULTS.metricsPerDatabaseLimit,
    };
  }

  const snapshot = top.map("snapshot", { known: ["interval", "retention"] });
  if (snapshot !== undefined) {
    config.snapshot.interval = snapshot.duration("interval") ?? config.snapshot.interval;
    config.snapshot.retention = snapshot.duration("retention") ?? config.snapshot.retention;
  }

  const levels = top.list("levels", "a list of { interval: DURATION }");
  if (levels !== undefined) {
    if (levels.items.length === 0) top.fail("levels", "needs at least one level (L1)");
    if (levels.items.length > DEFAULTS.maxLevels) {
      top.fail(
        "levels",
        `at most ${DEFAULTS.maxLevels} levels (L1…L8; L9 holds snapshots), got ${levels.items.length}`,
      );
    }
    config.levels = levels.items.map((item, i) => {
      const where = `levels[${i}]`;
      if (!isMap(item)) {
        top.src.fail(
          item ?? levels.node,
          `${where}: expected { interval: DURATION }, got ${describe(item)}`,
        );
      }
      const level: MapReader = new Reader(top.src, item, where, { known: ["interval"] });
      const interval = level.duration("interval");
      if (interval === undefined) level.src.fail(item, `${where}: interval is required`);
      return { interval };
    });
  }

  config.l0Retention = top.duration("l0-retention", true) ?? config.l0Retention;
  config.backgroundJobs = top.integer("background-jobs", 1) ?? config.backgroundJobs;
  for (
    const key of ["l0-retention-check-interval", "shutdown-sync-timeout", "shutdown-sync-interval"]
  ) {
    top.duration(key, true); // accepted for Litestream compatibility; checked, not used
  }

  const retention = top.map("retention", { known: ["enabled"] });
  if (retention !== undefined) config.retention.enabled = retention.bool("enabled") ?? true;

  const exec = top.string("exec");
  if (exec !== undefined) config.exec = exec;

  const dbs = top.list("dbs", "a list of databases");
  if (dbs === undefined || dbs.items.length === 0) {
    top.fail(
      "dbs",
      "at least one database is required, e.g. dbs: [{ path: /var/lib/app.db, replica: { url: s3://bucket/app } }]",
    );
  }
  config.dbs = dbs.items.map((item, i) => {
    const where = `dbs[${i}]`;
    if (!isMap(item)) {
      top.src.fail(
        item ?? dbs.node,
        `${where}: expected a mapping with path or dir, got ${describe(item)}`,
      );
    }
    return readDatabase(new Reader(top.src, item, where, DB_RULES), top, ctx);
  });
  checkDatabases(config.dbs, top.src.file);
  return config;
}

function readDatabase(db: MapReader, top: MapReader, ctx: Context): DatabaseConfig {
  const pathOptions = { baseDir: ctx.baseDir, home: ctx.env.HOME ?? "" };
  const local = (key: string): string | undefined => {
    const text = db.string(key);
    if (text === undefined) return undefined;
    if (isURL(text)) db.fail(key, `expected a local path, got a URL`);
    try {
      return resolveLocalPath(text, pathOptions);
    } catch (err) {
      db.fail(key, (err as Error).message);
    }
  };
  const path = local("path");
  const dir = local("dir");
  if (path !== undefined && dir !== undefined) {
    db.fail("dir", "set either path (one database) or dir (a directory of databases), not both");
  }
  if (path === undefined && dir === undefined) {
    db.src.fail(
      db.node,
      `${db.where}: needs path (one database) or dir (a directory of databases)`,
    );
  }
  const pattern = db.string("pattern");
  const recursive = db.bool("recursive");
  const watch = db.bool("watch");
  if (dir === undefined) {
    for (const key of ["pattern", "recursive", "watch"]) {
      if (db.has(key)) db.fail(key, "only applies to a dir entry");
    }
  } else if (pattern === undefined) {
    db.fail("dir", `a dir entry needs a pattern, e.g. pattern: "*.db" ("*" for every SQLite file)`);
  } else {
    const problem = patternProblem(pattern);
    if (problem !== undefined) db.fail("pattern", problem);
  }

  const minCheckpointPageN = db.integer("min-checkpoint-page-count", 1) ??
    DEFAULTS.minCheckpointPageN;
  const truncatePageN = db.integer("truncate-page-n", 0) ?? DEFAULTS.truncatePageN;
  if (truncatePageN !== 0 && truncatePageN < minCheckpointPageN) {
    db.fail(
      db.has("truncate-page-n") ? "truncate-page-n" : "min-checkpoint-page-count",
      `truncate-page-n (${truncatePageN}) must be at least min-checkpoint-page-count (${minCheckpointPageN}), or 0 to disable`,
    );
  }
  const config: DatabaseConfig = {
    ...(path !== undefined ? { path } : { dir }),
    pattern: pattern ?? "",
    recursive: recursive ?? false,
    watch: watch ?? false,
    monitorInterval: db.duration("monitor-interval") ?? DEFAULTS.monitorInterval,
    checkpointInterval: db.duration("checkpoint-interval") ?? DEFAULTS.checkpointInterval,
    minCheckpointPageN,
    truncatePageN,
    busyTimeout: db.duration("busy-timeout", true) ?? DEFAULTS.busyTimeout,
    parkAfter: db.duration("park-after", true) ?? (dir !== undefined ? DEFAULTS.parkAfter : 0),
    replica: readReplicaEntry(db, top, ctx),
    line: db.src.lineOf(db.node),
  };
  const metaPath = local("meta-path");
  if (metaPath !== undefined) config.metaPath = metaPath;
  return config;
}

function readReplicaEntry(db: MapReader, top: MapReader, ctx: Context): ReplicaConfig {
  const hasOne = db.has("replica"), hasList = db.has("replicas");
  if (hasOne && hasList) db.fail("replicas", "set replica or replicas, not both");
  if (hasOne) {
    return readReplica(db.map("replica", REPLICA_RULES)!, top, ctx);
  }
  if (hasList) {
    const list = db.list("replicas", "a list with one replica")!;
    if (list.items.length !== 1) {
      db.fail(
        "replicas",
        `sluice replicates each database to exactly one replica (as Litestream v0.5 does), got ${list.items.length}; use replica: { … }`,
      );
    }
    const item = list.items[0];
    const where = `${db.where}.replicas[0]`;
    if (!isMap(item)) {
      db.src.fail(item ?? list.node, `${where}: expected a mapping, got ${describe(item)}`);
    }
    return readReplica(new Reader(db.src, item, where, REPLICA_RULES), top, ctx);
  }
  return db.src.fail(
    db.node,
    `${db.where}: needs a replica, e.g. replica: { url: s3://bucket/prefix } or replica: { path: /backups/app }`,
  );
}

/** Reads one replica mapping, with top-level replica settings as defaults. */
function readReplica(replica: MapReader, top: MapReader, ctx: Context): ReplicaConfig {
  // A key set on the replica wins; otherwise the top-level default applies.
  const from = (key: string): MapReader => (replica.has(key) ? replica : top);
  const syncInterval = from("sync-interval").duration("sync-interval");
  const encoding = replica.choice<PageEncoding>("encoding", ["frame", "block"]) ??
    DEFAULTS.encoding;
  if (from("skip-verify").bool("skip-verify") === true) {
    from("skip-verify").fail(
      "skip-verify",
      "skip-verify: true is not supported by sluice; trust the endpoint's certificate instead (e.g. DENO_CERT)",
    );
  }
  const type = replica.choice("type", ["file", "s3", "gs", "abs", "sftp", "webdav", "nats", "oss"]);
  if (type === "nats" || type === "oss") {
    replica.fail("type", `${type} replicas are not supported by sluice; use file or s3`);
  }
  const url = replica.string("url");
  const path = replica.string("path");
  let spec: ReplicaSpec;
  if (url !== undefined) {
    for (const key of ["path", "bucket"]) {
      if (replica.has(key)) {
        replica.fail(
          key,
          `set either url or ${key}, not both (the url already names the location)`,
        );
      }
    }
    try {
      spec = parseReplicaURL(url, { baseDir: ctx.baseDir, home: ctx.env.HOME ?? "" });
    } catch (err) {
      replica.fail("url", (err as Error).message);
    }
    if (type !== undefined && type !== spec.type && !(type === "gs" && spec.type === "s3")) {
      replica.fail("type", `is ${type} but the url is a ${spec.type} location`);
    }
  } else {
    const inferred = type ?? (replica.has("bucket") ? "s3" : "file");
    if (path !== undefined && isURL(path)) {
      replica.fail("path", "is a URL; put it in url: instead");
    }
    if (inferred === "file") {
      if (path === undefined) {
        replica.src.fail(
          replica.node,
          `${replica.where}: needs url (file:///dir, s3://bucket/prefix) or path (a local directory)`,
        );
      }
      try {
        spec = {
          type: "file",
          path: resolveLocalPath(path, { baseDir: ctx.baseDir, home: ctx.env.HOME ?? "" }),
        };
      } catch (err) {
        replica.fail("path", (err as Error).message);
      }
    } else if (inferred === "sftp") {
      spec = sftpSpecFromKeys(replica, from, path);
    } else if (inferred === "webdav") {
      spec = webdavSpecFromKeys(replica, from, path);
    } else if (inferred === "abs") {
      spec = absSpecFromKeys(replica, from, path);
    } else {
      const bucket = from("bucket").string("bucket");
      if (bucket === undefined) {
        replica.src.fail(
          replica.node,
          `${replica.where}: an s3 replica needs bucket (or url: s3://bucket/prefix)`,
        );
      }
      spec = { type: "s3", bucket, path: cleanS3Path(path ?? "") };
      if (inferred === "gs") spec = gcsSpec(spec);
    }
  }

  if (spec.type === "file") {
    refuseABSKeys(replica);
    for (const key of S3_ONLY_KEYS) {
      if (replica.has(key)) replica.fail(key, "only applies to s3 replicas");
    }
  } else if (spec.type === "sftp" || spec.type === "webdav") {
    refuseABSKeys(replica);
    for (const key of S3_ONLY_KEYS) {
      if (replica.has(key)) replica.fail(key, "only applies to s3 replicas");
    }
    applySFTPWebDAVSettings(
      replica,
      from,
      spec,
      url !== undefined,
      (local) => resolveLocalPath(local, { baseDir: ctx.baseDir, home: ctx.env.HOME ?? "" }),
    );
  } else if (spec.type === "abs") {
    applyABSSettings(replica, from, spec);
  } else {
    refuseABSKeys(replica);
    // Precedence: the replica's own key, then the url's value, then the top-level default.
    const fromURL = url === undefined ? undefined : new URL(url).searchParams;
    const urlSets = {
      region: spec.region !== undefined,
      endpoint: spec.endpoint !== undefined,
      "force-path-style": fromURL !== undefined &&
        (fromURL.has("force-path-style") || fromURL.has("forcePathStyle")),
    };
    const setting = (key: keyof typeof urlSets): MapReader | undefined =>
      replica.has(key) ? replica : urlSets[key] ? undefined : top;
    const region = setting("region")?.string("region");
    if (region !== undefined) spec.region = region;
    const endpointFrom = setting("endpoint");
    const endpoint = endpointFrom?.string("endpoint");
    if (endpointFrom !== undefined && endpoint !== undefined) {
      try {
        spec.endpoint = normalizeEndpoint(endpoint, "endpoint");
      } catch (err) {
        endpointFrom.fail("endpoint", (err as Error).message.replace(/^endpoint: /, ""));
      }
    }
    const forcePathStyle = setting("force-path-style")?.bool("force-path-style");
    if (forcePathStyle !== undefined) spec.forcePathStyle = forcePathStyle;
    else if (!urlSets["force-path-style"]) spec.forcePathStyle = spec.endpoint !== undefined;
    const accessKeyId = from("access-key-id").string("access-key-id");
    const secretAccessKey = from("secret-access-key").string("secret-access-key");
    if ((accessKeyId === undefined) !== (secretAccessKey === undefined)) {
      const missing = accessKeyId === undefined ? "access-key-id" : "secret-access-key";
      replica.src.fail(
        replica.node,
        `${replica.where}: ${missing} is missing; set both access-key-id and secret-access-key, or neither (the AWS credential chain is used then)`,
      );
    }
    if (accessKeyId !== undefined) spec.accessKeyId = accessKeyId;
    if (secretAccessKey !== undefined) spec.secretAccessKey = secretAccessKey;
    const partSize = from("part-size").byteSize("part-size", MIN_PART_SIZE);
    if (partSize !== undefined) spec.partSize = partSize;
    if (spec.type === "s3") {
      readProfileKeys(replica, top, spec, fromURL);
      if (type === "gs" && spec.provider === undefined) spec = gcsSpec(spec);
    }
  }
  refuseSFTPWebDAVKeys(replica, spec.type);
  readAgeKeys(replica, spec, { baseDir: ctx.baseDir, home: ctx.env.HOME ?? "" });
  return syncInterval === undefined ? { spec, encoding } : { spec, syncInterval, encoding };
}

/** `metrics:` with every default. */
function defaultMetrics(): MetricsConfig {
  return {
    perDatabase: DEFAULTS.metricsPerDatabase,
    perDatabaseLimit: DEFAULTS.metricsPerDatabaseLimit,
  };
}

/**
 * Why `addr` is not a `host:port` listen address (`:9090`, `127.0.0.1:9090`, `[::1]:9090`),
 * or undefined when it is.
 */
export function listenAddressProblem(addr: string): string | undefined {
  const match = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):(\d{1,5})$/.exec(addr);
  if (match === null || Number(match[2]) > 65535) {
    return `expected host:port such as "127.0.0.1:9090" or ":9090", got ${JSON.stringify(addr)}`;
  }
  return undefined;
}

/** Splits a listen address; an empty host means every interface (`0.0.0.0`). */
export function parseListenAddress(addr: string): { hostname: string; port: number } {
  const problem = listenAddressProblem(addr);
  if (problem !== undefined) throw new ConfigError(`addr: ${problem}`);
  const cut = addr.lastIndexOf(":");
  const host = addr.slice(0, cut).replace(/^\[(.*)\]$/, "$1");
  return { hostname: host === "" ? "0.0.0.0" : host, port: Number(addr.slice(cut + 1)) };
}

/**
 * The config for `sluice replicate DB_PATH REPLICA_URL` (and `snapshot`): one database with
 * every default. Relative paths are resolved against the current directory.
 * @throws {ConfigError} when the replica URL is invalid.
 */
export function configFromArgs(dbPath: string, replicaURL: string): Config {
  if (dbPath.trim() === "") throw new ConfigError("empty database path");
  if (isURL(dbPath)) {
    throw new ConfigError(
      `database path "${dbPath}" looks like a URL; give the local file path first, then the replica URL`,
    );
  }
  return {
    logging: { level: DEFAULTS.logLevel, type: DEFAULTS.logType },
    metrics: defaultMetrics(),
    snapshot: { interval: DEFAULTS.snapshotInterval, retention: DEFAULTS.snapshotRetention },
    levels: DEFAULTS.levelIntervals.map((interval) => ({ interval })),
    l0Retention: DEFAULTS.l0Retention,
    backgroundJobs: DEFAULTS.backgroundJobs,
    retention: { enabled: true },
    dbs: [{
      path: resolveLocalPath(dbPath),
      pattern: "",
      recursive: false,
      watch: false,
      monitorInterval: DEFAULTS.monitorInterval,
      checkpointInterval: DEFAULTS.checkpointInterval,
      minCheckpointPageN: DEFAULTS.minCheckpointPageN,
      truncatePageN: DEFAULTS.truncatePageN,
      busyTimeout: DEFAULTS.busyTimeout,
      parkAfter: 0,
      replica: {
        spec: parseReplicaURL(replicaURL),
        encoding: DEFAULTS.encoding,
      },
    }],
  };
}
