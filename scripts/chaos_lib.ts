/**
 * Shared parts of the chaos campaigns (scripts/chaos.ts, tests/chaos_test.ts): a seeded random
 * source, `sluice replicate` and writer processes that can be killed, and the check every
 * campaign ends with.
 *
 * The check ({@linkcode verifyReplica}) restores the replica with the CLI and proves two things:
 *
 * - the restore is a committed prefix of what the writer acknowledged: `integrity_check` is ok,
 *   the transaction numbers present are exactly 1..m, the rows equal the source database's rows
 *   of transactions 1..m byte for byte, and m is at most the last acknowledged transaction (+1
 *   for a commit whose acknowledgement was not written yet);
 * - nothing acknowledged before the last successful upload is missing: L0 files are written by
 *   one sync at a time, and a sync starts after the previous L0 file's header timestamp was
 *   taken, so every transaction acknowledged before the timestamp of the second-newest L0 file
 *   is in the newest one. m must be at least the newest such transaction.
 *
 * @module
 */

import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { digest, ROOT } from "../tests/_sluice.ts";
import { createReplicaClient, type ReplicaSpec } from "../src/replica/mod.ts";
import { decodeHeader, HEADER_SIZE } from "../src/ltx/mod.ts";
import { watchWriterStderr } from "./writer.ts";

/** mulberry32: a small seeded generator, so a campaign is reproducible from its seed. */
export class Rng {
  #state: number;
  /** Starts the sequence at `seed`. */
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }
  /** A float in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) | 0;
    let t = Math.imul(this.#state ^ (this.#state >>> 15), 1 | this.#state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  /** One element of `items`. */
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)];
  }
}

/** What a campaign reports. */
export interface CampaignResult {
  name: string;
  ok: boolean;
  /** Cycles, steps or runs done. */
  size: string;
  durationMs: number;
  /** One line per notable event (checks passed, faults seen, skips with their reason). */
  notes: string[];
  /** The failure, when not ok. */
  error?: string;
}

/** Progress output of a campaign. */
export type Log = (message: string) => void;

/** Runs `body`, timing it and turning a throw into a failed result. */
export async function campaign(
  name: string,
  log: Log,
  body: (notes: string[]) => Promise<string>,
): Promise<CampaignResult> {
  const started = performance.now();
  const notes: string[] = [];
  log(`[${name}] start`);
  try {
    const size = await body(notes);
    const durationMs = Math.round(performance.now() - started);
    log(`[${name}] ok: ${size} in ${(durationMs / 1000).toFixed(1)} s`);
    return { name, ok: true, size, durationMs, notes };
  } catch (err) {
    const durationMs = Math.round(performance.now() - started);
    const error = err instanceof Error ? (err.stack ?? err.message) : String(err);
    log(`[${name}] FAILED after ${(durationMs / 1000).toFixed(1)} s: ${error}`);
    return { name, ok: false, size: "-", durationMs, notes, error };
  }
}

/** Milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A `sluice` process started by a campaign. */
export interface SluiceProcess {
  readonly pid: number;
  /** Resolves when the process exits. */
  readonly status: Promise<Deno.CommandStatus>;
  /** stderr so far. */
  stderr(): string;
  /** Sends `signal` (if still running) and waits for the exit. */
  stop(signal?: Deno.Signal): Promise<{ code: number; signal: string | null; stderr: string }>;
}

/** Starts `sluice <args>` from source, with extra environment variables. */
export function spawnSluice(args: string[], env: Record<string, string> = {}): SluiceProcess {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "main.ts"), ...args],
    env,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const chunks: string[] = [];
  const decoder = new TextDecoder();
  const reading = (async () => {
    for await (const chunk of child.stderr) chunks.push(decoder.decode(chunk, { stream: true }));
  })().catch(() => {});
  const status = child.status;
  const tracer = traceDescriptors(child.pid);
  return {
    pid: child.pid,
    status,
    stderr: () => chunks.join(""),
    async stop(signal: Deno.Signal = "SIGTERM") {
      try {
        child.kill(signal);
      } catch { /* already exited */ }
      const s = await status;
      await tracer?.status;
      await reading;
      return { code: s.code, signal: s.signal, stderr: chunks.join("") };
    },
  };
}

/**
 * With `SLUICE_CHAOS_STRACE=DIR`, attaches `strace -f` to a sluice process for the calls that
 * open, duplicate and close descriptors (`DIR/strace-<pid>.txt`): the record to check that no
 * descriptor of a database file is closed while its SQLite connections hold locks. Attached
 * after the spawn, so the first milliseconds of the process are not in it.
 */
