/**
 * A replica on an SSH server over SFTP, in Litestream's layout `<path>/ltx/<level>/<min>-<max>.ltx`
 * with the creation time in the file's mtime (FORMAT.md §2.3), as Litestream's sftp client.
 *
 * One SSH connection is opened on first use and shared by every operation (SFTP multiplexes
 * requests); a dropped connection is reopened by the next operation, and idempotent operations
 * are retried on a new connection. The server's host key is always checked: the `host-key`
 * setting, a `known-hosts` file, or the user's `~/.ssh/known_hosts`; an unknown host is refused.
 *
 * SFTP (version 3, what OpenSSH speaks) keeps times in whole seconds, so a plain listing's
 * `createdAt` is the second of the timestamp; a listing with `useMetadata` (timestamp restores)
 * reads the exact milliseconds from each file's LTX header.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { posix } from "node:path";
import type { Client, ConnectConfig, FileEntry, SFTPWrapper } from "ssh2";
import {
  type ListOptions,
  type LTXFileId,
  type LTXFileInfo,
  NotFoundError,
  type OpenOptions,
  OWNER_MARKER_NAME,
  type OwnerMarker,
  type ReplicaClient,
  ReplicaError,
} from "./client.ts";
import {
  assertFileId,
  assertLevel,
  assertRange,
  compareFileIds,
  ltxFilename,
  parseLTXFilename,
} from "./_names.ts";
import { mapConcurrently } from "./_concurrency.ts";
import { loadSSH2 } from "./_sftp_sdk.ts";
import {
  checkHostKey,
  expectedKeys,
  HostKeyError,
  type HostKeyPolicy,
  preferredAlgorithms,
} from "./_ssh_host_key.ts";
import { HEADER_TIME_BYTES, headerTimestamp } from "./_header_time.ts";
import { type RangeBody, resumableStream } from "./_resumable_stream.ts";

/** Where and how to reach one SFTP replica (Litestream's keys). */
export interface SFTPSpec {
  /** `host`, `host:port` or `[v6]:port`; port 22 by default. */
  host: string;
  /** Login name. */
  user: string;
  /** Password authentication. Never logged or shown in errors. */
  password?: string;
  /** Remote directory holding `ltx/`; relative paths start at the login directory. */
  path: string;
  /** Private key file (OpenSSH or PEM format, unencrypted) for public-key authentication. */
  keyPath?: string;
  /** The server's public key (`ssh-ed25519 AAAA…`, Litestream's `host-key`) or `SHA256:` fingerprint. */
  hostKey?: string;
  /** known_hosts file to check the server's key against. Default `~/.ssh/known_hosts`. */
  knownHosts?: string;
  /** Attempts of an idempotent operation across reconnects. Default 3. */
  attempts?: number;
  /** Base of the retry backoff, `retryDelayMs × 2ⁿ`. Default 250. */
  retryDelayMs?: number;
  /** Time allowed for the TCP connection and SSH handshake. Default 20 s. */
  connectTimeoutMs?: number;
}

/** Bytes per SFTP read or write request (OpenSSH accepts up to 255 KiB). */
const CHUNK_SIZE = 128 * 1024;
/** Requests kept in flight per transfer, so throughput is not one round trip per chunk. */
const WINDOW = 8;
/** Concurrent requests of a listing's header reads and of deletes. */
const CONCURRENCY = 16;
/** SFTP status codes (draft-ietf-secsh-filexfer-02 §7). */
const NO_SUCH_FILE = 2;
/** A file-type bit of the mode: regular file. */
const S_IFMT = 0o170000, S_IFREG = 0o100000, S_IFDIR = 0o040000;
/** Temp files: `<name>.<random>.tmp` (Litestream's are `<name>.<pid>.<nanos>.tmp`). */
const TEMP_NAME = /^[0-9a-f]{16}-[0-9a-f]{16}\.ltx(\.[^/]*)?\.tmp$/;

interface Session {
  conn: Client;
  sftp: SFTPWrapper;
  closed: Promise<void>;
}

/**
 * Reads and writes LTX files on an SFTP server. Writes go to a temp name, are fsynced where the
 * server offers `fsync@openssh.com`, stamped with the timestamp, and renamed into place
 * (`posix-rename@openssh.com`, atomic and overwriting).
 */
