/**
 * A tiny structured logger: one line per event, as text
 * (`2026-11-22T14:01:21.173Z INFO synced db=/x/y.db txid=0000000000000005`) or as one JSON
 * object (`{"time":…,"level":"INFO","msg":"synced","db":"/x/y.db",…}`), to stderr by default.
 *
 * Secrets never print: values of fields named like secret, password, token, credential,
 * access-key or authorization are replaced by `[REDACTED]` (also inside nested objects), and
 * credentials embedded in URLs (`https://user:pass@host`, `?X-Amz-Signature=…`) are masked in
 * every string, the message included. Writing a log line never throws.
 *
 * @module
 */

/** Log verbosity, lowest first. */
export type LogLevel = "debug" | "info" | "warn" | "error";
/** Line format. */
export type LogFormat = "text" | "json";
/** Structured context of one event. */
export type LogFields = Record<string, unknown>;

/** What every component logs through. */
export interface Logger {
  /** The lowest level written. */
  readonly level: LogLevel;
  /** Details useful when debugging (each sync, each upload). */
  debug(message: string, fields?: LogFields): void;
  /** Normal operation (a database added, replication started). */
  info(message: string, fields?: LogFields): void;
  /** Something unexpected that sluice recovered from. */
  warn(message: string, fields?: LogFields): void;
  /** An operation failed. */
  error(message: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every event (e.g. `{ db: path }`). */
  child(fields: LogFields): Logger;
  /** Whether events at `level` are written; lets callers skip building costly fields. */
  enabled(level: LogLevel): boolean;
}

/** Options of {@linkcode createLogger}; `logging:` from the config fits as is. */
export interface LoggerOptions {
  /** Lowest level written. Default "info". */
  level?: LogLevel;
  /** Line format. Default "text". */
  type?: LogFormat;
  /** Unset or true: stderr. false: stdout (Litestream's `stderr: false`). */
  stderr?: boolean;
  /** Receives each finished line (without the newline) instead of stderr/stdout; for tests. */
  sink?: (line: string) => void;
  /** Clock for the timestamp. Default `() => new Date()`. */
  now?: () => Date;
}

const RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };
const LABEL: Record<LogLevel, string> = {
  debug: "DEBUG",
  info: "INFO",
  warn: "WARN",
  error: "ERROR",
};
const REDACTED = "[REDACTED]";
const SECRET_KEY =
  /secret|passw(or)?d|passwd|token|credential|authori[sz]ation|access[-_ ]?key|api[-_ ]?key|private[-_ ]?key|session[-_ ]?key|account[-_ ]?key|signature|cookie|identit(y|ies)/i;
/** An age identity (X25519 secret key) anywhere in a text. */
const AGE_SECRET = /AGE-SECRET-KEY-1[0-9A-Z]+/gi;
const URL_USERINFO = /\b([A-Za-z][A-Za-z0-9+.-]*:\/\/)[^/\s?#@]+@/g;
const SECRET_QUERY =
  /([?&][^=&\s#]*(?:secret|passw(?:or)?d|token|credential|signature|key)[^=&\s#]*=)[^&\s#"]*/gi;
const RESERVED = new Set(["time", "level", "msg"]);
const encoder = new TextEncoder();

/** Whether a field named `key` holds a secret whose value must never be written. */
export function isSecretKey(key: string): boolean {
  return SECRET_KEY.test(key);
}

/** Masks credentials embedded in URLs, and age secret keys, inside `text`. */
export function redactText(text: string): string {
  return text.replace(URL_USERINFO, `$1${REDACTED}@`).replace(SECRET_QUERY, `$1${REDACTED}`)
    .replace(AGE_SECRET, REDACTED);
}

/**
 * A copy of `value` safe to write: secret-named keys redacted at any depth, URL credentials
 * masked, errors reduced to their message, bigints and dates made printable, cycles cut.
 */
export function redact(value: unknown, seen: WeakSet<object> = new WeakSet()): unknown {
  if (typeof value === "string") return redactText(value);
  if (typeof value === "bigint") return value.toString();
  if (value === null || typeof value !== "object") return value;
  if (value instanceof Date) {
    return Number.isNaN(value.getTime()) ? "Invalid Date" : value.toISOString();
  }
  if (value instanceof Error) return redactText(value.message);
  if (value instanceof Uint8Array) return `<${value.length} bytes>`;
  if (seen.has(value)) return "[Circular]";
  seen.add(value);
  if (Array.isArray(value)) return value.map((item) => redact(item, seen));
  const out: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value)) {
    out[key] = isSecretKey(key) ? REDACTED : redact(item, seen);
  }
  return out;
}

/** Creates a logger; see the module docs for the formats. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? "info";
  const format = options.type ?? "text";
  const now = options.now ?? (() => new Date());
  const sink = options.sink ?? writerFor(options.stderr === false ? Deno.stdout : Deno.stderr);
  return new StructuredLogger(level, format, now, sink, {});
}

/** A logger that writes nothing; for tests and library use without output. */
export const silentLogger: Logger = {
  level: "error",
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return silentLogger;
  },
  enabled() {
    return false;
  },
};

