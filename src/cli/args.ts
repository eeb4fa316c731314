/**
 * The command-line contract (docs: README.md "CLI reference") in one place: every command's
 * options, its help text, and a parser per command returning typed options. Command modules
 * call their parser; `src/cli/mod.ts` also calls it before loading a module so usage errors
 * are reported the same way for every command, and fast.
 *
 * Parsing uses `node:util` `parseArgs` (built in, strict, no dependency); single-dash long
 * options as Litestream writes them (`-config`, `-txid`) are accepted too.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  type Config,
  ConfigError,
  configFromArgs,
  DEFAULT_CONFIG_PATH,
  isURL,
  loadConfig,
  parseDuration,
  resolveLocalPath,
} from "../config/mod.ts";

/** A command-line mistake; the CLI prints it as one line and exits with status 2. */
export class UsageError extends Error {
  /** Builds an error; `command` names the subcommand whose usage was wrong. */
  constructor(message: string, readonly command?: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** Thrown by a parser when `-h`/`--help` was given; the CLI prints the command's help. */
export class HelpRequested extends Error {
  /** Builds the request for `command`'s help. */
  constructor(readonly command: CommandName) {
    super(`help for ${command}`);
    this.name = "HelpRequested";
  }
}

/** The subcommands. */
export type CommandName =
  | "replicate"
  | "restore"
  | "snapshot"
  | "databases"
  | "ltx"
  | "verify"
  | "doctor"
  | "status"
  | "version";

/** One option of a command. */
export interface OptionSpec {
  /** Long name without dashes. */
  name: string;
  short?: string;
  type: "string" | "boolean";
  /** Placeholder shown in help for string options. */
  value?: string;
  help: string;
  /** May be given more than once (a string option then yields a list). */
  multiple?: boolean;
}

/** A command's contract. */
export interface CommandSpec {
  name: CommandName;
  /** One line for the command list. */
  summary: string;
  /** Usage line after `sluice <name>`. */
  usage: string;
  /** Paragraph(s) shown in the command's help. */
  description: string;
  options: OptionSpec[];
  /** Command lines shown under "Examples:" in the command's help (without the `sluice`). */
  examples: string[];
}

const CONFIG_OPTION: OptionSpec = {
  name: "config",
  short: "c",
  type: "string",
  value: "FILE",
  help: `config file (default: $SLUICE_CONFIG or ${DEFAULT_CONFIG_PATH})`,
};
const JSON_OPTION: OptionSpec = { name: "json", type: "boolean", help: "print JSON on stdout" };
const AGE_IDENTITY_OPTION: OptionSpec = {
  name: "age-identity",
  type: "string",
  value: "FILE",
  help: "age identity file (AGE-SECRET-KEY-1… lines) to decrypt an encrypted replica; repeatable",
  multiple: true,
};

/** Every command, in help order. */
export const COMMANDS: readonly CommandSpec[] = [
  {
    name: "replicate",
    summary: "replicate databases continuously until SIGINT/SIGTERM",
    usage: "[-c FILE] [--exec CMD] [DB_PATH REPLICA_URL]",
    description:
      "Streams every configured database (or the one named) to its replica, then does a final sync\n" +
      "and exits 0 on SIGINT or SIGTERM. With --exec, runs CMD and stops when it exits.",
    options: [CONFIG_OPTION, {
      name: "exec",
      type: "string",
      value: "CMD",
      help: "run CMD (through sh -c) and stop replicating when it exits",
    }, {
      name: "takeover",
      type: "boolean",
      help: "take over object-store replicas' owner leases from other replicators",
    }],
    examples: ["replicate /var/lib/app/app.db file:///backups/app", "replicate -c /etc/sluice.yml"],
  },
  {
    name: "restore",
    summary: "restore a database from its replica, optionally to a point in time",
    usage: "[-c FILE] [-o OUT] [--txid HEX16 | --timestamp RFC3339] [--if-db-not-exists]\n" +
      "               [--if-replica-exists] [--integrity-check none|quick|full] [--json]\n" +
      "               [-f [--interval DURATION]] DB_PATH|REPLICA_URL",
    description:
      "Builds a new database file from the replica of DB_PATH (looked up in the config) or from\n" +
      "REPLICA_URL (then -o is required). Without --txid or --timestamp, restores the latest state.",
    options: [
      CONFIG_OPTION,
      {
        name: "output",
        short: "o",
        type: "string",
        value: "OUT",
        help: "path of the restored database",
      },
      {
        name: "txid",
        type: "string",
        value: "HEX16",
        help: "restore up to and including this transaction (16 hex digits)",
      },
      {
        name: "timestamp",
        type: "string",
        value: "RFC3339",
        help: "restore what was written strictly before this time",
      },
      {
        name: "if-db-not-exists",
        type: "boolean",
        help: "do nothing (exit 0) if the output already exists",
      },
      {
        name: "if-replica-exists",
        type: "boolean",
        help: "do nothing (exit 0) if there is no replica",
      },
      {
        name: "integrity-check",
        type: "string",
        value: "none|quick|full",
        help: "PRAGMA check on the restored database (default quick)",
      },
      {
        name: "follow",
        short: "f",
        type: "boolean",
        help: "keep OUT up to date until SIGINT/SIGTERM (a read replica)",
      },
      {
        name: "interval",
        type: "string",
        value: "DURATION",
        help: "with -f: how often S3 is listed (default 1s)",
      },
      AGE_IDENTITY_OPTION,
      JSON_OPTION,
    ],
    examples: [
      "restore -o /tmp/app.db --timestamp 2026-11-22T14:00:00Z file:///backups/app",
      "restore -c /etc/sluice.yml --if-db-not-exists /var/lib/app/app.db",
      "restore -f -o /srv/replica.db s3://backups/app",
    ],
  },
  {
    name: "snapshot",
    summary: "write one full snapshot now, then exit (for cron)",
    usage: "[-c FILE] [DB_PATH REPLICA_URL]",
    description:
      "Writes a full snapshot of every configured database (or the one named) to its replica.",
    options: [CONFIG_OPTION],
    examples: ["snapshot /var/lib/app/app.db file:///backups/app"],
  },
  {
    name: "databases",
    summary: "list configured databases, their replicas and meta directories",
    usage: "[-c FILE] [--json]",
    description:
      "Lists each configured database; for a dir entry, the SQLite databases currently found there.",
    options: [CONFIG_OPTION, JSON_OPTION],
    examples: ["databases -c /etc/sluice.yml --json"],
  },
  {
    name: "ltx",
    summary: "list the LTX files of a database's replica",
    usage: "[-c FILE] [--level N|all] [--json] DB_PATH|REPLICA_URL",
    description:
      "Lists the LTX files on the replica of DB_PATH (from the config) or at REPLICA_URL.",
    options: [
      CONFIG_OPTION,
      { name: "level", type: "string", value: "N|all", help: "only level N (0-9); default all" },
      AGE_IDENTITY_OPTION,
      JSON_OPTION,
    ],
    examples: ["ltx --level 0 file:///backups/app"],
  },
  {
    name: "verify",
    summary: "check that a replica is intact and restorable, without changing it",
    usage: "[-c FILE] [--restore] [--age-identity FILE] [--json] DB_PATH|REPLICA_URL",
    description:
      "Reads every LTX file of the replica of DB_PATH (from the config) or at REPLICA_URL to its\n" +
      "end (headers, pages, trailers, checksums), checks each level for gaps, overlaps and files\n" +
      "of another database, and prints the restorable point-in-time range. Exits 0 when\n" +
      "everything restorable is intact, 1 naming the damaged or missing files and TXIDs.",
    options: [
      CONFIG_OPTION,
      {
        name: "restore",
        type: "boolean",
        help: "also restore to a temporary file, run PRAGMA integrity_check, remove it",
      },
      AGE_IDENTITY_OPTION,
      JSON_OPTION,
    ],
    examples: [
      "verify file:///backups/app",
      "verify -c /etc/sluice.yml --restore /var/lib/app/app.db",
    ],
  },
  {
    name: "doctor",
    summary: "check that a replica's storage works before trusting it",
    usage: "[-c FILE] [--json] [REPLICA_URL]",
    description:
      "Checks the storage at REPLICA_URL (or every replica in the config) as replication uses it:\n" +
      "credentials, bucket or directory, put/get/ranged get/list/delete of a probe under the\n" +
      "replica path (always removed; existing files are never touched), conditional writes,\n" +
      "checksum headers, multipart, clock skew, fsync, free space. One line per check with the\n" +
      "fix when it fails; exits 1 when a check replication needs fails.",
    options: [CONFIG_OPTION, JSON_OPTION],
    examples: [
      "doctor 's3://bucket/app?endpoint=https://ACCOUNT.r2.cloudflarestorage.com'",
      "doctor -c /etc/sluice.yml --json",
    ],
  },
  {
    name: "status",
    summary: "show replication status of the configured databases",
    usage: "[-c FILE] [--json]",
    description: "Shows, per database, the local and replica positions and the replication lag.",
    options: [CONFIG_OPTION, JSON_OPTION],
    examples: ["status -c /etc/sluice.yml"],
  },
  {
    name: "version",
    summary: "print the version",
    usage: "",
    description: "Prints sluice's version.",
    options: [],
    examples: ["version"],
  },
];

const HELP_OPTION: OptionSpec = {
  name: "help",
  short: "h",
  type: "boolean",
  help: "show this help",
};

/** The spec of `name`, or undefined for an unknown command. */
export function commandSpec(name: string): CommandSpec | undefined {
  return COMMANDS.find((command) => command.name === name);
}

/** `sluice --help`. */
export function formatGlobalHelp(): string {
  const width = Math.max(...COMMANDS.map((command) => command.name.length));
  const lines = [
    "sluice: continuous backup of SQLite databases to LTX replicas (file or S3)",
    "",
    "Usage: sluice <command> [options] [arguments]",
    "",
    "Commands:",
    ...COMMANDS.map((command) => `  ${command.name.padEnd(width)}  ${command.summary}`),
    "",
    "Replica URLs: file:///abs/dir, a plain path,",
    "              s3://bucket/prefix?endpoint=URL&region=REGION&force-path-style=true",
    "Exit status:  0 success, 1 failure, 2 usage or config error",
    'Run "sluice <command> --help" for a command\'s options.',
  ];
  return lines.join("\n");
}

/** `sluice <command> --help`. */
export function formatCommandHelp(name: CommandName): string {
  const command = commandSpec(name)!;
  const options = [...command.options, HELP_OPTION];
  const label = (option: OptionSpec) =>
    (option.short === undefined ? "    " : `-${option.short}, `) + `--${option.name}` +
    (option.type === "string" ? ` ${option.value ?? "VALUE"}` : "");
  const width = Math.max(...options.map((option) => label(option).length));
  return [
    `Usage: sluice ${command.name}${command.usage === "" ? "" : ` ${command.usage}`}`,
    "",
    command.description,
    "",
    "Options:",
    ...options.map((option) => `  ${label(option).padEnd(width)}  ${option.help}`),
    "",
    command.examples.length === 1 ? "Example:" : "Examples:",
    ...command.examples.map((example) => `  sluice ${example}`),
  ].join("\n");
}

type RawValues = Record<string, string | boolean | string[] | undefined>;

/**
 * Generic strict parse of `args` against `name`'s options.
 * @throws {HelpRequested} for -h/--help; {@linkcode UsageError} for anything malformed.
 */
function parseCommand(name: CommandName, args: readonly string[]): {
  values: RawValues;
  positionals: string[];
} {
  const command = commandSpec(name)!;
  const specs = [...command.options, HELP_OPTION];
  const options: Record<
    string,
    { type: "string" | "boolean"; short?: string; multiple?: boolean }
  > = {};
  for (const spec of specs) {
    options[spec.name] = spec.short === undefined
      ? { type: spec.type }
      : { type: spec.type, short: spec.short };
    if (spec.multiple) options[spec.name].multiple = true;
  }
  const end = args.indexOf("--");
  const normalized = args.map((arg, i) => {
    if (end >= 0 && i >= end) return arg;
    // Litestream (Go flag package) style: -config FILE, -txid=X.
    const match = /^-([a-z][a-z0-9-]+)(=.*)?$/.exec(arg);
    return match !== null && options[match[1]] !== undefined ? `-${arg}` : arg;
  });
  let parsed;
  try {
    parsed = parseArgs({
      args: normalized,
      options,
      strict: true,
      allowPositionals: true,
      tokens: true,
    });
  } catch (err) {
    throw new UsageError(describeParseError(err, name), name);
  }
  const values = parsed.values as RawValues;
  if (values.help === true) throw new HelpRequested(name);
  const seen = new Set<string>();
  for (const token of parsed.tokens ?? []) {
    if (token.kind !== "option") continue;
    if (seen.has(token.name) && !options[token.name].multiple) {
      throw new UsageError(`--${token.name} is given more than once`, name);
    }
    seen.add(token.name);
    if (options[token.name].type === "string" && (token.value ?? "") === "") {
      throw new UsageError(`--${token.name} needs a non-empty value`, name);
    }
  }
  return { values, positionals: parsed.positionals };
}

function describeParseError(err: unknown, name: CommandName): string {
  const code = (err as { code?: string }).code;
  const message = (err as Error).message ?? String(err);
  const option = /'([^']+)'/.exec(message)?.[1] ?? "";
  switch (code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return `unknown option ${option}; see "sluice ${name} --help"`;
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE": {
      const flag = option.split(" <")[0].split(", ").join("/");
      if (/does not take an argument/.test(message)) return `${flag} takes no value`;
      if (/ambiguous/.test(message)) {
        return `${flag} needs a value (to pass a value starting with "-", write ${flag}=VALUE)`;
      }
      return `${flag} needs a value`;
    }
    default:
      return message.split("\n")[0];
  }
}