export class SFTPReplicaClient implements ReplicaClient {
  /** Always `"sftp"`. */
  readonly type = "sftp";
  /** `sftp://user@host[:port]/path` (never the password). */
  readonly location: string;
  /** Host name or address, without the port. */
  readonly host: string;
  /** TCP port. */
  readonly port: number;
  /** The remote directory that holds `ltx/`, as given (cleaned). */
  readonly path: string;

  readonly #spec: SFTPSpec;
  readonly #attempts: number;
  readonly #retryDelayMs: number;
  #session?: Promise<Session>;
  #closed = false;

  /**
   * Parses the spec; nothing is contacted until the first operation.
   * @throws {RangeError} for a missing host or user, or an invalid port.
   */
  constructor(spec: SFTPSpec) {
    const { host, port } = splitHostPort(spec.host);
    if (!host) throw new RangeError("SFTP replica needs a host");
    if (!spec.user) throw new RangeError("SFTP replica needs a user");
    this.host = host;
    this.port = port;
    this.path = cleanRemotePath(spec.path);
    this.#spec = spec;
    this.#attempts = Math.max(1, spec.attempts ?? 3);
    this.#retryDelayMs = spec.retryDelayMs ?? 250;
    const shownHost = host.includes(":") ? `[${host}]` : host;
    const shownPort = port === 22 ? "" : `:${port}`;
    const shownPath = this.path.startsWith("/") ? this.path : `/${this.path}`;
    this.location = `sftp://${encodeURIComponent(spec.user)}@${shownHost}${shownPort}${shownPath}`;
  }

  /** The directory of one level. */
  levelDir(level: number): string {
    return posix.join(this.path, "ltx", String(level));
  }

  /** The remote path of one LTX file. */
  filePath(file: LTXFileId): string {
    return posix.join(this.levelDir(file.level), ltxFilename(file.minTXID, file.maxTXID));
  }

