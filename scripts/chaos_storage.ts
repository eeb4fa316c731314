/**
 * Campaign (c), storage faults. While a writer commits and `sluice replicate` runs:
 *
 * - `s3`: the S3 server (fauxqs) is reached through a fault proxy (tests/_proxy.ts) that fails
 *   a fraction of connections with HTTP 500, resets others, refuses everything (down), slows
 *   traffic; then the server itself is SIGKILLed and restarted;
 * - `abs`, `webdav`, `sftp`: the same through the proxy in front of Azurite (on disk), the
 *   WebDAV test server and Debian's sshd: HTTP 500s and resets (SSH: every connection cut, again
 *   and again), slow traffic, connections refused, then the server process (sshd with its
 *   sessions) SIGKILLed and restarted on the same port and data directory. `sftp` is skipped
 *   where sshd cannot run;
 * - `meta-full`: the meta directory is a 2 MiB tmpfs that fills up, then grows (remount);
 * - `replica-readonly`: the replica directory becomes read-only (a read-only bind mount, as
 *   root ignores permissions; `chmod 0555` when not root), then writable again.
 *
 * sluice must keep running through each fault, report it, and catch up when it clears: the
 * replica reaches the local position, a clean shutdown exits 0, and the restore equals the
 * source with every acknowledged transaction. Faults that need privileges this machine lacks
 * are skipped with the reason printed.
 *
 * @module
 */

import { join } from "node:path";
import { createDatabase, freePort } from "../tests/_sluice.ts";
import { startFaultProxy } from "../tests/_proxy.ts";
import { AZURITE_ACCOUNT, azuriteArgs } from "../tests/_azurite.ts";
import { killProcessTree, sshdUnavailable, startSshd } from "../tests/_sshd.ts";
import { startWebDAVServer } from "../tests/_webdav_server.ts";
import { FAUXQS_CREDENTIALS, startS3Server } from "./s3_server.ts";
import { FileReplicaClient, type ReplicaSpec } from "../src/replica/mod.ts";
import {
  campaign,
  type CampaignResult,
  type Log,
  replicaPosition,
  Rng,
  sleep,
  type SluiceProcess,
  spawnSluice,
  startWriter,
  until,
  verifyReplica,
  writeConfig,
} from "./chaos_lib.ts";

/** The storage faults this campaign knows. */
export const STORAGE_FAULTS = [
  "s3",
  "meta-full",
  "replica-readonly",
  "abs",
  "sftp",
  "webdav",
] as const;
/** One storage fault scenario. */
export type StorageFault = (typeof STORAGE_FAULTS)[number];

/** Options of {@linkcode storageCampaign}. */
export interface StorageOptions {
  seed: number;
  /** Which scenarios to run (default all). */
  faults?: readonly StorageFault[];
  /** Length of each fault phase, ms. */
  phaseMs?: number;
  log: Log;
}

const S3_ENV = {
  AWS_ACCESS_KEY_ID: FAUXQS_CREDENTIALS.accessKeyId,
  AWS_SECRET_ACCESS_KEY: FAUXQS_CREDENTIALS.secretAccessKey,
  AWS_EC2_METADATA_DISABLED: "true",
};

async function run(cmd: string, ...args: string[]): Promise<{ ok: boolean; text: string }> {
  try {
    const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
    const decoder = new TextDecoder();
    return {
      ok: out.success,
      text: (decoder.decode(out.stderr) + decoder.decode(out.stdout)).trim(),
    };
  } catch (err) {
    return { ok: false, text: (err as Error).message };
  }
}

/** The newest TXID among the local L0 files in the meta directory. */
async function localPosition(metaDir: string): Promise<number> {
  let max = 0;
  for await (const f of new FileReplicaClient(metaDir).ltxFiles(0)) max = Math.max(max, f.maxTXID);
  return max;
}

/**
 * Runs the chosen scenarios, each in its own temp directory (removed when it passes). A failed
 * scenario does not stop the others: the campaign fails at the end, naming every failure.
 */