function expectPositionals(
  name: CommandName,
  positionals: string[],
  allowed: number[],
  what: string,
): void {
  if (allowed.includes(positionals.length)) return;
  if (positionals.length > Math.max(...allowed)) {
    const extra = positionals.slice(Math.max(...allowed)).map((arg) => JSON.stringify(arg)).join(
      " ",
    );
    throw new UsageError(`unexpected argument ${extra}; expected ${what}`, name);
  }
  throw new UsageError(`missing ${what}`, name);
}

/** The `--age-identity` files, absolute, as an options fragment (empty when none are given). */
function ageIdentityFiles(values: RawValues): { ageIdentityFiles?: string[] } {
  const value = values["age-identity"];
  const list = Array.isArray(value) ? value : typeof value === "string" ? [value] : [];
  return list.length === 0 ? {} : { ageIdentityFiles: list.map((path) => resolveLocalPath(path)) };
}

function str(values: RawValues, key: string): string | undefined {
  const value = values[key];
  return typeof value === "string" ? value : undefined;
}

/** `sluice replicate` options. */
export interface ReplicateArgs {
  /** `-c FILE`, when given. */
  config?: string;
  /** `--exec CMD`, overriding the config's `exec`. */
  exec?: string;
  /** `--takeover`: take over owner leases held by other replicators. */
  takeover?: boolean;
  /** Absolute path, with `replicaURL`, for the one-database form. */
  dbPath?: string;
  replicaURL?: string;
}

