/**
 * The Litestream oracle (FORMAT.md §6.3): restores a file replica with Go Litestream v0.5.17's own
 * code, built as the SQLite extension `litestream-vfs-linux-amd64`, loaded into `node:sqlite`.
 *
 *   deno run -A scripts/oracle_restore.ts --replica DIR --out PATH [--query SQL] [--timeout-ms N]
 *
 * It opens the replica through the `litestream` VFS, runs `--query` through the VFS page index
 * (random-access page reads from the LTX files), and lets the VFS hydrate the whole database
 * into `--out` (CalcRestorePlan → ltx.Compactor → Decoder.DecodeDatabaseTo, the code path of
 * `litestream restore`, which verifies every file checksum). Hydration runs in a goroutine;
 * its end is read from the extension's log file ("hydration complete" / "hydration failed").
 *
 * Prints one JSON line `{"ok":true,"txid":N,"rows":[...]}` and exits 0 on success. On failure
 * prints the reason and the Litestream log to stderr and exits 1 (2 for usage errors).
 *
 * The extension reads its configuration from the environment when it is loaded, so each
 * restore needs its own process. The `.so` comes from npm through deno.json
 * (`node_modules/litestream-vfs-linux-amd64/litestream-vfs.so`); SLUICE_LITESTREAM_VFS
 * overrides its path.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import { parseArgs } from "node:util";
import { resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
// Importing the package's manifest puts the npm package in the module graph, so the first
// `deno run`/`deno test` that loads this file installs it (nodeModulesDir "auto").
import vfsPackage from "litestream-vfs-linux-amd64/package.json" with { type: "json" };

const USAGE = "usage: oracle_restore.ts --replica DIR --out PATH [--query SQL] [--timeout-ms N]";
const COMPLETE = /msg="hydration complete".*txid=([0-9a-f]{16})/;
const FAILED = /^.*msg="hydration (?:failed|catch-up failed|initialization failed)[^"]*".*$/m;

/** Version of the Litestream VFS package (Litestream's own version), e.g. "0.5.17". */
export const LITESTREAM_VFS_VERSION: string = vfsPackage.version;

/** Path of the Litestream VFS extension, or undefined when it is not installed. */
export function litestreamVFSPath(): string | undefined {
  const fromEnv = Deno.env.get("SLUICE_LITESTREAM_VFS");
  const path = fromEnv ??
    fileURLToPath(import.meta.resolve("litestream-vfs-linux-amd64/litestream-vfs.so"));
  try {
    return Deno.statSync(path).isFile ? path : undefined;
  } catch {
    return undefined;
  }
}