class StructuredLogger implements Logger {
  constructor(
    readonly level: LogLevel,
    readonly format: LogFormat,
    readonly now: () => Date,
    readonly sink: (line: string) => void,
    readonly context: LogFields,
  ) {}

  enabled(level: LogLevel): boolean {
    return RANK[level] >= RANK[this.level];
  }

  debug(message: string, fields?: LogFields): void {
    this.#log("debug", message, fields);
  }
  info(message: string, fields?: LogFields): void {
    this.#log("info", message, fields);
  }
  warn(message: string, fields?: LogFields): void {
    this.#log("warn", message, fields);
  }
  error(message: string, fields?: LogFields): void {
    this.#log("error", message, fields);
  }

  child(fields: LogFields): Logger {
    return new StructuredLogger(this.level, this.format, this.now, this.sink, {
      ...this.context,
      ...fields,
    });
  }

  #log(level: LogLevel, message: string, fields?: LogFields): void {
    if (!this.enabled(level)) return;
    try {
      const all = redact({ ...this.context, ...fields }) as Record<string, unknown>;
      const time = this.now().toISOString();
      const msg = redactText(message);
      this.sink(
        this.format === "json" ? jsonLine(time, level, msg, all) : textLine(time, level, msg, all),
      );
    } catch {
      // Logging must never take the program down (closed stderr, odd field values).
    }
  }
}

function jsonLine(
  time: string,
  level: LogLevel,
  msg: string,
  fields: Record<string, unknown>,
): string {
  const record: Record<string, unknown> = { time, level: LABEL[level], msg };
  for (const [key, value] of Object.entries(fields)) {
    if (value === undefined) continue;
    record[RESERVED.has(key) ? `field.${key}` : key] = value;
  }
  return JSON.stringify(record);
}

function textLine(
  time: string,
  level: LogLevel,
  msg: string,
  fields: Record<string, unknown>,
): string {
  let line = `${time} ${LABEL[level]} ${msg.replace(/\r?\n/g, "\\n")}`;
  for (const [key, value] of Object.entries(fields)) {
    if (value === undefined) continue;
    line += ` ${key.replace(/[\s="]/g, "_")}=${textValue(value)}`;
  }
  return line;
}

function textValue(value: unknown): string {
  if (value === null) return "null";
  if (typeof value === "string") {
    return value !== "" && /^[^\s"=\\]+$/.test(value) ? value : JSON.stringify(value);
  }
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function writerFor(stream: { writeSync(p: Uint8Array): number }): (line: string) => void {
  return (line) => {
    let bytes = encoder.encode(line + "\n");
    while (bytes.length > 0) bytes = bytes.subarray(stream.writeSync(bytes));
  };
}