/** `sluice snapshot` options. */
export interface SnapshotArgs {
  config?: string;
  dbPath?: string;
  replicaURL?: string;
}

function parseDatabasePair(
  name: CommandName,
  values: RawValues,
  positionals: string[],
): { config?: string; dbPath?: string; replicaURL?: string } {
  expectPositionals(name, positionals, [0, 2], "DB_PATH REPLICA_URL (both, or neither)");
  const config = str(values, "config");
  if (positionals.length === 0) return config === undefined ? {} : { config };
  if (config !== undefined) {
    throw new UsageError("give either -c FILE or DB_PATH REPLICA_URL, not both", name);
  }
  const [dbPath, replicaURL] = positionals;
  if (isURL(dbPath)) {
    throw new UsageError(
      `DB_PATH comes first: "${dbPath}" is a URL (usage: sluice ${name} DB_PATH REPLICA_URL)`,
      name,
    );
  }
  return { dbPath: resolveLocalPath(dbPath), replicaURL };
}

/**
 * Parses `sluice replicate` arguments.
 * @throws {UsageError} | {@linkcode HelpRequested}
 */
export function parseReplicateArgs(args: readonly string[]): ReplicateArgs {
  const { values, positionals } = parseCommand("replicate", args);
  const parsed: ReplicateArgs = parseDatabasePair("replicate", values, positionals);
  const exec = str(values, "exec");
  if (exec !== undefined) parsed.exec = exec;
  if (values.takeover === true) parsed.takeover = true;
  return parsed;
}