export function storageCampaign(options: StorageOptions): Promise<CampaignResult> {
  const { seed, log } = options;
  const faults = options.faults ?? STORAGE_FAULTS;
  const phaseMs = options.phaseMs ?? 3000;
  return campaign("storage", log, async (notes) => {
    const done: string[] = [];
    const failed: string[] = [];
    for (const fault of faults) {
      const dir = await Deno.makeTempDir({ prefix: `sluice-chaos-${fault}-` });
      let passed = false;
      try {
        const outcome = await SCENARIOS[fault]({ dir, seed, phaseMs, log });
        notes.push(`${fault}: ${outcome}`);
        log(`[storage] ${fault}: ${outcome}`);
        done.push(outcome.startsWith("SKIPPED") ? `${fault} skipped` : fault);
        passed = true;
      } catch (err) {
        const text = err instanceof Error ? (err.stack ?? err.message) : String(err);
        notes.push(`${fault}: FAILED: ${text.split("\n")[0]}`);
        // The whole message (sluice's log tail included) stays with the kept directory.
        await Deno.writeTextFile(join(dir, "failure.txt"), text).catch(() => {});
        log(`[storage] ${fault}: FAILED: ${text}`);
        failed.push(fault);
      } finally {
        if (passed) await Deno.remove(dir, { recursive: true }).catch(() => {});
        else notes.push(`kept ${dir} for inspection`);
      }
    }
    if (failed.length > 0) {
      throw new Error(`${failed.join(", ")} failed; passed: ${done.join(", ") || "none"}`);
    }
    return done.join(", ");
  });
}

interface ScenarioContext {
  dir: string;
  seed: number;
  phaseMs: number;
  log: Log;
}

/** What every scenario shares: a database, a writer, sluice, and the final check. */
interface Harness {
  dbPath: string;
  ackFile: string;
  metaDir: string;
  configPath: string;
  sluice: SluiceProcess;
  /** Fails if sluice has exited. */
  assertAlive(when: string): Promise<void>;
  /** Stops the writer, waits for the replica to catch up, stops sluice cleanly, verifies. */
  finish(spec: ReplicaSpec, url: string, env?: Record<string, string>): Promise<number>;
  /** Error/warning lines sluice has logged so far. */
  problems(): number;
  cleanup(): Promise<void>;
}

async function harness(
  ctx: ScenarioContext,
  replicaYAML: string,
  env: Record<string, string> = {},
  metaPath?: string,
): Promise<Harness> {
  const dbPath = join(ctx.dir, "app.db");
  const ackFile = join(ctx.dir, "acks");
  const configPath = join(ctx.dir, "sluice.yml");
  const metaDir = metaPath ?? join(ctx.dir, ".app.db-sluice");
  createDatabase(dbPath);
  await writeConfig(
    configPath,
    `
levels:
  - interval: 1s
l0-retention: 1s
dbs:
  - path: ${dbPath}
${metaPath ? `    meta-path: ${metaPath}\n` : ""}    monitor-interval: 250ms
    replica:
${replicaYAML}
`,
  );
  const sluice = spawnSluice(["replicate", "-c", configPath], env);
  await sleep(1000);
  const writer = startWriter([
    "--db",
    dbPath,
    "--rate",
    "100",
    "--big-every",
    "25",
    "--big-pages",
    "60",
    "--busy-timeout",
    "1000",
    "--seed",
    String(ctx.seed),
    "--ack-file",
    ackFile,
    "--ack-times",
  ]);
  let stopped = false;
  const h: Harness = {
    dbPath,
    ackFile,
    metaDir,
    configPath,
    sluice,
    async assertAlive(when) {
      const exited = await Promise.race([
        sluice.status.then(() => true),
        sleep(0).then(() => false),
      ]);
      if (exited) throw new Error(`sluice exited ${when}: ${sluice.stderr().slice(-2000)}`);
    },
    problems: () => sluice.stderr().split("\n").filter((l) => / (ERROR|WARN) /.test(l)).length,
    async finish(spec, url, verifyEnv) {
      await writer.stop();
      const local = await localPosition(metaDir);
      await until(
        `the replica catching up with local TXID ${local}`,
        async () => (await replicaPosition(spec).catch(() => 0)) >= local,
        60_000,
        250,
      ).catch((err) => {
        throw new Error(`${err.message}; sluice's log ends with:\n${sluice.stderr().slice(-4000)}`);
      });
      ctx.log(`[storage] replica at local TXID ${local}; stopping sluice, restoring`);
      // A shutdown that never ends fails the scenario (with sluice's log) instead of the run.
      const stopping = sluice.stop("SIGTERM");
      const hung = await Promise.race([stopping.then(() => false), sleep(60_000).then(() => true)]);
      if (hung) await sluice.stop("SIGKILL");
      const result = await stopping;
      stopped = true;
      if (hung || result.code !== 0) {
        throw new Error(
          `${hung ? "no exit 60 s after SIGTERM" : `clean shutdown exited ${result.code}`}; ` +
            `sluice's log ends with:\n${result.stderr.slice(-4000)}`,
        );
      }
      const final = await verifyReplica({
        label: "final",
        dbPath,
        replicaUrl: url,
        replicaSpec: spec,
        ackFile,
        workDir: ctx.dir,
        env: verifyEnv,
        final: true,
      });
      return final.m;
    },
    async cleanup() {
      await writer.stop().catch(() => {});
      if (!stopped) await sluice.stop("SIGKILL");
    },
  };
  return h;
}

