/**
 * Coordination between sluice processes on one machine.
 *
 * Only one process may write a database's L0 files: whoever replicates or snapshots a database
 * holds its meta directory lock (src/engine/meta_lock.ts), whose content names the holder: its
 * pid, its command, and for a `replicate` process the Unix socket of its control channel.
 *
 * `sluice snapshot` finding the lock taken by `replicate` does not touch the database: it asks
 * that process, over the socket, to take the snapshot itself (the request goes through the same
 * queue as the daemon's own compactions, so nothing races). The protocol is one JSON request
 * line, then JSON lines back: `{"progress":N}`* and a final `{"ok":true,"txid":N}` or
 * `{"ok":false,"error":"…","code":"…"}`. The socket lives in a private (0700) temp directory,
 * so only the same user (or root) can reach it.
 *
 * @module
 */

import { join } from "node:path";
import { tmpdir } from "node:os";
import type { Logger } from "../log/mod.ts";
import type { ReplicaClient } from "../replica/mod.ts";
import { countingClient } from "../compaction/mod.ts";

/** What a control server does on request. */
export interface ControlHandler {
  /**
   * Takes a full snapshot of `dbPath` now; `onProgress` receives the bytes written so far.
   * When `replica` (a location) is given, the database must be replicated there.
   * @throws {ControlError} with code "not-found" when this process does not replicate it,
   * "failed" when it replicates it elsewhere or the snapshot fails.
   */
  snapshot(
    dbPath: string,
    onProgress: (bytesWritten: number) => void,
    replica?: string,
  ): Promise<{ txid: number }>;
}

/** Why a control request failed. */
export type ControlErrorCode = "not-found" | "unreachable" | "failed";

/** A control request failed; `code` tells whether asking again later can help. */
export class ControlError extends Error {
  /** "not-found": the process does not replicate that database (yet, or any more);
   *  "unreachable": no process answers on the socket; "failed": the operation failed. */
  readonly code: ControlErrorCode;
  /** Builds an error. */
  constructor(message: string, code: ControlErrorCode, options?: ErrorOptions) {
    super(message, options);
    this.name = "ControlError";
    this.code = code;
  }
}

/** The databases of a running `replicate`, as the control channel needs them. */
export interface ManagedDatabases {
  get(path: string):
    | {
      db: { snapshot(client: ReplicaClient): Promise<{ txid: number }> };
      replica: { client: ReplicaClient };
      compactor?: {
        snapshotNow(options: { onProgress?: (bytes: number) => void }): Promise<{ txid: number }>;
      };
      job: { request(): void };
    }
    | undefined;
}

/**
 * The handler a `replicate` process serves: snapshots go through the database's compactor
 * queue (so they never race a compaction) and apply snapshot retention; the L0 file the
 * snapshot's sync wrote is then shipped by the usual upload.
 */
export function snapshotHandler(databases: ManagedDatabases): ControlHandler {
  return {
    async snapshot(dbPath, onProgress, replica) {
      const managed = databases.get(dbPath);
      if (!managed) {
        throw new ControlError(
          `sluice replicate (pid ${Deno.pid}) does not replicate ${dbPath} right now`,
          "not-found",
        );
      }
      const location = managed.replica.client.location;
      if (replica !== undefined && replica !== location) {
        throw new ControlError(
          `sluice replicate (pid ${Deno.pid}) replicates ${dbPath} to ${location}, not to ` +
            `${replica}; snapshot it with the same replica (or stop that process first)`,
          "failed",
        );
      }
      const result = managed.compactor
        ? await managed.compactor.snapshotNow({ onProgress })
        : await managed.db.snapshot(countingClient(managed.replica.client, onProgress));
      managed.job.request();
      return { txid: result.txid };
    },
  };
}

/** Options of {@linkcode ControlServer.listen}. */
export interface ControlServerOptions {
  logger?: Logger;
  /** Parent of the private socket directory. Default: the system temp directory. */
  dir?: string;
}