/**
 * Parses `sluice snapshot` arguments.
 * @throws {UsageError} | {@linkcode HelpRequested}
 */
export function parseSnapshotArgs(args: readonly string[]): SnapshotArgs {
  const { values, positionals } = parseCommand("snapshot", args);
  return parseDatabasePair("snapshot", values, positionals);
}

/** `--integrity-check` values. */
export type IntegrityCheck = "none" | "quick" | "full";

/** `sluice restore` options. */
export interface RestoreArgs {
  config?: string;
  /** `-o OUT`, made absolute. Required when the target is a URL. */
  output?: string;
  /** `--txid`: restore up to this TXID. */
  txid?: number;
  /** `--timestamp`: restore the state as of this instant. */
  timestamp?: Date;
  ifDBNotExists: boolean;
  ifReplicaExists: boolean;
  /** Default "quick". */
  integrityCheck: IntegrityCheck;
  json: boolean;
  /** DB_PATH or REPLICA_URL as given (see {@linkcode isURL}); DB_PATH is not yet made absolute. */
  source: string;
  /** `--age-identity FILE` (repeatable), made absolute: identities for an encrypted replica. */
  ageIdentityFiles?: string[];
  /** `-f`/`--follow`: keep the output up to date after restoring it. */
  follow?: boolean;
  /** `--interval` in ms (with `--follow`). */
  intervalMs?: number;
}