const SCENARIOS: Record<StorageFault, (ctx: ScenarioContext) => Promise<string>> = {
  async s3(ctx) {
    const rng = new Rng(ctx.seed);
    const server = await startS3Server({ buckets: ["chaos"] });
    const proxy = startFaultProxy(server.endpoint);
    const endpointQuery = (endpoint: string) =>
      `?endpoint=${encodeURIComponent(endpoint)}&region=us-east-1&force-path-style=true`;
    let h: Harness | undefined;
    try {
      h = await harness(
        ctx,
        `      url: s3://chaos/app${endpointQuery(proxy.url)}\n      sync-interval: 200ms`,
        S3_ENV,
      );
      const phases: [string, () => void | Promise<void>][] = [
        [
          "500s and resets",
          () => proxy.setFaults({ failRate: 0.3, resetRate: 0.2, random: () => rng.next() }),
        ],
        ["down", () => proxy.setFaults({ down: true })],
        ["slow", () => proxy.setFaults({ delayMs: 150 })],
        ["server killed", async () => {
          proxy.setFaults({});
          await server.kill();
        }],
      ];
      for (const [name, apply] of phases) {
        const before = h.problems();
        await apply();
        const until = Date.now() + ctx.phaseMs;
        while (Date.now() < until) {
          proxy.dropAll(); // reconnect, so the faults reach new requests
          await sleep(300);
        }
        await h.assertAlive(`during "${name}"`);
        if (name === "down" && h.problems() === before) {
          throw new Error("sluice reported nothing while the S3 server was unreachable");
        }
        if (name === "server killed") await server.restart();
        proxy.setFaults({});
      }
      const injected = proxy.injected;
      const spec: ReplicaSpec = {
        type: "s3",
        bucket: "chaos",
        path: "app",
        endpoint: server.endpoint,
        region: "us-east-1",
        forcePathStyle: true,
        ...FAUXQS_CREDENTIALS,
      };
      const m = await h.finish(spec, `s3://chaos/app${endpointQuery(server.endpoint)}`, S3_ENV);
      return `caught up after 500s/resets/down/slow/server kill ` +
        `(${injected.failed} × 500, ${injected.reset} resets, ${injected.refused} refused); ` +
        `${h.problems()} error lines logged; restore = source (${m} transactions)`;
    } finally {
      await h?.cleanup();
      await proxy.close();
      await server.stop();
    }
  },

  async "meta-full"(ctx) {
    const metaDir = join(ctx.dir, "meta");
    await Deno.mkdir(metaDir);
    const mounted = await run("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", metaDir);
    if (!mounted.ok) return `SKIPPED: cannot mount a 2 MiB tmpfs (${mounted.text})`;
    const replica = join(ctx.dir, "replica");
    let h: Harness | undefined;
    try {
      h = await harness(ctx, `      url: file://${replica}`, {}, metaDir);
      // Fill what the L0 files left: a ballast file leaving ~64 KiB.
      const ballast = join(metaDir, "ballast");
      const free = async () => {
        const df = await run("df", "-B1", "--output=avail", metaDir);
        return Number(df.text.split("\n").pop());
      };
      const fill = Math.max(0, (await free()) - 64 * 1024);
      await Deno.writeFile(ballast, new Uint8Array(fill)).catch(() => {});
      const before = h.problems();
      await sleep(ctx.phaseMs);
      await h.assertAlive("with the meta directory full");
      const full = h.problems() > before;
      if (!full) throw new Error("sluice reported nothing while the meta directory was full");
      const grown = await run("mount", "-o", "remount,size=64m", metaDir);
      if (!grown.ok) await Deno.remove(ballast);
      else await Deno.remove(ballast);
      await sleep(500);
      const m = await h.finish({ type: "file", path: replica }, `file://${replica}`);
      return `disk full reported, caught up once space returned; restore = source (${m} transactions)`;
    } finally {
      await h?.cleanup();
      await run("umount", "-l", metaDir);
    }
  },

  async "replica-readonly"(ctx) {
    const replica = join(ctx.dir, "replica");
    const h = await harness(ctx, `      url: file://${replica}`);
    let how = "";
    let undo = async () => {};
    try {
      await until(
        "the first upload",
        async () => (await replicaPosition({ type: "file", path: replica })) > 0,
      );
      if (Deno.uid() === 0) {
        const bound = await run("mount", "--bind", replica, replica);
        const ro = bound.ok ? await run("mount", "-o", "remount,ro,bind", replica) : bound;
        if (!ro.ok) {
          if (bound.ok) await run("umount", replica);
          return `SKIPPED: running as root and a read-only bind mount failed (${ro.text})`;
        }
        how = "read-only bind mount";
        undo = async () => {
          // A descriptor sluice holds in the replica (a directory it fsyncs, a file it
          // writes) makes a plain umount fail with EBUSY, and the fault would never clear:
          // detach lazily then (new opens see the writable directory at once).
          const plain = await run("umount", replica);
          const lazy = plain.ok ? plain : await run("umount", "-l", replica);
          if (!lazy.ok) {
            throw new Error(`could not undo the read-only mount: ${plain.text}; ${lazy.text}`);
          }
        };
      } else {
        for (const level of ["", "ltx", "ltx/0", "ltx/1"]) {
          await Deno.chmod(join(replica, level), 0o555).catch(() => {});
        }
        how = "chmod 0555";
        undo = async () => {
          for (const level of ["", "ltx", "ltx/0", "ltx/1"]) {
            await Deno.chmod(join(replica, level), 0o755).catch(() => {});
          }
        };
      }
      const before = h.problems();
      await sleep(ctx.phaseMs);
      await h.assertAlive("with the replica read-only");
      if (h.problems() === before) {
        throw new Error("sluice reported nothing while the replica was read-only");
      }
      await undo();
      undo = async () => {};
      const m = await h.finish({ type: "file", path: replica }, `file://${replica}`);
      return `${how}: reported, caught up when writable again; restore = source (${m} transactions)`;
    } finally {
      await undo();
      await h.cleanup();
    }
  },

  abs: (ctx) => outage(ctx, absBackend),
  sftp: (ctx) => outage(ctx, sftpBackend),
  webdav: (ctx) => outage(ctx, webdavBackend),
};