function traceDescriptors(pid: number): Deno.ChildProcess | undefined {
  const dir = Deno.env.get("SLUICE_CHAOS_STRACE");
  if (!dir) return undefined;
  return new Deno.Command("strace", {
    args: [
      "-f",
      "--seccomp-bpf",
      "-tt",
      "-e",
      "trace=openat,close,dup,dup2,dup3,fcntl,flock",
      "-o",
      join(dir, `strace-${pid}.txt`),
      "-p",
      String(pid),
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
}

/** Runs `sluice <args>` to completion. */
export async function runSluice(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "main.ts"), ...args],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** A scripts/writer.ts process running until stopped. */
export interface BackgroundWriter {
  /** SIGTERM (the transaction in progress is finished), then its summary. */
  stop(): Promise<{ committed: number; lastId: number; busyErrors: number }>;
  /** Resolves with the summary when the writer ends by itself. */
  readonly done: Promise<{ committed: number; lastId: number; busyErrors: number }>;
}

/**
 * Starts scripts/writer.ts with `args` (add `--ack-file F --ack-times` for the checks). `stop`
 * waits for the writer's ready line before its SIGTERM: one sent while Deno is still loading
 * the writer kills it without a summary (exit 143), which is no failure of the writer.
 */
export function startWriter(args: string[]): BackgroundWriter {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "scripts", "writer.ts"), ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = watchWriterStderr(child.stderr);
  const stdout = new Response(child.stdout).text();
  const done = (async () => {
    const status = await child.status;
    await stderr.closed;
    if (!status.success) {
      throw new Error(`writer failed (${status.code}): ${stderr.text().trim()}`);
    }
    const lines = (await stdout).trim().split("\n");
    return JSON.parse(lines[lines.length - 1]);
  })();
  done.catch(() => {}); // reported by stop() or by whoever awaits done
  return {
    done,
    async stop() {
      await Promise.race([stderr.ready, child.status]);
      try {
        child.kill("SIGTERM");
      } catch { /* already exited */ }
      return await done;
    },
  };
}

/** One acknowledged transaction: its number and when the writer acknowledged it (ms). */
export interface Ack {
  n: number;
  at: number;
}

/** The acknowledgements in `path` (`<n> <ms>` lines; a torn last line is ignored). */
export async function readAcks(path: string): Promise<Ack[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return [];
    throw err;
  }
  const acks: Ack[] = [];
  for (const line of text.split("\n")) {
    const m = /^(\d+) (\d+)$/.exec(line);
    if (m) acks.push({ n: Number(m[1]), at: Number(m[2]) });
  }
  return acks;
}

/** The acknowledgements of every file in `paths`, in no particular order. */
export async function readAllAcks(paths: string | readonly string[]): Promise<Ack[]> {
  const all: Ack[] = [];
  for (const path of typeof paths === "string" ? [paths] : paths) all.push(...await readAcks(path));
  return all;
}

/** Header timestamps of the replica's L0 files, ordered by TXID (only the newest `count`). */
export async function l0Timestamps(
  spec: ReplicaSpec,
  count = 2,
): Promise<{ maxTXID: number; timestamp: number }[]> {
  const client = createReplicaClient(spec);
  try {
    const files = [];
    for await (const f of client.ltxFiles(0)) files.push(f);
    files.sort((a, b) => a.maxTXID - b.maxTXID);
    const out = [];
    for (const file of files.slice(-count)) {
      const stream = await client.openLTXFile(file, { length: HEADER_SIZE });
      const bytes = new Uint8Array(await new Response(stream).arrayBuffer());
      out.push({ maxTXID: file.maxTXID, timestamp: decodeHeader(bytes).timestamp });
    }
    return out;
  } finally {
    await client.close();
  }
}

/**
 * SHA-256 of the rows of `t` with `n <= maxN`, in id order, hashed exactly as
 * tests/_sluice.ts `digest()` hashes a whole table (so the two compare).
 */
export async function digestUpTo(path: string, maxN: number): Promise<string> {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    const encoder = new TextEncoder();
    const parts: Uint8Array[] = [];
    let size = 0;
    const rows = db.prepare("SELECT id, n, payload FROM t WHERE n <= ? ORDER BY id").iterate(maxN);
    for (const row of rows) {
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
    return [...hash].map((b) => b.toString(16).padStart(2, "0")).join("");
  } finally {
    db.close();
  }
}

