/**
 * Test helper: Azurite's blob service (`npm:azurite`, installed by `deno install` from
 * deno.json) in its own process on 127.0.0.1, on a free port, storing into a temp directory.
 *
 * ```ts
 * const azurite = await startAzurite();
 * await azurite.createContainer("sluice");
 * const client = new ABSReplicaClient(absSpec(azurite, "sluice", "db"));
 * // …
 * await azurite.stop();
 * ```
 *
 * @module
 */

import { join } from "node:path";
import type { ABSSpec } from "../src/replica/mod.ts";
import { ROOT } from "./_sluice.ts";

/** Azurite's well-known development account (public, documented by Microsoft). */
export const AZURITE_ACCOUNT = {
  accountName: "devstoreaccount1",
  accountKey:
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
} as const;

/** A running Azurite blob service. */
export interface Azurite {
  /** The blob service URL, `http://127.0.0.1:PORT/devstoreaccount1`. */
  readonly endpoint: string;
  /** PID of the Azurite process. */
  readonly pid: number;
  /** Creates a container. */
  createContainer(name: string): Promise<void>;
  /** Kills the process (by its pid) and removes its data directory. Idempotent. */
  stop(): Promise<void>;
}

/** Options of {@linkcode startAzurite}. */
export interface AzuriteOptions {
  /** Keep blobs in files under a temp directory instead of memory (for large blobs). */
  onDisk?: boolean;
  /** Milliseconds to wait for Azurite to come up. Default 30 000. */
  timeoutMs?: number;
}

/**
 * The `deno` arguments that run Azurite's blob service on 127.0.0.1:`port` (0: any free port),
 * writing only under `dataDir`; blobs kept there when `onDisk`, else in memory.
 */
export function azuriteArgs(port: number, dataDir: string, onDisk: boolean): string[] {
  return [
    "run",
    "--quiet",
    "--no-prompt",
    "--config",
    join(ROOT, "deno.json"),
    "--allow-net=127.0.0.1",
    "--allow-read",
    `--allow-write=${dataDir}`,
    "--allow-env",
    "--allow-sys",
    join(ROOT, "node_modules/azurite/dist/src/blob/main.js"),
    "--blobHost",
    "127.0.0.1",
    "--blobPort",
    String(port),
    ...(onDisk ? ["--location", dataDir] : ["--inMemoryPersistence"]),
    "--skipApiVersionCheck",
    "--loose",
    "--disableProductStyleUrl",
    "--disableTelemetry", // and it could not reach out anyway: --allow-net=127.0.0.1
  ];
}

/**
 * Starts Azurite and waits for its "listens on" line.
 * @throws {Error} with Azurite's output when it does not start within `timeoutMs`.
 */
export async function startAzurite(options: AzuriteOptions = {}): Promise<Azurite> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const dataDir = await Deno.makeTempDir({ prefix: "sluice-azurite-" });
  const child = new Deno.Command(Deno.execPath(), {
    args: azuriteArgs(0, dataDir, options.onDisk ?? false),
    cwd: dataDir, // in memory, Azurite writes nothing, but it checks that it could
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let output = "";
  const stderr = new Response(child.stderr).text();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    await child.status;
    await reader.cancel().catch(() => {});
    await stderr.catch(() => "");
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  };
  let port: number | undefined;
  const deadline = setTimeout(() => stop(), timeoutMs);
  try {
    while (port === undefined) {
      const { done, value } = await reader.read();
      if (done) break;
      output += value;
      const match = /listens on http:\/\/127\.0\.0\.1:(\d+)/.exec(output);
      if (match) port = Number(match[1]);
    }
  } finally {
    clearTimeout(deadline);
  }
  if (port === undefined) {
    await stop();
    throw new Error(`Azurite did not start:\n${output}\n${await stderr.catch(() => "")}`);
  }
  // Keep draining the access log so Azurite never blocks on a full pipe.
  (async () => {
    try {
      while (!(await reader.read()).done) { /* discard */ }
    } catch { /* process gone */ }
  })();
  const endpoint = `http://127.0.0.1:${port}/${AZURITE_ACCOUNT.accountName}`;
  return {
    endpoint,
    pid: child.pid,
    async createContainer(name) {
      const { BlobServiceClient, StorageSharedKeyCredential } = await import(
        "@azure/storage-blob"
      );
      const credential = new StorageSharedKeyCredential(
        AZURITE_ACCOUNT.accountName,
        AZURITE_ACCOUNT.accountKey,
      );
      await new BlobServiceClient(endpoint, credential).getContainerClient(name).create();
    },
    stop,
  };
}

/** An {@linkcode ABSSpec} for `container`/`path` on Azurite with the development account. */
export function absSpec(
  azurite: { endpoint: string },
  container: string,
  path: string,
  extra: Partial<ABSSpec> = {},
): ABSSpec {
  return { container, path, endpoint: azurite.endpoint, ...AZURITE_ACCOUNT, ...extra };
}