/** A storage server process that {@linkcode outage} crashes and brings back. */
interface OutageServer {
  /** Where the fault proxy forwards to: `http://127.0.0.1:PORT` (only the port counts for SSH). */
  readonly target: string;
  /** SIGKILLs the server process (and its per-connection children), like a crash. */
  kill(): Promise<void>;
  /** Starts it again on the same port with the same data. */
  restart(): Promise<void>;
  /** Ends it for good and removes what it stored. */
  stop(): Promise<void>;
}

/** One backend of {@linkcode outage}: its server and how sluice and the checks reach it. */
interface OutageBackend {
  server: OutageServer;
  /** HTTP (the proxy's 500s and resets apply) or SSH (connections are cut instead). */
  http: boolean;
  /** The keys under `replica:` that reach the server through the proxy at `proxyPort`. */
  replicaYAML(proxyUrl: string, proxyPort: number): string;
  /** The replica reached directly, for the checks. */
  spec: ReplicaSpec;
  /** The same for `sluice restore`. */
  url: string;
  /** Credentials sluice reads from its environment. */
  env: Record<string, string>;
  /**
   * How long the server must see no request before it is killed. Azurite writes its metadata
   * to disk every 5 s, so a SIGKILL loses blobs it acknowledged less than 5 s before: Azure
   * never loses an acknowledged write, so the kill comes after a quiet (unreachable) phase.
   */
  quietMs: number;
}

/** Starts a backend, or says why it cannot run here. */
type BackendStarter = (ctx: ScenarioContext) => Promise<OutageBackend | string>;