/**
 * Parses `sluice restore` arguments: exactly one target, `--txid` and `--timestamp` exclusive,
 * `-o` required for a URL target.
 * @throws {UsageError} | {@linkcode HelpRequested}
 */
export function parseRestoreArgs(args: readonly string[]): RestoreArgs {
  const name = "restore";
  const { values, positionals } = parseCommand(name, args);
  expectPositionals(name, positionals, [1], "DB_PATH or REPLICA_URL");
  const source = positionals[0];
  const txidText = str(values, "txid");
  const timestampText = str(values, "timestamp");
  if (txidText !== undefined && timestampText !== undefined) {
    throw new UsageError("give --txid or --timestamp, not both", name);
  }
  const output = str(values, "output");
  if (isURL(source) && output === undefined) {
    throw new UsageError(
      "restoring from a REPLICA_URL needs -o OUT (the path to restore to)",
      name,
    );
  }
  const integrity = str(values, "integrity-check") ?? "quick";
  if (integrity !== "none" && integrity !== "quick" && integrity !== "full") {
    throw new UsageError(`--integrity-check must be none, quick or full, got "${integrity}"`, name);
  }
  const parsed: RestoreArgs = {
    ifDBNotExists: values["if-db-not-exists"] === true,
    ifReplicaExists: values["if-replica-exists"] === true,
    integrityCheck: integrity,
    json: values.json === true,
    source,
    ...ageIdentityFiles(values),
  };
  const config = str(values, "config");
  if (config !== undefined) parsed.config = config;
  if (output !== undefined) parsed.output = resolveLocalPath(output);
  if (txidText !== undefined) parsed.txid = parseTXIDArg(txidText, name);
  if (timestampText !== undefined) parsed.timestamp = parseTimestampArg(timestampText, name);
  parseFollowArgs(values, parsed, name);
  return parsed;
}

/** `-f [--interval D]`: only for the latest state, with a positive interval. */
function parseFollowArgs(
  values: RawValues,
  parsed: RestoreArgs,
  name: string,
): void {
  const interval = str(values, "interval");
  if (values.follow !== true) {
    if (interval !== undefined) throw new UsageError("--interval needs -f/--follow", name);
    return;
  }
  if (parsed.txid !== undefined || parsed.timestamp !== undefined) {
    throw new UsageError("-f/--follow follows the latest state: drop --txid/--timestamp", name);
  }
  parsed.follow = true;
  if (interval !== undefined) {
    let ms: number;
    try {
      ms = parseDuration(interval);
    } catch (err) {
      throw new UsageError(`--interval: ${(err as Error).message}`, name);
    }
    if (!(ms > 0)) throw new UsageError(`--interval must be positive, got "${interval}"`, name);
    parsed.intervalMs = ms;
  }
}

/**
 * Parses a TXID given on the command line: exactly 16 hex digits, at least 1, at most 2^53 − 1.
 * @throws {UsageError}
 */
export function parseTXIDArg(text: string, command?: string): number {
  if (!/^[0-9a-fA-F]{16}$/.test(text)) {
    throw new UsageError(
      `--txid must be exactly 16 hex digits (e.g. 000000000000002a), got "${text}"`,
      command,
    );
  }
  const value = BigInt(`0x${text}`);
  if (value === 0n) throw new UsageError("--txid must be at least 0000000000000001", command);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new UsageError(
      `--txid ${text} is beyond the largest supported TXID (001fffffffffffff)`,
      command,
    );
  }
  return Number(value);
}

