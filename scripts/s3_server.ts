/**
 * A local S3 server for tests and the demo: fauxqs (`npm:fauxqs@2.4.1`, an S3/SQS/SNS emulator)
 * in a separate Deno process, reachable only at 127.0.0.1.
 *
 * fauxqs 2.x needs `node:sqlite` (Node.js ≥ 22.5); Deno has it built in, so the server runs on
 * the same `deno` binary as the caller (`Deno.execPath()`), with its package installed by
 * `deno install` from deno.json. fauxqs itself always binds 0.0.0.0; the server process patches
 * `net.Server.listen` to 127.0.0.1 and only holds `--allow-net=127.0.0.1`, so it cannot listen
 * anywhere else. Objects are stored as files in a data directory (fauxqs `s3StorageDir`), which
 * is what lets {@linkcode S3Server.restart} bring the server back with its data.
 *
 * CLI:
 *
 * ```sh
 * deno run -A scripts/s3_server.ts start [--port N] [--data DIR] [--bucket NAME]...
 * ```
 *
 * prints the endpoint (`http://127.0.0.1:PORT`) on stdout and runs until SIGINT/SIGTERM.
 * `serve` is the internal mode of the server process itself.
 *
 * @module
 */

import { resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** Options for {@linkcode startS3Server}. */
export interface S3ServerOptions {
  /** Port on 127.0.0.1; default: a free one chosen by the kernel. */
  port?: number;
  /** Where objects are stored; default: a fresh temp dir, removed by `stop()`. */
  dataDir?: string;
  /** Buckets to create once the server is up. */
  buckets?: string[];
  /** Milliseconds to wait for the server to come up. Default 30 000. */
  startTimeoutMs?: number;
}

/** A running fauxqs process. */
export interface S3Server {
  /** `http://127.0.0.1:PORT`. */
  readonly endpoint: string;
  /** The port it listens on (kept across restarts). */
  readonly port: number;
  /** Directory holding the stored objects (`buckets/`, `_multipart/`). */
  readonly dataDir: string;
  /** PID of the current server process. */
  readonly pid: number;
  /** Creates a bucket with the S3 API (CreateBucket; 3–63 characters). */
  createBucket(name: string): Promise<void>;
  /** Stops the server (SIGTERM, then SIGKILL after 5 s) and removes a temp data dir. Idempotent. */
  stop(): Promise<void>;
  /** Kills the server process group with SIGKILL, like a crash; `restart()` brings it back. */
  kill(): Promise<void>;
  /** Kills the server if running and starts it again on the same port with the same data. */
  restart(): Promise<void>;
}

/** The static credentials tests use with fauxqs (it does not check them). */
export const FAUXQS_CREDENTIALS = { accessKeyId: "test", secretAccessKey: "test" } as const;

const SERVER_SCRIPT = fileURLToPath(import.meta.url);
const CONFIG_FILE = fileURLToPath(new URL("../deno.json", import.meta.url));
const PROJECT_ROOT = fileURLToPath(new URL("..", import.meta.url));

/**
 * Starts fauxqs in its own process group on 127.0.0.1 and waits until it answers `/health`.
 * The server also exits by itself when this process dies (it watches its stdin).
 * @throws {Error} when the process exits or does not answer within the timeout.
 */
export async function startS3Server(options: S3ServerOptions = {}): Promise<S3Server> {
  const ownDataDir = options.dataDir === undefined;
  const dataDir = resolve(options.dataDir ?? await Deno.makeTempDir({ prefix: "sluice-s3-" }));
  await Deno.mkdir(dataDir, { recursive: true });
  const timeoutMs = options.startTimeoutMs ?? 30_000;
  let proc: ServerProcess;
  try {
    proc = await spawnServer(options.port ?? 0, dataDir, timeoutMs);
  } catch (err) {
    if (ownDataDir) await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    throw err;
  }
  const port = proc.port;
  const endpoint = `http://127.0.0.1:${port}`;
  let stopped = false;

  const server: S3Server = {
    endpoint,
    port,
    dataDir,
    get pid() {
      return proc.child.pid;
    },
    async createBucket(name: string) {
      if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(name)) {
        throw new RangeError(
          `invalid bucket name "${name}": 3-63 lowercase letters, digits, dots and hyphens`,
        );
      }
      const { CreateBucketCommand, S3Client } = await import("@aws-sdk/client-s3");
      const client = new S3Client({
        endpoint,
        region: "us-east-1",
        forcePathStyle: true,
        credentials: FAUXQS_CREDENTIALS,
        maxAttempts: 3,
      });
      try {
        await client.send(new CreateBucketCommand({ Bucket: name }));
      } finally {
        client.destroy();
      }
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await proc.terminate();
      if (ownDataDir) await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    },
    async kill() {
      await proc.kill();
    },
    async restart() {
      if (stopped) throw new Error("S3 server was stopped; start a new one");
      await proc.kill();
      proc = await spawnServer(port, dataDir, timeoutMs);
    },
  };
  try {
    for (const bucket of options.buckets ?? []) await server.createBucket(bucket);
  } catch (err) {
    await server.stop();
    throw err;
  }
  return server;
}