  /**
   * Lists one level (one READDIR sequence). `createdAt` is the mtime (whole seconds); with
   * `useMetadata`, each file's LTX header is read for the exact milliseconds.
   * @throws {ReplicaError} when the server cannot be reached or the directory not read.
   */
  async *ltxFiles(level: number, options: ListOptions = {}): AsyncIterable<LTXFileInfo> {
    assertLevel(level);
    const seekTXID = options.seekTXID ?? 0;
    const dir = this.levelDir(level);
    const entries = await this.#run(`list ${dir}`, async (sftp) => {
      try {
        return await call<FileEntry[]>(sftp, (cb) => sftp.readdir(dir, cb));
      } catch (err) {
        if (statusCode(err) === NO_SUCH_FILE) return [];
        throw err;
      }
    });
    const infos: LTXFileInfo[] = [];
    for (const entry of entries) {
      if ((entry.attrs.mode & S_IFMT) !== S_IFREG) continue;
      const parsed = parseLTXFilename(entry.filename);
      if (!parsed || parsed.minTXID < seekTXID) continue;
      infos.push({
        level,
        ...parsed,
        size: entry.attrs.size,
        createdAt: new Date(entry.attrs.mtime * 1000),
      });
    }
    infos.sort(compareFileIds);
    if (options.useMetadata) await this.#withHeaderTimes(infos);
    yield* infos;
  }

  /**
   * Streams one file or a byte range of it, reading ahead a few requests. A connection that
   * drops mid-file is reopened and the read resumes at the byte reached.
   * @throws {NotFoundError} when the file does not exist.
   * @throws {ReplicaError} when the server cannot be reached.
   */
  async openLTXFile(
    file: LTXFileId,
    options: OpenOptions = {},
  ): Promise<ReadableStream<Uint8Array>> {
    assertFileId(file);
    const offset = options.offset ?? 0;
    assertRange(offset, options.length);
    const path = this.filePath(file);
    const end = options.length === undefined ? Infinity : offset + options.length;
    const open = async (start: number): Promise<RangeBody> => {
      const { sftp, handle, size } = await this.#run(`open ${path}`, async (sftp) => {
        const handle = await call<Buffer>(sftp, (cb) => sftp.open(path, "r", cb));
        try {
          const stats = await call<{ size: number }>(sftp, (cb) => sftp.fstat(handle, cb));
          return { sftp, handle, size: stats.size };
        } catch (err) {
          sftp.close(handle, () => {});
          throw err;
        }
      });
      const stop = Math.min(end, size);
      return {
        body: handleStream(sftp, handle, start, stop),
        length: Math.max(0, stop - start),
      };
    };
    const first = await open(offset);
    return resumableStream(first, (received) => open(offset + received), {
      retries: this.#attempts,
      baseDelayMs: this.#retryDelayMs,
      isPermanent: (err) => err instanceof NotFoundError,
      wrapError: (message, cause) =>
        cause instanceof NotFoundError
          ? cause
          : new ReplicaError(`sftp replica ${this.location}: read ${path}: ${message}`, { cause }),
    });
  }

  /**
   * Writes `<name>.<random>.tmp`, fsyncs it (when the server supports it), sets its atime and
   * mtime to `timestamp` and renames it over the final name. A failed write removes the temp
   * file and cancels a stream `body`. When the connection drops, the write is retried on a new
   * one (a stream body only if the drop came before it was read).
   * @throws {ReplicaError} when the body errors or the server rejects a step.
   */
  async writeLTXFile(
    file: LTXFileId,
    body: Uint8Array | ReadableStream<Uint8Array>,
    timestamp: number,
  ): Promise<LTXFileInfo> {
    assertFileId(file);
    if (!Number.isFinite(timestamp)) throw new RangeError(`invalid LTX timestamp ${timestamp}`);
    const path = this.filePath(file);
    let streamed = false; // a stream body can be sent once: retry only before it is read
    const attempt = async (sftp: SFTPWrapper) => {
      const tmp = `${path}.${crypto.randomUUID().slice(0, 8)}.tmp`;
      let handle: Buffer | undefined;
      try {
        handle = await this.#openForWrite(sftp, tmp);
        streamed = !(body instanceof Uint8Array);
        const size = body instanceof Uint8Array
          ? await writeBytes(sftp, handle, body)
          : await writeStream(sftp, handle, body);
        await fsync(sftp, handle);
        const seconds = Math.floor(timestamp / 1000);
        await call(sftp, (cb) => sftp.futimes(handle!, seconds, seconds, cb));
        const closing = handle;
        handle = undefined;
        await call(sftp, (cb) => sftp.close(closing, cb));
        await call(sftp, (cb) => sftp.ext_openssh_rename(tmp, path, cb));
        return size;
      } catch (err) {
        if (handle !== undefined) await call(sftp, (cb) => sftp.close(handle!, cb)).catch(() => {});
        await call(sftp, (cb) => sftp.unlink(tmp, cb)).catch(() => {});
        throw err;
      }
    };
    let size: number;
    try {
      size = await this.#run(`write ${path}`, attempt, () => !streamed);
    } catch (err) {
      if (!(body instanceof Uint8Array) && !body.locked) await body.cancel(err).catch(() => {});
      throw err;
    }
    return {
      level: file.level,
      minTXID: file.minTXID,
      maxTXID: file.maxTXID,
      size,
      createdAt: new Date(timestamp),
    };
  }

  /**
   * Removes the given files; missing ones are skipped.
   * @throws {ReplicaError} when a file exists but cannot be removed.
   */
  async deleteLTXFiles(files: readonly LTXFileId[]): Promise<void> {
    const paths = files.map((file) => {
      assertFileId(file);
      return this.filePath(file);
    });
    if (paths.length === 0) return;
    await this.#run(
      `delete ${paths.length} file(s) from ${paths[0]}`,
      (sftp) =>
        inBatches(paths, async (path) => {
          await call(sftp, (cb) => sftp.unlink(path, cb)).catch((err) => {
            if (statusCode(err) !== NO_SUCH_FILE) throw err;
          });
        }),
    );
  }

  /**
   * Removes `<path>/ltx` and everything in it; nothing else under the path is touched.
   * @throws {ReplicaError} when removal fails.
   */
  async deleteAll(): Promise<void> {
    const root = posix.join(this.path, "ltx");
    await this.#run(`delete ${root}`, (sftp) => removeTree(sftp, root));
  }

  /**
   * Removes the temp files a killed writer left in the level directories. Call it only while
   * holding the replica (no other writer can be mid-write).
   */
  async removeTempFiles(): Promise<void> {
    const root = posix.join(this.path, "ltx");
    await this.#run(`clean ${root}`, async (sftp) => {
      for (const level of await readdirOrEmpty(sftp, root)) {
        if ((level.attrs.mode & S_IFMT) !== S_IFDIR) continue;
        const dir = posix.join(root, level.filename);
        const temps = (await readdirOrEmpty(sftp, dir)).filter((e) => TEMP_NAME.test(e.filename));
        await inBatches(temps, async (entry) => {
          const path = posix.join(dir, entry.filename);
          await call(sftp, (cb) => sftp.unlink(path, cb)).catch(() => {});
        });
      }
    });
  }

  /**
   * The owner marker at `<path>/sluice-owner.json`. It is created with a plain SFTP rename of a
   * temp file, which OpenSSH performs with link(): it fails when the marker exists, so one
   * claimant wins.
   */
  ownerMarker(): OwnerMarker {
    const path = posix.join(this.path, OWNER_MARKER_NAME);
    return {
      path: `${this.location.replace(/\/$/, "")}/${OWNER_MARKER_NAME}`,
      read: () =>
        this.#run(`read ${path}`, async (sftp) => {
          try {
            return (await readWhole(sftp, path)).toString("utf8");
          } catch (err) {
            if (statusCode(err) === NO_SUCH_FILE) return undefined;
            throw err;
          }
        }),
      createExclusive: (text) =>
        this.#run(`create ${path}`, async (sftp) => {
          const tmp = `${path}.${crypto.randomUUID().slice(0, 8)}.tmp`;
          const handle = await this.#openForWrite(sftp, tmp);
          try {
            await writeBytes(sftp, handle, new TextEncoder().encode(text));
            await fsync(sftp, handle);
          } finally {
            await call(sftp, (cb) => sftp.close(handle, cb)).catch(() => {});
          }
          try {
            await call(sftp, (cb) => sftp.rename(tmp, path, cb));
            return true;
          } catch (err) {
            const exists = await call<unknown>(sftp, (cb) => sftp.stat(path, cb)).then(
              () => true,
              () => false,
            );
            if (exists) return false;
            throw err;
          } finally {
            sftp.unlink(tmp, () => {});
          }
        }),
    };
  }

  /** Closes the SSH connection. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    const session = this.#session;
    this.#session = undefined;
    if (!session) return;
    const opened = await session.catch(() => undefined);
    if (!opened) return;
    opened.conn.end();
    await Promise.race([opened.closed, new Promise((r) => setTimeout(r, 2000))]);
  }

  /** Opens `path` for writing, creating its parent directories when they are missing. */
  async #openForWrite(sftp: SFTPWrapper, path: string): Promise<Buffer> {
    try {
      return await call<Buffer>(sftp, (cb) => sftp.open(path, "w", cb));
    } catch (err) {
      if (statusCode(err) !== NO_SUCH_FILE) throw err;
    }
    await makeDirectories(sftp, posix.dirname(path));
    return await call<Buffer>(sftp, (cb) => sftp.open(path, "w", cb));
  }

  /** Replaces each createdAt with the header timestamp (a 40-byte read per file). */
  async #withHeaderTimes(infos: LTXFileInfo[]): Promise<void> {
    await this.#run(`read LTX headers in ${this.path}`, (sftp) =>
      inBatches(infos, async (info) => {
        const path = this.filePath(info);
        let head: Buffer;
        try {
          head = await readWhole(sftp, path, HEADER_TIME_BYTES);
        } catch (err) {
          if (statusCode(err) === NO_SUCH_FILE) return; // deleted meanwhile: mtime stays
          throw err;
        }
        const ms = headerTimestamp(new Uint8Array(head), info);
        if (ms !== undefined && Math.floor(ms / 1000) * 1000 === info.createdAt.getTime()) {
          info.createdAt = new Date(ms);
        }
      }));
  }

  /**
   * Runs `fn` on the shared session. A connection failure drops the session; when `retry()`
   * says so, `fn` is run again on a new one (up to the attempts, with backoff).
   */
  async #run<T>(
    operation: string,
    fn: (sftp: SFTPWrapper) => Promise<T>,
    retry: () => boolean = () => true,
  ): Promise<T> {
    for (let attempt = 1;; attempt++) {
      let session: Session | undefined;
      let sessionPromise: Promise<Session> | undefined;
      try {
        sessionPromise = this.#connect();
        session = await sessionPromise;
        return await fn(session.sftp);
      } catch (err) {
        const transient = isConnectionError(err);
        if (transient && this.#session === sessionPromise) this.#session = undefined;
        if (transient && session) session.conn.end();
        if (!transient || !retry() || attempt >= this.#attempts || this.#closed) {
          throw this.#error(operation, err);
        }
        await new Promise((r) => setTimeout(r, this.#retryDelayMs * 2 ** (attempt - 1)));
      }
    }
  }

  /** The shared session, connecting on first use or after a drop. */
  #connect(): Promise<Session> {
    if (this.#closed) return Promise.reject(new ReplicaError("the client is closed"));
    if (this.#session) return this.#session;
    const session = this.#open();
    this.#session = session;
    session.catch(() => {
      if (this.#session === session) this.#session = undefined;
    });
    return session;
  }

  async #open(): Promise<Session> {
    const spec = this.#spec;
    const home = envValue("HOME");
    const policy: HostKeyPolicy = {
      hostKey: spec.hostKey,
      knownHosts: spec.knownHosts !== undefined
        ? [spec.knownHosts]
        : home !== undefined
        ? [posix.join(home, ".ssh", "known_hosts")]
        : [],
      knownHostsConfigured: spec.knownHosts !== undefined,
    };
    const expected = await expectedKeys(policy, this.host, this.port);
    let privateKey: Buffer | undefined;
    if (spec.keyPath !== undefined) {
      try {
        privateKey = Buffer.from(await Deno.readFile(spec.keyPath));
      } catch (err) {
        throw new AuthError(
          `cannot read key-path ${spec.keyPath}: ${err instanceof Error ? err.message : err}`,
        );
      }
    }
    const ssh2 = await loadSSH2();
    const conn = new ssh2.Client();
    let refusal: string | undefined;
    const serverHostKey = preferredAlgorithms(expected.keys);
    const config: ConnectConfig = {
      host: this.host,
      port: this.port,
      username: spec.user,
      password: spec.password,
      privateKey,
      readyTimeout: spec.connectTimeoutMs ?? 20_000,
      keepaliveInterval: 15_000,
      keepaliveCountMax: 3,
      hostVerifier: (key: Buffer) => {
        refusal = checkHostKey(new Uint8Array(key), expected, {
          host: this.host,
          port: this.port,
          policy,
        });
        return refusal === undefined;
      },
    };
    if (serverHostKey) {
      config.algorithms = {
        serverHostKey: serverHostKey as NonNullable<ConnectConfig["algorithms"]>["serverHostKey"],
      };
    }
    const closed = new Promise<void>((resolve) => conn.once("close", () => resolve()));
    try {
      await new Promise<void>((resolve, reject) => {
        conn.once("ready", () => resolve());
        conn.once("error", reject);
        // ssh2 ends a connection the server closes before "ready" (a server going down, a
        // proxy refusing) without an "error" and clears its readyTimeout: without this, the
        // session promise would stay pending and every later operation would wait on it.
        const dropped = () =>
          reject(new Error(`the connection to ${this.host}:${this.port} closed before login`));
        conn.once("end", dropped);
        conn.once("close", dropped);
        conn.connect(config);
      });
    } catch (err) {
      conn.end();
      if (refusal !== undefined) throw new HostKeyError(refusal);
      if ((err as { level?: string }).level === "client-authentication") {
        const methods = [
          spec.password !== undefined ? "password" : undefined,
          privateKey !== undefined ? "key-path" : undefined,
        ].filter(Boolean).join(" and ");
        throw new AuthError(
          `authentication as ${spec.user} failed` +
            (methods ? ` (tried ${methods})` : ": set password or key-path"),
        );
      }
      throw err;
    }
    // A drop after this point is noticed by the next operation (its request fails).
    conn.on("error", () => {});
    // Requests are small and answered at once: Nagle's algorithm would hold each one back
    // until the previous answer's delayed ACK (40 ms per round trip).
    conn.setNoDelay(true);
    const sftp = await new Promise<SFTPWrapper>((resolve, reject) => {
      conn.sftp((err, channel) => (err ? reject(err) : resolve(channel)));
    }).catch((err) => {
      conn.end();
      throw err;
    });
    trackChannel(sftp, conn);
    const session: Session = { conn, sftp, closed };
    closed.then(() => {
      void this.#session?.then((current) => {
        if (current === session) this.#session = undefined;
      }, () => {});
    });
    return session;
  }

  #error(operation: string, err: unknown): ReplicaError {
    if (err instanceof ReplicaError) return err;
    const reason = err instanceof Error ? err.message : String(err);
    if (statusCode(err) === NO_SUCH_FILE && operation.startsWith("open ")) {
      return new NotFoundError(
        `sftp replica ${this.location}: LTX file ${operation.slice(5)} does not exist`,
        { cause: err },
      );
    }
    const prefix = `sftp replica ${this.location}`;
    if (err instanceof HostKeyError || err instanceof AuthError) {
      return new ReplicaError(`${prefix}: ${reason}`, { cause: err });
    }
    return new ReplicaError(`${prefix}: ${operation}: ${reason}`, { cause: err });
  }
}

