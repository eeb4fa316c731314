/**
 * The Litestream oracle for tests (FORMAT.md §6.3): restores a file replica with Go Litestream
 * v0.5.17 (the `litestream-vfs-linux-amd64` SQLite extension) in a subprocess running
 * `scripts/oracle_restore.ts`. If it restores what sluice wrote byte-identically, sluice's
 * replicas are compatible with the real thing.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { resolve } from "node:path";
import { litestreamVFSPath, oracleEnvironment } from "../scripts/oracle_restore.ts";

export { litestreamVFSPath };

const SCRIPT = fileURLToPath(new URL("../scripts/oracle_restore.ts", import.meta.url));
const PROJECT_ROOT = fileURLToPath(new URL("..", import.meta.url));

/** Options of {@linkcode litestreamRestore}. */
export interface LitestreamRestoreOptions {
  /** SQL run through the VFS page index before hydration. Default: count sqlite_master rows. */
  query?: string;
  /** Give up when hydration has not finished after this many ms. Default 60000. */
  timeoutMs?: number;
}

/** What the oracle restored. */
export interface LitestreamRestoreResult {
  /** Rows of `query` (BigInts as numbers, blobs as hex strings). */
  rows?: unknown;
  /** TXID of the restored state, as Litestream reported it. */
  txid?: number;
}

/** Litestream refused or failed to restore the replica. `log` holds its reasons. */
export class OracleError extends Error {
  /** The oracle's stderr: the reason and the relevant Litestream log lines. */
  readonly log: string;
  /** Exit code of the oracle process: 1 restore failed, 2 usage error. */
  readonly exitCode: number;

  constructor(message: string, log: string, exitCode: number) {
    super(`${message}\n${log}`);
    this.name = "OracleError";
    this.log = log;
    this.exitCode = exitCode;
  }
}

/** Whether the oracle can run here: Linux x86-64 with the extension installed. */
export function oracleAvailable(): boolean {
  return Deno.build.os === "linux" && Deno.build.arch === "x86_64" &&
    litestreamVFSPath() !== undefined;
}

/**
 * Restores the file replica in `replicaDir` (a directory holding `ltx/<level>/…`) into
 * `outPath` (which must not exist) with Litestream's own restore code.
 *
 * @throws OracleError with Litestream's log when it fails (e.g. a checksum it rejects).
 */
export async function litestreamRestore(
  replicaDir: string,
  outPath: string,
  options: LitestreamRestoreOptions = {},
): Promise<LitestreamRestoreResult> {
  const replica = resolve(replicaDir);
  const out = resolve(outPath);
  const logFile = await Deno.makeTempFile({ prefix: "litestream-oracle-", suffix: ".log" });
  try {
    const args = ["run", "-A", "--quiet", SCRIPT, "--replica", replica, "--out", out];
    if (options.query !== undefined) args.push("--query", options.query);
    if (options.timeoutMs !== undefined) args.push("--timeout-ms", String(options.timeoutMs));
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args,
      cwd: PROJECT_ROOT,
      // Set before the process starts: the extension reads it when it is loaded.
      env: oracleEnvironment(replica, out, logFile),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const errors = new TextDecoder().decode(stderr);
    if (code !== 0) {
      throw new OracleError(`Litestream could not restore ${replica}`, errors, code);
    }
    const lines = new TextDecoder().decode(stdout).trim().split("\n");
    const result = JSON.parse(lines[lines.length - 1]) as LitestreamRestoreResult & { ok: true };
    return { rows: result.rows, txid: result.txid };
  } finally {
    await Deno.remove(logFile).catch(() => {});
  }
}