interface ServerProcess {
  child: Deno.ChildProcess;
  port: number;
  /** SIGTERM, wait up to 5 s, then SIGKILL. */
  terminate(): Promise<void>;
  /** SIGKILL the process group and wait for the exit. */
  kill(): Promise<void>;
}

async function spawnServer(
  port: number,
  dataDir: string,
  timeoutMs: number,
): Promise<ServerProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      "--no-prompt",
      "--config",
      CONFIG_FILE,
      "--allow-net=127.0.0.1",
      "--allow-read",
      `--allow-write=${dataDir}`,
      "--allow-env",
      "--allow-sys",
      SERVER_SCRIPT,
      "serve",
      "--port",
      String(port),
      "--data",
      dataDir,
    ],
    cwd: PROJECT_ROOT,
    env: { FAUXQS_INIT: "", NO_COLOR: "1" },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    detached: true, // own process group: kill(-pid) reaches everything it started
  }).spawn();
  const stdin = child.stdin.getWriter(); // held open; EOF tells the server to exit
  const stderrTail = drainTail(child.stderr);
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });

  const signalGroup = (signal: Deno.Signal) => {
    if (exited) return;
    try {
      Deno.kill(-child.pid, signal);
    } catch {
      try {
        child.kill(signal);
      } catch { /* already gone */ }
    }
  };
  const cleanup = async () => {
    await stdin.close().catch(() => {});
    await stderrTail.done;
  };
  const proc: ServerProcess = {
    child,
    port,
    async terminate() {
      signalGroup("SIGTERM");
      const timer = setTimeout(() => signalGroup("SIGKILL"), 5_000);
      await status;
      clearTimeout(timer);
      await cleanup();
    },
    async kill() {
      signalGroup("SIGKILL");
      await status;
      await cleanup();
    },
  };

  try {
    const ready = await withTimeout(
      readReadyLine(child.stdout),
      timeoutMs,
      () => `fauxqs did not start within ${timeoutMs} ms`,
    );
    proc.port = ready.port;
    await waitForHealth(`http://127.0.0.1:${ready.port}/health`, timeoutMs);
  } catch (err) {
    await proc.kill();
    const tail = stderrTail.text().trim();
    throw new Error(
      `could not start the S3 server (fauxqs): ${(err as Error).message}` +
        (tail ? `\n--- server stderr ---\n${tail}` : ""),
      { cause: err },
    );
  }
  return proc;
}

/** Reads the server's stdout until its `{"ready":true,"port":N}` line; keeps draining after. */
async function readReadyLine(stdout: ReadableStream<Uint8Array>): Promise<{ port: number }> {
  const reader = stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) throw new Error("the server process exited before it was ready");
    buffered += value;
    let newline;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, newline).trim();
      buffered = buffered.slice(newline + 1);
      if (!line.startsWith("{")) continue;
      const message = JSON.parse(line) as { ready?: boolean; port?: number };
      if (message.ready && typeof message.port === "number") {
        // Keep draining so the server never blocks on a full pipe.
        (async () => {
          try {
            while (!(await reader.read()).done) { /* discard */ }
          } catch { /* process gone */ }
        })();
        return { port: message.port };
      }
    }
  }
}