/** Authentication could not even be attempted or was refused. */
class AuthError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AuthError";
  }
}

/** Splits `host`, `host:port`, `[v6]` or `[v6]:port`. */
export function splitHostPort(text: string): { host: string; port: number } {
  const bracketed = /^\[([^\]]*)\](?::(\d+))?$/.exec(text);
  const plain = /^([^:]*)(?::(\d+))?$/.exec(text);
  const match = bracketed ?? plain;
  if (!match) return { host: text, port: 22 }; // a bare IPv6 address
  const port = match[2] === undefined ? 22 : Number(match[2]);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new RangeError(`invalid SFTP port in "${text}"`);
  }
  return { host: match[1], port };
}

/** Go's `path.Clean` without the trailing slash; `.` for an empty path. */
function cleanRemotePath(path: string): string {
  const cleaned = posix.normalize(path || ".");
  return cleaned.length > 1 ? cleaned.replace(/\/+$/, "") : cleaned;
}

/**
 * Runs an ssh2 SFTP request on `sftp` as a promise. ssh2 fails the requests in flight when the
 * connection drops, but silently discards one made afterwards (its callback never runs): such
 * a request fails at once here, as a connection error, instead of hanging its caller forever.
 */
function call<T = void>(
  sftp: SFTPWrapper,
  start: (cb: (err: Error | undefined | null, value: T) => void) => void,
): Promise<T> {
  if (!channelOpen(sftp)) return Promise.reject(channelClosedError());
  return new Promise<T>((resolve, reject) => {
    // Composite calls (readdir of a path: OPENDIR, READDIR…, CLOSE) send their next request
    // from a callback, which a drop in between discards too: the channel's end fails them.
    const calls = pendingCalls.get(sftp);
    calls?.add(reject);
    start((err, value) => {
      calls?.delete(reject);
      if (err) reject(err);
      else resolve(value);
    });
  });
}