const MAX_REQUEST_BYTES = 64 * 1024;
const PROGRESS_EVERY_MS = 250;

/** A Unix-socket control channel served by a `replicate` process. */
export class ControlServer {
  /** Path of the socket; recorded in the lock files of the databases this process holds. */
  readonly path: string;
  #dir: string;
  #listener: Deno.Listener;
  #handler: ControlHandler;
  #logger?: Logger;
  #active = new Set<Promise<void>>();
  #closed = false;

  private constructor(dir: string, path: string, listener: Deno.Listener, handler: ControlHandler) {
    this.#dir = dir;
    this.path = path;
    this.#listener = listener;
    this.#handler = handler;
  }

  /**
   * Listens on `control.sock` in a new private temp directory, after removing the ones that
   * killed processes left behind.
   * @throws when the socket cannot be created.
   */
  static async listen(
    handler: ControlHandler,
    options: ControlServerOptions = {},
  ): Promise<ControlServer> {
    await removeStaleSocketDirs(options.dir ?? tmpdir());
    const dir = await Deno.makeTempDir({ dir: options.dir, prefix: SOCKET_DIR_PREFIX });
    const path = join(dir, "control.sock");
    let listener: Deno.Listener;
    try {
      await Deno.chmod(dir, 0o700);
      listener = Deno.listen({ transport: "unix", path });
    } catch (err) {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      throw err;
    }
    const server = new ControlServer(dir, path, listener, handler);
    server.#logger = options.logger;
    server.#acceptLoop();
    return server;
  }

  /** Stops accepting, waits for requests in progress, removes the socket. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#listener.close();
    } catch { /* already closed */ }
    await Promise.allSettled([...this.#active]);
    await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
  }

  async #acceptLoop(): Promise<void> {
    try {
      for await (const conn of this.#listener) {
        const served = this.#serve(conn).catch((err) =>
          this.#logger?.warn("control request failed", { error: (err as Error).message })
        );
        this.#active.add(served);
        served.finally(() => this.#active.delete(served));
      }
    } catch (err) {
      if (!this.#closed) {
        this.#logger?.error("control channel stopped", { error: (err as Error).message });
      }
    }
  }

  async #serve(conn: Deno.Conn): Promise<void> {
    const send = async (value: unknown) => {
      const bytes = new TextEncoder().encode(JSON.stringify(value) + "\n");
      for (let written = 0; written < bytes.length;) {
        written += await conn.write(bytes.subarray(written));
      }
    };
    try {
      const request = await readRequest(conn);
      // Connected and closed without a word: another sluice checking that this socket is
      // alive (removeStaleSocketDirs), not a failed request.
      if (request === undefined) return;
      if (
        request.op !== "snapshot" || typeof request.db !== "string" ||
        (request.replica !== undefined && typeof request.replica !== "string")
      ) {
        await send({
          ok: false,
          code: "failed",
          error: `unknown request ${JSON.stringify(request)}`,
        });
        return;
      }
      this.#logger?.info("snapshot requested over the control channel", { db: request.db });
      let lastSent = 0;
      let sending = Promise.resolve();
      const onProgress = (bytes: number) => {
        const now = Date.now();
        if (now - lastSent < PROGRESS_EVERY_MS) return;
        lastSent = now;
        // The requester may have gone away; the snapshot goes on regardless.
        sending = sending.then(() => send({ progress: bytes })).catch(() => {});
      };
      try {
        const result = await this.#handler.snapshot(
          request.db,
          onProgress,
          request.replica as string | undefined,
        );
        await sending;
        await send({ ok: true, txid: result.txid });
      } catch (err) {
        await sending;
        const code = err instanceof ControlError ? err.code : "failed";
        await send({ ok: false, code, error: (err as Error).message ?? String(err) });
      }
    } finally {
      try {
        conn.close();
      } catch { /* already closed */ }
    }
  }
}