/**
 * Parses an RFC 3339 timestamp (`2026-11-22T14:01:21Z`, `2026-11-22T15:01:21.5+01:00`);
 * rejects dates that do not exist (`2026-02-30`).
 * @throws {UsageError}
 */
export function parseTimestampArg(text: string, command?: string): Date {
  const match =
    /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|([+-])(\d{2}):(\d{2}))$/
      .exec(text);
  const invalid = () =>
    new UsageError(
      `--timestamp must be an RFC 3339 time such as 2026-11-22T14:01:21Z or 2026-11-22T15:01:21+01:00, got "${text}"`,
      command,
    );
  if (match === null) throw invalid();
  const [year, month, day, hour, minute, second] = match.slice(1, 7).map(Number);
  const fraction = match[7] === undefined ? 0 : Math.floor(Number(match[7]) * 1000);
  const offsetMinutes = match[9] === undefined
    ? 0
    : (match[9] === "-" ? -1 : 1) * (Number(match[10]) * 60 + Number(match[11]));
  if (
    hour > 23 || minute > 59 || second > 59 || Number(match[10] ?? 0) > 23 ||
    Number(match[11] ?? 0) > 59
  ) {
    throw invalid();
  }
  const local = Date.UTC(year, month - 1, day, hour, minute, second, fraction);
  const check = new Date(local);
  if (
    check.getUTCFullYear() !== year || check.getUTCMonth() !== month - 1 ||
    check.getUTCDate() !== day
  ) {
    throw invalid();
  }
  return new Date(local - offsetMinutes * 60_000);
}

/** `sluice databases` options. */
export interface DatabasesArgs {
  config?: string;
  json: boolean;
}

/** `sluice status` options. */
export interface StatusArgs {
  config?: string;
  json: boolean;
}

function parseConfigAndJSON(name: CommandName, args: readonly string[]): DatabasesArgs {
  const { values, positionals } = parseCommand(name, args);
  expectPositionals(name, positionals, [0], "no arguments");
  const parsed: DatabasesArgs = { json: values.json === true };
  const config = str(values, "config");
  if (config !== undefined) parsed.config = config;
  return parsed;
}

/**
 * Parses `sluice databases` arguments.
 * @throws {UsageError} | {@linkcode HelpRequested}
 */
export function parseDatabasesArgs(args: readonly string[]): DatabasesArgs {
  return parseConfigAndJSON("databases", args);
}

/**
 * Parses `sluice status` arguments.
 * @throws {UsageError} | {@linkcode HelpRequested}
 */
export function parseStatusArgs(args: readonly string[]): StatusArgs {
  return parseConfigAndJSON("status", args);
}

/** `sluice ltx` options. */
export interface LTXArgs {
  config?: string;
  /** A level 0…9, or every level. Default "all". */
  level: number | "all";
  json: boolean;
  /** DB_PATH or REPLICA_URL as given. */
  source: string;
  /** `--age-identity FILE` (repeatable), made absolute. */
  ageIdentityFiles?: string[];
}

/**
 * Parses `sluice ltx` arguments.
 * @throws {UsageError} | {@linkcode HelpRequested}
 */
export function parseLTXArgs(args: readonly string[]): LTXArgs {
  const name = "ltx";
  const { values, positionals } = parseCommand(name, args);
  expectPositionals(name, positionals, [1], "DB_PATH or REPLICA_URL");
  const levelText = str(values, "level") ?? "all";
  let level: number | "all";
  if (levelText === "all") level = "all";
  else if (/^[0-9]$/.test(levelText)) level = Number(levelText);
  else throw new UsageError(`--level must be a level 0-9 or "all", got "${levelText}"`, name);
  const parsed: LTXArgs = {
    level,
    json: values.json === true,
    source: positionals[0],
    ...ageIdentityFiles(values),
  };
  const config = str(values, "config");
  if (config !== undefined) parsed.config = config;
  return parsed;
}

/** `sluice verify` options. */
export interface VerifyArgs {
  config?: string;
  /** Also run a test restore with `integrity_check`. */
  restore: boolean;
  json: boolean;
  /** `--age-identity FILE` (repeatable), made absolute. */
  ageIdentityFiles?: string[];
  /** DB_PATH or REPLICA_URL as given. */
  source: string;
}