/** The rejecters of the calls pending on each session's channel. */
const pendingCalls = new WeakMap<SFTPWrapper, Set<(err: Error) => void>>();
/** Channels that ended, or whose connection closed. */
const endedChannels = new WeakSet<SFTPWrapper>();

/** Fails every pending and later {@linkcode call} on `sftp` once it or `conn` ends. */
function trackChannel(sftp: SFTPWrapper, conn: Client): void {
  const calls = new Set<(err: Error) => void>();
  pendingCalls.set(sftp, calls);
  const ended = () => {
    endedChannels.add(sftp);
    for (const reject of calls) reject(channelClosedError());
    calls.clear();
  };
  sftp.once("end", ended);
  sftp.once("close", ended);
  conn.once("close", ended);
}

function channelClosedError(): Error {
  return new Error("the SFTP channel closed (the connection dropped)");
}

/**
 * Whether requests on `sftp` can still be answered. Besides the channel's end events, two
 * ssh2 internals absent from its types: `readable` turns false when the channel ends, and
 * `outgoing.state` leaves "open" once the channel is being closed.
 */
function channelOpen(sftp: SFTPWrapper): boolean {
  if (endedChannels.has(sftp)) return false;
  const channel = sftp as unknown as { readable?: boolean; outgoing?: { state?: string } };
  return channel.readable !== false && (channel.outgoing?.state ?? "open") === "open";
}

