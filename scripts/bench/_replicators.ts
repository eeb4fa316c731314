/**
 * The two replicators under comparison, started the same way on the same database: sluice from
 * source with its defaults, Litestream v0.3.13 with its defaults (a config listing the database
 * and one replica, nothing else). Also the bench writer as a child process.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { type Background, LITESTREAM, ROOT, startLitestream, startSluice } from "./_common.ts";

/** Which replicator. */
export type ToolName = "sluice" | "litestream";

/** Display names for the table. */
export const TOOL_LABEL: Record<ToolName, string> = { sluice: "sluice", litestream: LITESTREAM };

/** Replica destination: a directory, or a bucket/prefix on an S3 endpoint. */
export type Destination =
  | { type: "file"; dir: string }
  | { type: "s3"; endpoint: string; bucket: string; path: string };

/** Credentials fauxqs accepts (it does not check them). */
const S3_ENV = {
  AWS_ACCESS_KEY_ID: "test",
  AWS_SECRET_ACCESS_KEY: "test",
  AWS_REGION: "us-east-1",
};

/** Options of {@linkcode startReplicator}. */
export interface ReplicatorOptions {
  /**
   * Sync interval in ms, set explicitly for both tools (a like-for-like comparison); unset:
   * each tool's default (sluice 100 ms for a directory, Litestream v0.3 1 s).
   */
  syncInterval?: number;
}

/** Starts `tool` replicating `dbPath` to `dest` with default settings (but `options`). */
export async function startReplicator(
  tool: ToolName,
  dbPath: string,
  dest: Destination,
  workDir: string,
  options: ReplicatorOptions = {},
): Promise<Background> {
  if (tool === "sluice" && options.syncInterval !== undefined) {
    const configPath = join(workDir, `sluice-${crypto.randomUUID()}.yml`);
    const url = dest.type === "file" ? `file://${dest.dir}` : undefined;
    if (!url) throw new Error("a sync interval is only supported with a directory replica");
    await Deno.writeTextFile(
      configPath,
      `dbs:\n  - path: ${JSON.stringify(dbPath)}\n    replica:\n      url: ${url}\n` +
        `      sync-interval: ${options.syncInterval}ms\n`,
    );
    return startSluice(["-c", configPath], S3_ENV);
  }
  if (tool === "sluice") {
    const url = dest.type === "file"
      ? `file://${dest.dir}`
      : `s3://${dest.bucket}/${dest.path}?endpoint=${
        encodeURIComponent(dest.endpoint)
      }&region=us-east-1&force-path-style=true`;
    return startSluice([dbPath, url], S3_ENV);
  }
  const configPath = join(workDir, `litestream-${crypto.randomUUID()}.yml`);
  await Deno.writeTextFile(
    configPath,
    litestreamConfig([{ dbPath, dest }], options.syncInterval),
  );
  return startLitestream(configPath);
}

/**
 * A Litestream v0.3 config listing each database with its one replica (defaults otherwise;
 * `syncInterval` in ms sets each replica's `sync-interval`).
 */
export function litestreamConfig(
  dbs: { dbPath: string; dest: Destination }[],
  syncInterval?: number,
): string {
  const lines = ["dbs:"];
  for (const { dbPath, dest } of dbs) {
    lines.push(`  - path: ${JSON.stringify(dbPath)}`, "    replicas:");
    if (dest.type === "file") {
      lines.push("      - type: file", `        path: ${JSON.stringify(dest.dir)}`);
      if (syncInterval !== undefined) lines.push(`        sync-interval: ${syncInterval}ms`);
    } else {
      lines.push(
        "      - type: s3",
        `        bucket: ${dest.bucket}`,
        `        path: ${dest.path}`,
        `        endpoint: ${dest.endpoint}`,
        "        region: us-east-1",
        "        force-path-style: true",
        "        access-key-id: test",
        "        secret-access-key: test",
      );
    }
  }
  return lines.join("\n") + "\n";
}

/** Creates a WAL-mode database with the bench writer's table (and closes it again). */
export function createBenchDatabase(path: string): void {
  const db = new DatabaseSync(path);
  db.exec("PRAGMA journal_mode = wal;");
  db.exec("CREATE TABLE IF NOT EXISTS bench (id INTEGER PRIMARY KEY, k INTEGER, payload BLOB)");
  db.close();
}

/** What one run of the bench writer did. */
export interface WriterRun {
  committed: number;
  firstK: number;
  seconds: number;
  /** Commit time of transaction `firstK + i` at index i (ms since the epoch). */
  times: Float64Array;
}

/** Options of {@linkcode runWriter}. */
export interface WriterOptions {
  db: string;
  /** Transactions per second; 0 = as fast as possible. */
  rate: number;
  seconds: number;
  payloadBytes: number;
  firstK: number;
}

/** Runs scripts/bench/_writer.ts to completion. @throws Error with its stderr on failure. */
export async function runWriter(options: WriterOptions): Promise<WriterRun> {
  const timesPath = await Deno.makeTempFile({ prefix: "sluice-bench-times-" });
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        join(ROOT, "scripts", "bench", "_writer.ts"),
        "--db",
        options.db,
        "--rate",
        String(options.rate),
        "--seconds",
        String(options.seconds),
        "--payload-bytes",
        String(options.payloadBytes),
        "--first-k",
        String(options.firstK),
        "--times-out",
        timesPath,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new Error(`bench writer failed: ${new TextDecoder().decode(out.stderr)}`);
    }
    const summary = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!);
    const bytes = await Deno.readFile(timesPath);
    return { ...summary, times: new Float64Array(bytes.buffer, 0, bytes.length / 8) };
  } finally {
    await Deno.remove(timesPath).catch(() => {});
  }
}