/** Options of {@linkcode requestSnapshot}. */
export interface RequestSnapshotOptions {
  /** Bytes of the snapshot written so far, as the server reports them. */
  onProgress?: (bytesWritten: number) => void;
  /** The replica location the snapshot is meant for; the server refuses any other. */
  replica?: string;
}

/**
 * Asks the process serving `socketPath` to snapshot `dbPath` and waits for it.
 * @throws {ControlError} "unreachable" when nobody answers, "not-found" when that process does
 * not replicate the database, "failed" when the snapshot failed (the message says why).
 */
export async function requestSnapshot(
  socketPath: string,
  dbPath: string,
  options: RequestSnapshotOptions = {},
): Promise<{ txid: number }> {
  let conn: Deno.Conn;
  try {
    conn = await Deno.connect({ transport: "unix", path: socketPath });
  } catch (err) {
    throw new ControlError(
      `cannot reach the sluice process at ${socketPath}: ${(err as Error).message}`,
      "unreachable",
      { cause: err },
    );
  }
  try {
    const request = { op: "snapshot", db: dbPath, replica: options.replica };
    const line = new TextEncoder().encode(JSON.stringify(request) + "\n");
    for (let written = 0; written < line.length;) {
      written += await conn.write(line.subarray(written));
    }
    for await (const message of readLines(conn)) {
      const reply = JSON.parse(message) as {
        ok?: boolean;
        progress?: number;
        txid?: number;
        error?: string;
        code?: ControlErrorCode;
      };
      if (typeof reply.progress === "number") {
        options.onProgress?.(reply.progress);
        continue;
      }
      if (reply.ok === true && typeof reply.txid === "number") return { txid: reply.txid };
      throw new ControlError(reply.error ?? "the snapshot failed", reply.code ?? "failed");
    }
    throw new ControlError(
      `the sluice process at ${socketPath} closed the connection without an answer`,
      "unreachable",
    );
  } finally {
    try {
      conn.close();
    } catch { /* already closed */ }
  }
}

/** The request line, or undefined when the peer closed without sending one. */
async function readRequest(
  conn: Deno.Conn,
): Promise<{ op?: string; db?: unknown; replica?: unknown } | undefined> {
  for await (const line of readLines(conn)) {
    return JSON.parse(line);
  }
  return undefined;
}

/** Newline-separated lines from a connection (a request is bounded in size). */
async function* readLines(conn: Deno.Conn): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  const buffer = new Uint8Array(16 * 1024);
  let pending = "";
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) break;
    pending += decoder.decode(buffer.subarray(0, n), { stream: true });
    if (pending.length > MAX_REQUEST_BYTES && !pending.includes("\n")) {
      throw new Error("control message too long");
    }
    let newline: number;
    while ((newline = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      if (line.trim() !== "") yield line;
    }
  }
  if (pending.trim() !== "") yield pending;
}

const SOCKET_DIR_PREFIX = "sluice-ctl-";

/**
 * Removes `sluice-ctl-*` directories whose only entry is a socket nobody listens on: what a
 * SIGKILLed `replicate` leaves in the temp directory. A live socket is never touched.
 */
async function removeStaleSocketDirs(parent: string): Promise<void> {
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(parent));
  } catch {
    return; // an unreadable temp directory: nothing to clean
  }
  for (const entry of entries) {
    if (!entry.isDirectory || !entry.name.startsWith(SOCKET_DIR_PREFIX)) continue;
    const dir = join(parent, entry.name);
    try {
      const inside = await Array.fromAsync(Deno.readDir(dir));
      if (inside.length !== 1 || inside[0].name !== "control.sock") continue;
      const conn = await Deno.connect({ transport: "unix", path: join(dir, "control.sock") })
        .catch((err) => err as Error);
      if (!(conn instanceof Error)) {
        conn.close();
        continue; // someone is listening
      }
      if (!(conn instanceof Deno.errors.ConnectionRefused)) continue;
      await Deno.remove(dir, { recursive: true });
    } catch { /* another user's, or already gone */ }
  }
}
