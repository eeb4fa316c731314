/**
 * The HTTP endpoint of a running `sluice replicate`, on the config's `addr:`:
 *
 * - `GET /metrics`: Prometheus text exposition (src/daemon/metrics.ts).
 * - `GET /status`: JSON {@linkcode DaemonStatus}, what `sluice status` prints for a running
 *   daemon.
 * - `GET /healthz`: 200 or 503 with a short JSON {@linkcode HealthReport} (src/daemon/health.ts).
 *
 * Why HTTP and not the Unix control socket (src/daemon/control.ts) for status: `addr:` is the one
 * address operators already configure, open to Prometheus and to `curl`, and it answers from
 * another host or container too; the control socket lives in a private temp directory that only
 * `sluice snapshot` finds (through a database's lock file). Without `addr:` `sluice status`
 * computes what it can from disk instead.
 *
 * @module
 */

import { parseListenAddress } from "../config/mod.ts";
import type { Logger } from "../log/mod.ts";
import type { Metrics } from "./metrics.ts";
import type { DatabaseStatus } from "../engine/mod.ts";
import type { HealthReport } from "./health.ts";

/** The `/status` document. */
export interface DaemonStatus {
  /** Process id of the daemon. */
  pid: number;
  /** sluice version. */
  version: string;
  /** When the daemon started (RFC 3339). */
  startedAt: string;
  /** The config file it runs from, when any. */
  config: string | null;
  /** Every database it replicates right now, sorted by path. */
  databases: DatabaseStatus[];
}

/** Options of {@linkcode serveHTTP}. */
export interface HTTPServerOptions {
  /** `host:port` as in the config (`:9090` listens on every interface). */
  addr: string;
  metrics: Metrics;
  /** The `/status` document at this moment. */
  status: () => DaemonStatus;
  /** The `/healthz` document at this moment; unset: `/healthz` always answers 200. */
  health?: () => HealthReport;
  logger?: Logger;
}

/** A listening endpoint. */
export interface HTTPServer {
  /** The address actually bound, `host:port` (port 0 in `addr` is resolved). */
  readonly addr: string;
  /** Stops listening and waits for requests in progress. Idempotent. */
  close(): Promise<void>;
}

/** The endpoint cannot listen on the configured address. */
export class HTTPListenError extends Error {
  /** Builds an error naming the address and the config key. */
  constructor(addr: string, reason: string, options?: ErrorOptions) {
    super(
      `cannot serve /metrics and /status on addr ${addr}: ${reason} ` +
        `(change or remove "addr:" in the config)`,
      options,
    );
    this.name = "HTTPListenError";
  }
}

/**
 * Starts the endpoint. Resolves once it listens.
 * @throws {HTTPListenError} when the address is taken or cannot be bound.
 */
export function serveHTTP(options: HTTPServerOptions): Promise<HTTPServer> {
  const { hostname, port } = parseListenAddress(options.addr);
  const listening = Promise.withResolvers<Deno.NetAddr>();
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({
      hostname,
      port,
      // Deno prints "Listening on …" to stdout by default; sluice's stdout is for command output.
      onListen: (addr) => listening.resolve(addr),
      onError: (err) => {
        options.logger?.error("http request failed", { error: (err as Error).message });
        return new Response("internal error\n", { status: 500 });
      },
    }, (request) => handle(request, options));
  } catch (err) {
    const reason = err instanceof Deno.errors.AddrInUse
      ? "the address is already in use"
      : (err as Error).message;
    return Promise.reject(new HTTPListenError(options.addr, reason, { cause: err }));
  }
  return listening.promise.then((bound) => {
    const host = bound.hostname.includes(":") ? `[${bound.hostname}]` : bound.hostname;
    const addr = `${host}:${bound.port}`;
    options.logger?.info("serving /metrics and /status", { addr });
    let closing: Promise<void> | undefined;
    return {
      addr,
      close: () => closing ??= server.shutdown(),
    };
  });
}

async function handle(request: Request, options: HTTPServerOptions): Promise<Response> {
  const { pathname } = new URL(request.url);
  if (request.method !== "GET" && request.method !== "HEAD") {
    return new Response("method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
  }
  switch (pathname) {
    case "/metrics":
      return new Response(await options.metrics.text(), {
        headers: { "content-type": options.metrics.contentType },
      });
    case "/status":
      return Response.json(options.status(), { headers: { "cache-control": "no-store" } });
    case "/healthz": {
      const health = options.health?.() ??
        { status: "ok", databases: 0, unhealthy: 0, failing: [] } satisfies HealthReport;
      return Response.json(health, {
        status: health.status === "ok" ? 200 : 503,
        headers: { "cache-control": "no-store" },
      });
    }
    case "/":
      return new Response("sluice: GET /metrics (Prometheus), /status (JSON) or /healthz\n");
    default:
      return new Response("not found: try /metrics or /status\n", { status: 404 });
  }
}

/** Options of {@linkcode fetchDaemonStatus}. */
export interface FetchStatusOptions {
  /** Give up after this long, ms. Default 2000. */
  timeoutMs?: number;
}

/**
 * Asks the daemon listening on `addr` (from the config) for its `/status`. An address that
 * listens on every interface (`:9090`, `0.0.0.0:9090`, `[::]:9090`) is asked on loopback.
 * @returns the document, or undefined when nothing answers there (no daemon running).
 * @throws when something answers but not with a sluice status document.
 */
export async function fetchDaemonStatus(
  addr: string,
  options: FetchStatusOptions = {},
): Promise<DaemonStatus | undefined> {
  const { hostname, port } = parseListenAddress(addr);
  const host = hostname === "0.0.0.0" ? "127.0.0.1" : hostname === "::" ? "[::1]" : hostname;
  const url = `http://${host.includes(":") && !host.startsWith("[") ? `[${host}]` : host}:${port}` +
    "/status";
  let response: Response;
  try {
    response = await fetch(url, { signal: AbortSignal.timeout(options.timeoutMs ?? 2000) });
  } catch {
    return undefined; // refused or timed out: no daemon there
  }
  if (!response.ok) {
    await response.body?.cancel();
    throw new Error(`${url} answered ${response.status}, not a sluice status`);
  }
  const document = await response.json().catch(() => undefined) as DaemonStatus | undefined;
  if (
    document === undefined || typeof document.pid !== "number" ||
    !Array.isArray(document.databases)
  ) {
    throw new Error(`${url} did not answer with a sluice status document`);
  }
  return document;
}