class UsageError extends Error {}

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      replica: { type: "string" },
      out: { type: "string" },
      query: { type: "string", default: "SELECT count(*) AS n FROM sqlite_master" },
      "timeout-ms": { type: "string", default: "60000" },
    },
  });
  if (!values.replica || !values.out) throw new UsageError(USAGE);
  const timeoutMs = Number(values["timeout-ms"]);
  if (!(timeoutMs > 0)) throw new UsageError(`--timeout-ms must be a positive number\n${USAGE}`);
  const replica = resolve(values.replica);
  const out = resolve(values.out);
  if (!(await Deno.stat(replica).then((s) => s.isDirectory, () => false))) {
    throw new UsageError(`replica directory ${replica} does not exist`);
  }
  if (await Deno.stat(out).then(() => true, () => false)) {
    throw new UsageError(`${out} already exists; the oracle restores only into a new file`);
  }
  const extension = litestreamVFSPath();
  if (!extension) {
    throw new UsageError(
      "litestream-vfs.so not found: run `deno install` (deno.json imports " +
        "litestream-vfs-linux-amd64) or set SLUICE_LITESTREAM_VFS to its path",
    );
  }

  // Go reads the environment from the process's initial environment block, so setting it
  // here would be too late: run this script again as a child with the environment it needs.
  const env = Deno.env.toObject();
  const wanted = oracleEnvironment(replica, out, env.LITESTREAM_LOG_FILE ?? "");
  if (
    !env.LITESTREAM_LOG_FILE ||
    Object.entries(wanted).some(([key, value]) => env[key] !== value)
  ) {
    return await runAsChild(args, replica, out);
  }
  const logPath = env.LITESTREAM_LOG_FILE;

  let vfsDB: DatabaseSync | undefined;
  const fail = async (reason: string) => {
    vfsDB?.close();
    vfsDB = undefined;
    const log = await Deno.readTextFile(logPath).catch(() => "");
    console.error(`oracle: ${reason}\n--- Litestream log ---\n${tail(log)}`);
    return 1;
  };
  try {
    const loader = new DatabaseSync(":memory:", { allowExtension: true });
    loader.loadExtension(extension);
    let rows: unknown;
    try {
      vfsDB = new DatabaseSync("file:oracle.db?vfs=litestream", { readOnly: true });
      rows = vfsDB.prepare(values.query).all();
    } catch (err) {
      return await fail(`query through the VFS failed: ${(err as Error).message}`);
    }

    const deadline = Date.now() + timeoutMs;
    let txid: number | undefined;
    for (;;) {
      const log = await Deno.readTextFile(logPath);
      const done = COMPLETE.exec(log);
      if (done) {
        txid = parseInt(done[1], 16);
        break;
      }
      const failed = FAILED.exec(log);
      if (failed) return await fail(`hydration failed: ${failed[0].replace(/^time=\S+ /, "")}`);
      if (Date.now() > deadline) return await fail(`hydration did not finish in ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
    // Closing syncs the hydrated file and writes its ".meta" companion; drop the latter.
    vfsDB.close();
    vfsDB = undefined;
    await Deno.remove(`${out}.meta`).catch(() => {});
    console.log(JSON.stringify({ ok: true, txid, rows }, jsonValue));
    return 0;
  } finally {
    vfsDB?.close();
  }
}

/**
 * The environment the extension needs, read when it is loaded: the replica, hydration into
 * `out`, and DEBUG logs to `logFile` (the only place "hydration complete" shows).
 */
export function oracleEnvironment(
  replica: string,
  out: string,
  logFile: string,
): Record<string, string> {
  return {
    LITESTREAM_REPLICA_URL: pathToFileURL(replica).href,
    LITESTREAM_HYDRATION_ENABLED: "true",
    LITESTREAM_HYDRATION_PATH: out,
    LITESTREAM_LOG_LEVEL: "DEBUG",
    LITESTREAM_LOG_FILE: logFile,
  };
}

async function runAsChild(args: string[], replica: string, out: string): Promise<number> {
  const logFile = await Deno.makeTempFile({ prefix: "litestream-oracle-", suffix: ".log" });
  try {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", fileURLToPath(import.meta.url), ...args],
      env: oracleEnvironment(replica, out, logFile),
      stdin: "null",
      stdout: "inherit",
      stderr: "inherit",
    });
    return (await child.output()).code;
  } finally {
    await Deno.remove(logFile).catch(() => {});
  }
}

/** BigInts as numbers (or strings past 2^53), blobs as hex, so rows survive JSON. */
function jsonValue(_key: string, value: unknown): unknown {
  if (typeof value === "bigint") {
    return Number.isSafeInteger(Number(value)) ? Number(value) : value.toString();
  }
  if (value instanceof Uint8Array) {
    return Array.from(value, (b) => b.toString(16).padStart(2, "0")).join("");
  }
  return value;
}

/** The warnings and errors of the log, then its last lines (DEBUG lines are many). */
function tail(log: string, lines = 30): string {
  const all = log.trimEnd().split("\n");
  const problems = all.filter((line) => / level=(?:WARN|ERROR) /.test(line));
  const last = all.slice(-lines);
  return [...problems, `… last ${last.length} of ${all.length} lines:`, ...last].join("\n");
}

if (import.meta.main) {
  let code: number;
  try {
    code = await main(Deno.args);
  } catch (err) {
    console.error(`oracle: ${err instanceof Error ? err.message : err}`);
    code = err instanceof UsageError ? 2 : 1;
  }
  Deno.exit(code);
}