/** A restore did not hold what the writer acknowledged. */
export class VerificationError extends Error {
  /** Builds an error naming the check (`label`) that failed. */
  constructor(label: string, message: string) {
    super(`${label}: ${message}`);
    this.name = "VerificationError";
  }
}

/** Options of {@linkcode verifyReplica}. */
export interface VerifyOptions {
  /** What is being checked, for messages. */
  label: string;
  /** The source database (read-only here). */
  dbPath: string;
  /** Replica URL given to `sluice restore`. */
  replicaUrl: string;
  /** The same replica for in-process listing. */
  replicaSpec: ReplicaSpec;
  /**
   * The writers' ack files (scripts/writer.ts `--ack-file` with `--ack-times`, or the
   * short-lived writers'), one per concurrent writer: all share one sequence of transaction
   * numbers, and each may have one commit not yet acknowledged.
   */
  ackFile: string | readonly string[];
  /** A directory for the restored file (removed afterwards). */
  workDir: string;
  /** Environment of the restore (S3 credentials). */
  env?: Record<string, string>;
  /** More arguments for `sluice restore` (e.g. `--age-identity FILE`). */
  restoreArgs?: string[];
  /**
   * The writer has stopped and sluice shut down cleanly: the restore must hold every
   * acknowledged transaction and equal the source database.
   */
  final?: boolean;
}

/** What one check found. */
export interface VerifyResult {
  /** Transactions 1..m are in the restore. */
  m: number;
  /** The check's lower bound for m. */
  required: number;
  /** The newest acknowledged transaction when checked. */
  acked: number;
}

let restoreCount = 0;

/**
 * Restores the replica (which must not change meanwhile: sluice stopped) and checks it against
 * the writer's acknowledgements and the source database.
 * @throws {VerificationError} naming the violated property.
 */
export async function verifyReplica(options: VerifyOptions): Promise<VerifyResult> {
  const { label } = options;
  const newest = await l0Timestamps(options.replicaSpec, 2);
  const out = join(options.workDir, `verify-${++restoreCount}.db`);
  const restored = await runSluice(
    [
      "restore",
      "-o",
      out,
      "--integrity-check",
      "none",
      ...(options.restoreArgs ?? []),
      options.replicaUrl,
    ],
    options.env,
  );
  let m = 0;
  try {
    if (restored.code !== 0) {
      // Killed before the first upload: an empty replica is a valid (empty) prefix.
      if (/no backup/i.test(restored.stderr) && await replicaPosition(options.replicaSpec) === 0) {
        const acks = await readAllAcks(options.ackFile);
        return { m: 0, required: 0, acked: acks.length ? Math.max(...acks.map((a) => a.n)) : 0 };
      }
      throw new VerificationError(label, `restore failed (${restored.code}): ${restored.stderr}`);
    }
    const d = await digest(out);
    if (d.integrity !== "ok") throw new VerificationError(label, `integrity: ${d.integrity}`);
    if (d.distinctN !== d.maxN) {
      throw new VerificationError(
        label,
        `not a prefix: ${d.distinctN} distinct transactions but the newest is ${d.maxN}`,
      );
    }
    m = d.maxN;
    const acks = await readAllAcks(options.ackFile); // read after the restore: an upper bound
    const acked = acks.length ? Math.max(...acks.map((a) => a.n)) : 0;
    const inFlight = typeof options.ackFile === "string" ? 1 : options.ackFile.length;
    if (m > acked + inFlight) {
      throw new VerificationError(label, `restore holds transaction ${m}, only ${acked} acked`);
    }
    const source = await digestUpTo(options.dbPath, m);
    if (source !== d.sha256) {
      throw new VerificationError(label, `rows of transactions 1..${m} differ from the source's`);
    }
    let required = 0;
    if (newest.length === 2) {
      const before = newest[0].timestamp;
      for (const ack of acks) if (ack.at < before) required = Math.max(required, ack.n);
    }
    if (m < required) {
      throw new VerificationError(
        label,
        `transaction ${required} was acknowledged before the L0 file ending at TXID ` +
          `${newest[0].maxTXID} was synced, but the restore stops at ${m}`,
      );
    }
    if (options.final) {
      if (m !== acked) {
        throw new VerificationError(label, `final restore stops at ${m}, ${acked} acknowledged`);
      }
      const whole = await digest(options.dbPath);
      if (whole.sha256 !== d.sha256) {
        throw new VerificationError(label, "final restore differs from the source database");
      }
    }
    return { m, required, acked };
  } finally {
    for (const suffix of ["", "-wal", "-shm", ".tmp"]) {
      await Deno.remove(out + suffix).catch(() => {});
    }
  }
}