/**
 * The outage scenario of a non-S3 backend: through the fault proxy, transient faults (HTTP 500s
 * and resets, or cut SSH connections), slow traffic, then connections refused and the server
 * SIGKILLed, restarted after a while on the same port and data. sluice must stay up, report
 * the outage, and catch up by itself.
 */
async function outage(ctx: ScenarioContext, start: BackendStarter): Promise<string> {
  const rng = new Rng(ctx.seed);
  const backend = await start(ctx);
  if (typeof backend === "string") return `SKIPPED: ${backend}`;
  const proxy = startFaultProxy(backend.server.target);
  let h: Harness | undefined;
  try {
    const step = (what: string) => ctx.log(`[storage] ${what}`);
    step("server up; replicating");
    h = await harness(ctx, backend.replicaYAML(proxy.url, proxy.port), backend.env);
    await until(
      "the first upload",
      async () => (await replicaPosition(backend.spec).catch(() => 0)) > 0,
      30_000,
      250,
    );
    /** Waits `ms`; with `cut`, closes every open connection every 200–700 ms meanwhile. */
    const hold = async (ms: number, cut: boolean) => {
      const end = Date.now() + ms;
      while (Date.now() < end) {
        if (cut) proxy.dropAll();
        await sleep(Math.min(rng.int(200, 700), Math.max(0, end - Date.now())));
      }
    };
    step("first upload done; transient faults");
    const opened = proxy.connections;
    if (backend.http) {
      proxy.setFaults({ failRate: 0.3, resetRate: 0.2, random: () => rng.next() });
    }
    await hold(ctx.phaseMs, true);
    const reconnects = proxy.connections - opened;
    await h.assertAlive(backend.http ? "during 500s and resets" : "with connections cut");
    proxy.setFaults({ delayMs: 100 });
    await hold(ctx.phaseMs, backend.http);
    await h.assertAlive("with slow traffic");
    const before = h.problems();
    step("connections refused, then the server killed");
    proxy.setFaults({ down: true });
    proxy.dropAll();
    await hold(Math.max(ctx.phaseMs, backend.quietMs), false);
    await backend.server.kill();
    proxy.setFaults({}); // new connections reach the dead port: refused
    await hold(ctx.phaseMs, false);
    await h.assertAlive("with the server down and killed");
    if (h.problems() === before) {
      throw new Error(
        "sluice reported nothing while the server was unreachable; its log ends with:\n" +
          h.sluice.stderr().slice(-3000),
      );
    }
    await backend.server.restart();
    step("server restarted; waiting for sluice to catch up");
    const injected = proxy.injected;
    const m = await h.finish(backend.spec, backend.url, backend.env);
    const transient = backend.http
      ? `${injected.failed} × 500, ${injected.reset} resets`
      : `connections cut every 0.2–0.7 s (${reconnects} reconnects)`;
    return `caught up after ${transient}, slow, down, server SIGKILLed and restarted ` +
      `(${injected.refused} refused); ${h.problems()} error lines logged; ` +
      `restore = source (${m} transactions)`;
  } finally {
    await h?.cleanup();
    await proxy.close();
    await backend.server.stop();
  }
}

const absBackend: BackendStarter = async (ctx) => {
  const server = await startAzuriteOnDisk(join(ctx.dir, "azurite"));
  try {
    const { BlobServiceClient, StorageSharedKeyCredential } = await import("@azure/storage-blob");
    const credential = new StorageSharedKeyCredential(
      AZURITE_ACCOUNT.accountName,
      AZURITE_ACCOUNT.accountKey,
    );
    await new BlobServiceClient(server.endpoint, credential).getContainerClient("chaos").create();
  } catch (err) {
    await server.stop();
    throw err;
  }
  const url = (endpoint: string) =>
    `abs://${AZURITE_ACCOUNT.accountName}@chaos/app?endpoint=${encodeURIComponent(endpoint)}`;
  return {
    server,
    http: true,
    replicaYAML: (proxyUrl) =>
      `      url: ${url(`${proxyUrl}/${AZURITE_ACCOUNT.accountName}`)}\n` +
      `      sync-interval: 200ms`,
    spec: {
      type: "abs",
      container: "chaos",
      path: "app",
      endpoint: server.endpoint,
      ...AZURITE_ACCOUNT,
    },
    url: url(server.endpoint),
    env: { LITESTREAM_AZURE_ACCOUNT_KEY: AZURITE_ACCOUNT.accountKey },
    quietMs: 6000,
  };
};