/** The SFTP status code of a failed request, undefined for anything else. */
function statusCode(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "number" ? code : undefined;
}

/** Whether `err` means the connection failed (retry on a new one) rather than the request. */
function isConnectionError(err: unknown): boolean {
  if (err instanceof ReplicaError || err instanceof HostKeyError || err instanceof AuthError) {
    return false;
  }
  return statusCode(err) === undefined;
}

/** `fn` over `items`, {@linkcode CONCURRENCY} at a time. */
async function inBatches<T>(items: readonly T[], fn: (item: T) => Promise<void>): Promise<void> {
  await mapConcurrently(items, CONCURRENCY, fn);
}

async function readdirOrEmpty(sftp: SFTPWrapper, dir: string): Promise<FileEntry[]> {
  try {
    return await call<FileEntry[]>(sftp, (cb) => sftp.readdir(dir, cb));
  } catch (err) {
    if (statusCode(err) === NO_SUCH_FILE) return [];
    throw err;
  }
}

async function removeTree(sftp: SFTPWrapper, dir: string): Promise<void> {
  const entries = await readdirOrEmpty(sftp, dir);
  for (const entry of entries) {
    if ((entry.attrs.mode & S_IFMT) === S_IFDIR) {
      await removeTree(sftp, posix.join(dir, entry.filename));
    }
  }
  const files = entries.filter((e) => (e.attrs.mode & S_IFMT) !== S_IFDIR);
  await inBatches(files, async (entry) => {
    await call(sftp, (cb) => sftp.unlink(posix.join(dir, entry.filename), cb)).catch((err) => {
      if (statusCode(err) !== NO_SUCH_FILE) throw err;
    });
  });
  await call(sftp, (cb) => sftp.rmdir(dir, cb)).catch((err) => {
    if (statusCode(err) !== NO_SUCH_FILE) throw err;
  });
}