/** Polls `url` until it answers 200. */
async function waitForHealth(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(2_000) });
      await response.body?.cancel();
      if (response.ok) return;
      lastError = new Error(`HTTP ${response.status}`);
    } catch (err) {
      lastError = err;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`${url} did not answer within ${timeoutMs} ms: ${(lastError as Error)?.message}`);
}

/** Keeps the last 8 KiB of a stream for error messages. */
function drainTail(stream: ReadableStream<Uint8Array>): { text(): string; done: Promise<void> } {
  let tail = "";
  const done = (async () => {
    try {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        tail = (tail + chunk).slice(-8192);
      }
    } catch { /* process gone */ }
  })();
  return { text: () => tail, done };
}

async function withTimeout<T>(promise: Promise<T>, ms: number, message: () => string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(message())), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** The server process: fauxqs on 127.0.0.1 only, exiting on SIGTERM/SIGINT or stdin EOF. */
async function serve(port: number, dataDir: string): Promise<void> {
  const net = await import("node:net");
  const listen = net.Server.prototype.listen;
  // fauxqs hard-codes host 0.0.0.0; rewrite any wildcard bind to loopback.
  net.Server.prototype.listen = function (this: unknown, ...args: unknown[]) {
    const [first] = args;
    if (first && typeof first === "object" && "host" in first) {
      const host = (first as { host?: string }).host;
      if (host === "0.0.0.0" || host === "::" || host === undefined) {
        args[0] = { ...first, host: "127.0.0.1" };
      }
    }
    return Reflect.apply(listen, this, args);
  } as typeof listen;

  const { startFauxqs } = await import("fauxqs");
  const server = await startFauxqs({
    port,
    host: "127.0.0.1",
    logger: false,
    s3StorageDir: dataDir,
  });
  let stopping = false;
  const shutdown = async () => {
    if (stopping) return;
    stopping = true;
    await server.stop().catch(() => {});
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", shutdown);
  Deno.addSignalListener("SIGINT", shutdown);
  console.log(JSON.stringify({ ready: true, port: server.port }));
  try {
    for await (const _ of Deno.stdin.readable) { /* the parent never writes; EOF = parent gone */ }
  } catch { /* stdin closed */ }
  await shutdown();
}

function parseFlags(args: string[]): { command: string; flags: Map<string, string[]> } {
  const [command = "", ...rest] = args;
  const flags = new Map<string, string[]>();
  for (let i = 0; i < rest.length; i++) {
    const name = rest[i];
    const value = rest[i + 1];
    if (!name.startsWith("--") || value === undefined) {
      throw new Error(`unexpected argument "${name}"`);
    }
    flags.set(name.slice(2), [...(flags.get(name.slice(2)) ?? []), value]);
    i++;
  }
  return { command, flags };
}

const USAGE =
  "usage: deno run -A scripts/s3_server.ts start [--port N] [--data DIR] [--bucket NAME]...";

async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseFlags(args);
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  const { command, flags } = parsed;
  const port = Number(flags.get("port")?.[0] ?? "0");
  const dataDir = flags.get("data")?.[0];
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`invalid --port ${flags.get("port")?.[0]}\n${USAGE}`);
    return 2;
  }
  if (command === "serve") {
    if (!dataDir) {
      console.error("serve needs --data DIR");
      return 2;
    }
    await serve(port, dataDir);
    return 0;
  }
  if (command !== "start") {
    console.error(USAGE);
    return 2;
  }
  const server = await startS3Server({ port, dataDir, buckets: flags.get("bucket") ?? [] });
  console.log(server.endpoint);
  console.error(
    `fauxqs listening at ${server.endpoint} (data in ${server.dataDir}); ` +
      `buckets: ${(flags.get("bucket") ?? []).join(", ") || "none"}; Ctrl-C to stop`,
  );
  await new Promise<void>((resolve) => {
    Deno.addSignalListener("SIGINT", () => resolve());
    Deno.addSignalListener("SIGTERM", () => resolve());
  });
  await server.stop();
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
