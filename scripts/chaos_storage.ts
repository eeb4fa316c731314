/**
 * Campaign (c), storage faults. While a writer commits and `sluice replicate` runs:
 *
 * - `s3`: the S3 server (fauxqs) is reached through a fault proxy (tests/_proxy.ts) that fails
 *   a fraction of connections with HTTP 500, resets others, refuses everything (down), slows
 *   traffic; then the server itself is SIGKILLed and restarted;
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
import { createDatabase } from "../tests/_sluice.ts";
import { startFaultProxy } from "../tests/_proxy.ts";
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
export const STORAGE_FAULTS = ["s3", "meta-full", "replica-readonly"] as const;
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

/** Runs the chosen scenarios, each in its own temp directory (removed when it passes). */
export function storageCampaign(options: StorageOptions): Promise<CampaignResult> {
  const { seed, log } = options;
  const faults = options.faults ?? STORAGE_FAULTS;
  const phaseMs = options.phaseMs ?? 3000;
  return campaign("storage", log, async (notes) => {
    const done: string[] = [];
    for (const fault of faults) {
      const dir = await Deno.makeTempDir({ prefix: `sluice-chaos-${fault}-` });
      let passed = false;
      try {
        const outcome = await SCENARIOS[fault]({ dir, seed, phaseMs, log });
        notes.push(`${fault}: ${outcome}`);
        log(`[storage] ${fault}: ${outcome}`);
        done.push(fault);
        passed = true;
      } finally {
        if (passed) await Deno.remove(dir, { recursive: true }).catch(() => {});
        else notes.push(`kept ${dir} for inspection`);
      }
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
      );
      const result = await sluice.stop("SIGTERM");
      stopped = true;
      if (result.code !== 0) throw new Error(`clean shutdown exited ${result.code}`);
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
          await run("umount", replica);
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
};