async function makeDirectories(sftp: SFTPWrapper, dir: string): Promise<void> {
  const parts = dir.split("/");
  for (let i = 1; i <= parts.length; i++) {
    const prefix = parts.slice(0, i).join("/");
    if (prefix === "" || prefix === ".") continue;
    await call(sftp, (cb) => sftp.mkdir(prefix, { mode: 0o755 }, cb)).catch(async (err) => {
      // Exists already (SFTP v3 reports that as a generic failure): fine if it is a directory.
      const stats = await call<{ mode: number }>(sftp, (cb) => sftp.stat(prefix, cb)).catch(() => {
        throw err;
      });
      if ((stats.mode & S_IFMT) !== S_IFDIR) throw err;
    });
  }
}

/** fsync@openssh.com where the server offers it; other servers' writes are left as they are. */
async function fsync(sftp: SFTPWrapper, handle: Buffer): Promise<void> {
  try {
    await call(sftp, (cb) => sftp.ext_openssh_fsync(handle, cb));
  } catch (err) {
    if (!/not support/i.test(err instanceof Error ? err.message : String(err))) throw err;
  }
}

async function writeBytes(sftp: SFTPWrapper, handle: Buffer, bytes: Uint8Array): Promise<number> {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const pending: Promise<void>[] = [];
  for (let offset = 0; offset < buffer.length; offset += CHUNK_SIZE) {
    const length = Math.min(CHUNK_SIZE, buffer.length - offset);
    const write = call(sftp, (cb) => sftp.write(handle, buffer, offset, length, offset, cb));
    write.catch(() => {}); // observed below; a drop fails them all, and only one is awaited
    pending.push(write);
    if (pending.length >= WINDOW) await pending.shift();
  }
  await Promise.all(pending);
  return bytes.length;
}

