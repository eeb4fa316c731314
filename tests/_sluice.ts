/**
 * Test support: run the real CLI and the real writer as subprocesses, and compare databases by
 * content.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** The project root. */
export const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** Output of a finished command. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `sluice <args>` from source and waits for it. */
export async function sluice(...args: string[]): Promise<RunResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "main.ts"), ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  const stderr = withoutDenoNotices(decoder.decode(out.stderr));
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr };
}

/**
 * stderr without the notice Deno itself prints when another process holds the project's
 * `node_modules` lock at start-up ("Blocking waiting for file lock on node_modules directory",
 * seen in CI with tests starting many processes at once): not sluice's output.
 */
function withoutDenoNotices(stderr: string): string {
  return stderr.split("\n").filter((line) => !line.includes("waiting for file lock on")).join(
    "\n",
  );
}

/** A `sluice replicate` running in the background. */
export interface Replicator {
  process: Deno.ChildProcess;
  /** Sends a signal and waits for the exit; resolves to the exit code and stderr. */
  stop(signal?: Deno.Signal): Promise<RunResult>;
}

/** Starts `sluice replicate <args>`; stderr is collected for failure messages. */
export function startReplicate(...args: string[]): Replicator {
  const process = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "main.ts"), "replicate", ...args],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = new Response(process.stdout).text();
  const stderr = new Response(process.stderr).text();
  return {
    process,
    async stop(signal: Deno.Signal = "SIGTERM") {
      try {
        process.kill(signal);
      } catch { /* already exited */ }
      const status = await process.status;
      return { code: status.code, stdout: await stdout, stderr: await stderr };
    },
  };
}

/** Writer summary printed by scripts/writer.ts. */
export interface WriterSummary {
  committed: number;
  busyErrors: number;
  lastId: number;
}

/** Runs scripts/writer.ts to completion. */
export async function runWriter(...args: string[]): Promise<WriterSummary> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "scripts", "writer.ts"), ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  if (!out.success) {
    throw new Error(`writer failed (${out.code}): ${decoder.decode(out.stderr)}`);
  }
  const lines = decoder.decode(out.stdout).trim().split("\n");
  return JSON.parse(lines[lines.length - 1]) as WriterSummary;
}

/** Creates an empty WAL-mode database with the writer's table. */
export function createDatabase(path: string, pageSize = 4096): void {
  const db = new DatabaseSync(path);
  db.exec(`PRAGMA page_size = ${pageSize}; PRAGMA journal_mode = wal;`);
  db.exec("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, n INTEGER, payload BLOB)");
  db.close();
}

/** Content of the writer's table, for equality checks, plus integrity. */
export interface Digest {
  rows: number;
  maxN: number;
  distinctN: number;
  sha256: string;
  integrity: string;
}

/**
 * The replica at `url` restored by the CLI into a fresh file under `dir` and digested (the file
 * is removed again); undefined when the restore fails, for a caller that waits for it to succeed.
 */
export async function restoredDigest(url: string, dir: string): Promise<Digest | undefined> {
  const out = join(dir, `restored-${crypto.randomUUID()}.db`);
  const result = await sluice("restore", "-o", out, url);
  const restored = result.code === 0 ? await digest(out) : undefined;
  await Deno.remove(out).catch(() => {});
  return restored;
}

/** Hashes every row of `t` in id order and runs `PRAGMA integrity_check`. */
export async function digest(path: string): Promise<Digest> {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    const integrity = (db.prepare("PRAGMA integrity_check").get() as { integrity_check: string })
      .integrity_check;
    const stats = db.prepare(
      "SELECT count(*) AS rows, coalesce(max(n), 0) AS maxN, count(DISTINCT n) AS distinctN FROM t",
    ).get() as { rows: number; maxN: number; distinctN: number };
    const parts: Uint8Array[] = [];
    let size = 0;
    const encoder = new TextEncoder();
    for (const row of db.prepare("SELECT id, n, payload FROM t ORDER BY id").iterate()) {
      const { id, n, payload } = row as { id: number; n: number; payload: Uint8Array | null };
      const head = encoder.encode(`${id}:${n}:${payload?.length ?? -1}:`);
      parts.push(head);
      size += head.length;
      if (payload) {
        parts.push(payload);
        size += payload.length;
      }
    }
    const all = new Uint8Array(size);
    let at = 0;
    for (const p of parts) {
      all.set(p, at);
      at += p.length;
    }
    const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", all));
    const sha256 = [...hash].map((b) => b.toString(16).padStart(2, "0")).join("");
    return { ...stats, sha256, integrity };
  } finally {
    db.close();
  }
}

/** Newest TXID at level 0 of a file replica (0 when empty). */
export async function replicaTXID(replicaDir: string): Promise<number> {
  let max = 0;
  try {
    for await (const entry of Deno.readDir(join(replicaDir, "ltx", "0"))) {
      const m = /^([0-9a-f]{16})-([0-9a-f]{16})\.ltx$/.exec(entry.name);
      if (m) max = Math.max(max, parseInt(m[2], 16));
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return max;
}

/** Polls `fn` until it returns true, or throws after `timeoutMs`. */
export async function waitFor(
  what: string,
  fn: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Restores a file replica with the CLI into `out`; throws with stderr on failure. */
export async function restoreTo(replicaDir: string, out: string, ...extra: string[]) {
  const result = await sluice("restore", "-o", out, ...extra, `file://${replicaDir}`);
  if (result.code !== 0) throw new Error(`restore failed (${result.code}): ${result.stderr}`);
  return result;
}

/** A TCP port free on 127.0.0.1 at this moment (for a config's `addr:`). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}