/**
 * Parses `sluice verify` arguments.
 * @throws {UsageError} | {@linkcode HelpRequested}
 */
export function parseVerifyArgs(args: readonly string[]): VerifyArgs {
  const name = "verify";
  const { values, positionals } = parseCommand(name, args);
  expectPositionals(name, positionals, [1], "DB_PATH or REPLICA_URL");
  const parsed: VerifyArgs = {
    restore: values.restore === true,
    json: values.json === true,
    ...ageIdentityFiles(values),
    source: positionals[0],
  };
  const config = str(values, "config");
  if (config !== undefined) parsed.config = config;
  return parsed;
}

/** `sluice doctor` options. */
export interface DoctorArgs {
  config?: string;
  /** REPLICA_URL (or a directory path) as given; absent: every replica of the config. */
  replicaURL?: string;
  json: boolean;
}

/**
 * Parses `sluice doctor` arguments: a replica URL or a config, not both.
 * @throws {UsageError} | {@linkcode HelpRequested}
 */
export function parseDoctorArgs(args: readonly string[]): DoctorArgs {
  const name = "doctor";
  const { values, positionals } = parseCommand(name, args);
  expectPositionals(name, positionals, [0, 1], "REPLICA_URL or -c FILE");
  const parsed: DoctorArgs = { json: values.json === true };
  const config = str(values, "config");
  if (config !== undefined && positionals.length > 0) {
    throw new UsageError("give either -c FILE or REPLICA_URL, not both", name);
  }
  if (config !== undefined) parsed.config = config;
  if (positionals.length > 0) parsed.replicaURL = positionals[0];
  return parsed;
}

/**
 * Parses `sluice version` arguments (none).
 * @throws {UsageError} | {@linkcode HelpRequested}
 */
export function parseVersionArgs(args: readonly string[]): Record<never, never> {
  const { positionals } = parseCommand("version", args);
  expectPositionals("version", positionals, [0], "no arguments");
  return {};
}

/** Each command's parser, for validating a command line before its module is loaded. */
export const PARSERS: Readonly<Record<CommandName, (args: readonly string[]) => unknown>> = {
  replicate: parseReplicateArgs,
  restore: parseRestoreArgs,
  snapshot: parseSnapshotArgs,
  databases: parseDatabasesArgs,
  ltx: parseLTXArgs,
  verify: parseVerifyArgs,
  doctor: parseDoctorArgs,
  status: parseStatusArgs,
  version: parseVersionArgs,
};

/** Options of {@linkcode loadCommandConfig}. */
export interface LoadCommandConfigOptions {
  /** `-c FILE`, when given. */
  config?: string;
  /** The one-database form (`DB_PATH REPLICA_URL`); wins over any file. */
  dbPath?: string;
  replicaURL?: string;
  /** Environment for `${VAR}` expansion and `SLUICE_CONFIG`. Default: the process's. */
  env?: Record<string, string>;
}

/**
 * The default config path: `$SLUICE_CONFIG` when set, else {@linkcode DEFAULT_CONFIG_PATH}.
 */
export function defaultConfigPath(env: Record<string, string> = Deno.env.toObject()): string {
  const fromEnv = env.SLUICE_CONFIG;
  return fromEnv !== undefined && fromEnv !== "" ? fromEnv : DEFAULT_CONFIG_PATH;
}

/**
 * The config a command works from: `DB_PATH REPLICA_URL` when given, else `-c FILE`, else the
 * default config file when it exists.
 * @throws {ConfigError} for a bad file or URL; {@linkcode UsageError} when there is no config
 * at all (the message names the default path that was looked for).
 */
export async function loadCommandConfig(options: LoadCommandConfigOptions): Promise<Config> {
  const env = options.env ?? Deno.env.toObject();
  if (options.dbPath !== undefined && options.replicaURL !== undefined) {
    return configFromArgs(options.dbPath, options.replicaURL);
  }
  if (options.config !== undefined) return await loadConfig(options.config, env);
  const fallback = defaultConfigPath(env);
  try {
    await Deno.stat(fallback);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new UsageError(
        `no config: -c FILE not given and the default config file ${fallback} does not exist`,
      );
    }
    throw new ConfigError(
      `cannot read the default config file ${fallback}: ${(err as Error).message}`,
    );
  }
  return await loadConfig(fallback, env);
}