const sftpBackend: BackendStarter = async () => {
  const unavailable = sshdUnavailable();
  if (unavailable !== undefined) return unavailable;
  const sshd = await startSshd();
  const path = join(sshd.dataDir, "app");
  const query = `host-key=${encodeURIComponent(sshd.hostKeyLine)}&key-path=${
    encodeURIComponent(sshd.userKeyPath)
  }`;
  return {
    server: {
      target: `http://${sshd.host}:${sshd.port}`,
      kill: () => killProcessTree(sshd.process),
      restart: () => sshd.restart(),
      stop: () => sshd.stop(),
    },
    http: false,
    replicaYAML: (_proxyUrl, proxyPort) =>
      [
        "      type: sftp",
        `      host: 127.0.0.1:${proxyPort}`,
        `      user: ${sshd.user}`,
        `      key-path: ${sshd.userKeyPath}`,
        `      host-key: ${sshd.hostKeyLine}`,
        `      path: ${path}`,
        "      sync-interval: 200ms",
      ].join("\n"),
    spec: {
      type: "sftp",
      host: `${sshd.host}:${sshd.port}`,
      user: sshd.user,
      keyPath: sshd.userKeyPath,
      hostKey: sshd.hostKeyLine,
      path,
    },
    url: `sftp://${sshd.user}@${sshd.host}:${sshd.port}${path}?${query}`,
    env: {},
    quietMs: 0,
  };
};

const webdavBackend: BackendStarter = async () => {
  const dav = await startWebDAVServer();
  return {
    server: {
      target: dav.url,
      async kill() {
        try {
          dav.process.kill("SIGKILL");
        } catch { /* already exited */ }
        await dav.process.status;
      },
      restart: () => dav.restart(),
      stop: () => dav.stop(),
    },
    http: true,
    replicaYAML: (proxyUrl) =>
      [
        "      type: webdav",
        `      webdav-url: ${proxyUrl}`,
        `      webdav-username: ${dav.user}`,
        `      webdav-password: ${dav.password}`,
        "      path: chaos/app",
        "      sync-interval: 200ms",
      ].join("\n"),
    spec: {
      type: "webdav",
      url: dav.url,
      username: dav.user,
      password: dav.password,
      path: "chaos/app",
    },
    url: `webdav://${dav.user}:${dav.password}@127.0.0.1:${dav.port}/chaos/app`,
    env: {},
    quietMs: 0,
  };
};

/**
 * Azurite's blob service on a fixed loopback port, storing in `dataDir`, so that a restarted
 * process serves what the killed one stored (tests/_azurite.ts picks a new port per start).
 */
async function startAzuriteOnDisk(dataDir: string): Promise<OutageServer & { endpoint: string }> {
  await Deno.mkdir(dataDir, { recursive: true });
  const port = freePort();
  let child = await spawnAzurite(port, dataDir);
  const kill = async () => {
    try {
      child.kill("SIGKILL");
    } catch { /* already exited */ }
    await child.status;
  };
  return {
    target: `http://127.0.0.1:${port}`,
    endpoint: `http://127.0.0.1:${port}/${AZURITE_ACCOUNT.accountName}`,
    kill,
    async restart() {
      await kill();
      child = await spawnAzurite(port, dataDir);
    },
    stop: kill, // dataDir is under the scenario's directory
  };
}

/** Starts Azurite and waits for its "listens on" line (30 s at most). */
async function spawnAzurite(port: number, dataDir: string): Promise<Deno.ChildProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: azuriteArgs(port, dataDir, true),
    cwd: dataDir,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text().catch(() => "");
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const deadline = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  }, 30_000);
  let output = "";
  try {
    while (!/listens on http:\/\/127\.0\.0\.1:\d+/.test(output)) {
      const { done, value } = await reader.read();
      if (done) throw new Error(`Azurite did not start:\n${output}\n${await stderr}`);
      output += value;
    }
  } finally {
    clearTimeout(deadline);
  }
  // Keep draining the access log so Azurite never blocks on a full pipe.
  void (async () => {
    try {
      while (!(await reader.read()).done) { /* discard */ }
    } catch { /* process gone */ }
  })();
  return child;
}