/** Writes a sluice config file. `body` is YAML. */
export async function writeConfig(path: string, body: string): Promise<void> {
  await Deno.writeTextFile(path, body.trimStart());
}

/** Polls `fn` until true; throws `what` after `timeoutMs`. */
export async function until(
  what: string,
  fn: () => boolean | Promise<boolean>,
  timeoutMs = 20_000,
  everyMs = 50,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await sleep(everyMs);
  }
}

/** The newest TXID of the replica (any level). */
export async function replicaPosition(spec: ReplicaSpec): Promise<number> {
  const client = createReplicaClient(spec);
  try {
    let max = 0;
    for (const level of [0, 1, 2, 3, 9]) {
      for await (const f of client.ltxFiles(level)) max = Math.max(max, f.maxTXID);
    }
    return max;
  } finally {
    await client.close();
  }
}

/**
 * PIDs of `sluice __watch` processes watching something under `dir`. Call it when no sluice
 * of the campaign runs: any left is a watcher that outlived its SIGKILLed parent. Linux only.
 */
export async function leftoverWatchers(dir: string): Promise<number[]> {
  const found: number[] = [];
  try {
    for await (const entry of Deno.readDir("/proc")) {
      if (!/^\d+$/.test(entry.name)) continue;
      try {
        const args = (await Deno.readTextFile(`/proc/${entry.name}/cmdline`)).split("\0");
        if (args.includes("__watch") && args.some((a) => a.startsWith(dir))) {
          found.push(Number(entry.name));
        }
      } catch { /* gone meanwhile */ }
    }
  } catch { /* no /proc */ }
  return found;
}

/** First byte of SQLite's SHARED lock range on a database file (unix VFS: PENDING_BYTE + 2). */
export const SQLITE_SHARED_FIRST = 0x40000000 + 2;
/** Last byte of that range (SHARED_SIZE is 510 bytes). */
export const SQLITE_SHARED_LAST = SQLITE_SHARED_FIRST + 510 - 1;

/**
 * Whether process `pid` holds a POSIX lock covering SQLite's SHARED range of `dbPath`, read
 * from `/proc/locks` (lines `N: POSIX ADVISORY READ <pid> <maj>:<min>:<inode> <start> <end>`).
 * Every open WAL-mode connection holds it; without it, the application's last connection to
 * close deletes the WAL under the replicator (issue 20). Linux only.
 */
export async function holdsSharedLock(pid: number, dbPath: string): Promise<boolean> {
  const info = await Deno.stat(dbPath);
  const dev = BigInt(info.dev);
  // glibc's gnu_dev_major/minor.
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  const file = `${major.toString(16).padStart(2, "0")}:${
    minor.toString(16).padStart(2, "0")
  }:${info.ino}`;
  for (const line of (await Deno.readTextFile("/proc/locks")).split("\n")) {
    const m = /^\d+:\s+POSIX\s+\S+\s+(READ|WRITE)\s+(\d+)\s+(\S+)\s+(\d+)\s+(\d+|EOF)\s*$/.exec(
      line,
    );
    if (!m || Number(m[2]) !== pid || m[3] !== file) continue;
    const end = m[5] === "EOF" ? Infinity : Number(m[5]);
    if (Number(m[4]) <= SQLITE_SHARED_FIRST && end >= SQLITE_SHARED_LAST) return true;
  }
  return false;
}

/**
 * The files of `dbPath` (`-wal`, `-shm`, the database) that process `pid` still has open
 * although they were deleted: a WAL deleted under a replicator shows up here. Linux only.
 */
export async function deletedFilesHeld(pid: number, dbPath: string): Promise<string[]> {
  const found: string[] = [];
  const names = [dbPath, `${dbPath}-wal`, `${dbPath}-shm`].map((p) => `${p} (deleted)`);
  for await (const entry of Deno.readDir(`/proc/${pid}/fd`)) {
    try {
      const target = await Deno.readLink(`/proc/${pid}/fd/${entry.name}`);
      if (names.includes(target)) found.push(target);
    } catch { /* closed meanwhile */ }
  }
  return found;
}