/** Writes a stream with up to {@linkcode WINDOW} requests in flight; cancels it on failure. */
async function writeStream(
  sftp: SFTPWrapper,
  handle: Buffer,
  body: ReadableStream<Uint8Array>,
): Promise<number> {
  const reader = body.getReader();
  const pending: Promise<void>[] = [];
  let position = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      const chunk = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
      for (let offset = 0; offset < chunk.length; offset += CHUNK_SIZE) {
        const length = Math.min(CHUNK_SIZE, chunk.length - offset);
        const at = position + offset;
        const write = call(sftp, (cb) => sftp.write(handle, chunk, offset, length, at, cb));
        write.catch(() => {}); // observed below; avoid an unhandled rejection meanwhile
        pending.push(write);
        if (pending.length >= WINDOW) await pending.shift();
      }
      position += chunk.length;
    }
    await Promise.all(pending);
    return position;
  } catch (err) {
    await reader.cancel(err).catch(() => {});
    await Promise.allSettled(pending);
    throw err;
  } finally {
    reader.releaseLock();
  }
}

/** Reads `path` whole, or its first `limit` bytes. */
async function readWhole(sftp: SFTPWrapper, path: string, limit = Infinity): Promise<Buffer> {
  const handle = await call<Buffer>(sftp, (cb) => sftp.open(path, "r", cb));
  try {
    const chunks: Buffer[] = [];
    let position = 0;
    while (position < limit) {
      const want = Math.min(CHUNK_SIZE, limit - position);
      const buffer = Buffer.alloc(want);
      const n = await readAt(sftp, handle, buffer, position);
      if (n === 0) break;
      chunks.push(buffer.subarray(0, n));
      position += n;
    }
    return Buffer.concat(chunks);
  } finally {
    sftp.close(handle, () => {});
  }
}

function readAt(sftp: SFTPWrapper, handle: Buffer, buffer: Buffer, position: number) {
  return readInto(sftp, handle, buffer, 0, position);
}

/** One READ request filling `buffer` from `offset` on; resolves to the bytes read (0 at EOF). */
async function readInto(
  sftp: SFTPWrapper,
  handle: Buffer,
  buffer: Buffer,
  offset: number,
  position: number,
): Promise<number> {
  const n = await call<number | undefined>(
    sftp,
    (cb) =>
      sftp.read(handle, buffer, offset, buffer.length - offset, position, (err, n) => cb(err, n)),
  );
  return n ?? 0;
}

/**
 * A stream of the handle's bytes in [start, stop), with up to {@linkcode WINDOW} reads in
 * flight. A short read is continued where it stopped. The handle is closed at the end, on an
 * error or on cancel.
 */
function handleStream(
  sftp: SFTPWrapper,
  handle: Buffer,
  start: number,
  stop: number,
): ReadableStream<Uint8Array> {
  let requested = start;
  const inFlight: Promise<Uint8Array>[] = [];
  let open = true;
  const close = () => {
    if (open) {
      open = false;
      sftp.close(handle, () => {});
    }
  };
  const readFully = async (position: number, length: number): Promise<Uint8Array> => {
    const buffer = Buffer.alloc(length);
    let filled = 0;
    while (filled < length) {
      const n = await readInto(sftp, handle, buffer, filled, position + filled);
      if (n === 0) break; // end of file: the file shrank; the caller sees a short body
      filled += n;
    }
    return new Uint8Array(buffer.buffer, buffer.byteOffset, filled);
  };
  const fill = () => {
    while (inFlight.length < WINDOW && requested < stop) {
      const length = Math.min(CHUNK_SIZE, stop - requested);
      const read = readFully(requested, length);
      read.catch(() => {}); // observed when its turn comes
      inFlight.push(read);
      requested += length;
    }
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      fill();
      const next = inFlight.shift();
      if (next === undefined) {
        close();
        controller.close();
        return;
      }
      try {
        const chunk = await next;
        if (chunk.length > 0) controller.enqueue(chunk);
        if (chunk.length === 0 || requested >= stop && inFlight.length === 0) {
          close();
          controller.close();
        }
      } catch (err) {
        close();
        controller.error(err);
      }
    },
    cancel() {
      close();
    },
  }, { highWaterMark: 0 });
}

function envValue(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined; // no --allow-env
  }
}
