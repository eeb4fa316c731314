/**
 * Load generator: a separate process that writes to a SQLite database through `node:sqlite`,
 * like an application would, for tests and benchmarks.
 *
 *   deno run -A scripts/writer.ts --db PATH [--rate N] [--duration S | --count N]
 *     [--row-size B] [--big-every K] [--big-pages P]
 *     [--checkpoint-mode none|passive|full|restart|truncate|random] [--checkpoint-every K]
 *     [--busy-timeout MS] [--seed N] [--ack-file PATH] [--ack-times]
 *
 * Creates the database if missing (WAL mode, table `t(id INTEGER PRIMARY KEY, n INTEGER,
 * payload BLOB)`). Transaction number k (the newest row's `n` + 1, read under the write lock, so
 * several writers on one database share one sequence) inserts 1–4 rows with `n = k` and random
 * payloads of about `--row-size` bytes; transaction numbers divisible by `--big-every` write
 * more than `--big-pages` pages. So the `n` values in any consistent copy of the database are
 * exactly 1..m for some m.
 *
 * After each commit the transaction number is appended to `--ack-file` (one per line, written
 * before the next transaction starts), so a test can check that a restore holds every
 * acknowledged transaction. With `--ack-times` each line also carries the time of the
 * acknowledgement, `<k> <ms since the epoch>`, taken after the commit returned (the chaos
 * campaigns compare it with the replica's file timestamps). Runs until `--count` transactions, `--duration` seconds, or
 * SIGTERM/SIGINT (the transaction in progress is finished first), then prints one JSON line:
 * `{"committed":N,"busyErrors":N,"lastId":N,"checkpoints":N,"checkpointsBusy":N}`. It prints
 * {@linkcode WRITER_READY} on stderr once SIGTERM stops it cleanly; a SIGTERM before that line
 * kills it (with nothing committed), as it does any Deno program still starting.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import { parseArgs } from "node:util";
import { isBusyError } from "../src/sqlite/mod.ts";

/** The stderr line that says SIGTERM now ends the writer cleanly, with its summary. */
export const WRITER_READY = "writer: ready";

/** A writer process's stderr, read as it comes: for harnesses that stop writers. */
export interface WriterStderr {
  /** Resolves once the writer printed {@linkcode WRITER_READY} (never, if it dies first). */
  readonly ready: Promise<void>;
  /** Resolves when stderr ends (the writer exited). */
  readonly closed: Promise<void>;
  /** Everything read so far, without the ready line. */
  text(): string;
}

/**
 * Reads a writer's stderr as it comes, so that a harness can wait for {@linkcode WRITER_READY}
 * before its SIGTERM and still report the writer's error messages.
 */
export function watchWriterStderr(stderr: ReadableStream<Uint8Array>): WriterStderr {
  let text = "";
  let onReady = () => {};
  const ready = new Promise<void>((resolve) => onReady = resolve);
  const closed = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of stderr) {
      text += decoder.decode(chunk, { stream: true });
      if (text.includes(WRITER_READY)) onReady();
    }
  })();
  return { ready, closed, text: () => text.replace(`${WRITER_READY}\n`, "") };
}

const CHECKPOINT_MODES = ["none", "passive", "full", "restart", "truncate", "random"] as const;
type CheckpointMode = (typeof CHECKPOINT_MODES)[number];

/** Parsed command line. */
export interface WriterOptions {
  db: string;
  /** Transactions per second; 0 = as fast as possible. */
  rate: number;
  /** Stop after this many seconds (0 = no limit). */
  duration: number;
  /** Stop after this many transactions (0 = no limit). */
  count: number;
  rowSize: number;
  /** Every K-th transaction is large (0 = never). */
  bigEvery: number;
  /** A large transaction writes more than this many pages. */
  bigPages: number;
  checkpointMode: CheckpointMode;
  /** Checkpoint after every K-th transaction (with a mode other than none). */
  checkpointEvery: number;
  busyTimeout: number;
  seed: number;
  ackFile?: string;
  /** Append the acknowledgement time to each ack line (`<k> <ms>`). */
  ackTimes?: boolean;
}

/** @throws Error naming the bad argument. */
export function parseWriterArgs(args: string[]): WriterOptions {
  const { values } = parseArgs({
    args,
    options: {
      db: { type: "string" },
      rate: { type: "string", default: "0" },
      duration: { type: "string", default: "0" },
      count: { type: "string", default: "0" },
      "row-size": { type: "string", default: "100" },
      "big-every": { type: "string", default: "0" },
      "big-pages": { type: "string", default: "1000" },
      "checkpoint-mode": { type: "string", default: "none" },
      "checkpoint-every": { type: "string", default: "100" },
      "busy-timeout": { type: "string", default: "5000" },
      seed: { type: "string", default: "1" },
      "ack-file": { type: "string" },
      "ack-times": { type: "boolean", default: false },
    },
  });
  if (!values.db) throw new Error("--db PATH is required");
  const number = (name: keyof typeof values) => {
    const n = Number(values[name]);
    if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} must be a number >= 0`);
    return n;
  };
  const mode = values["checkpoint-mode"] as CheckpointMode;
  if (!CHECKPOINT_MODES.includes(mode)) {
    throw new Error(`--checkpoint-mode must be one of ${CHECKPOINT_MODES.join(", ")}`);
  }
  return {
    db: values.db,
    rate: number("rate"),
    duration: number("duration"),
    count: number("count"),
    rowSize: number("row-size"),
    bigEvery: number("big-every"),
    bigPages: number("big-pages"),
    checkpointMode: mode,
    checkpointEvery: Math.max(1, number("checkpoint-every")),
    busyTimeout: number("busy-timeout"),
    seed: number("seed"),
    ackFile: values["ack-file"],
    ackTimes: values["ack-times"] ?? false,
  };
}

/** mulberry32: small, fast and good enough to make runs reproducible from --seed. */
function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** Runs the writer until its limit or a signal; returns the summary it prints. */
export async function runWriter(options: WriterOptions) {
  const random = prng(options.seed);
  const payload = (size: number) => {
    // Random bytes: incompressible, so LZ4 and page counts behave like real data at worst.
    const words = new Uint32Array(Math.ceil(size / 4));
    for (let i = 0; i < words.length; i++) words[i] = random();
    return new Uint8Array(words.buffer, 0, size);
  };

  const db = new DatabaseSync(options.db);
  db.exec(`PRAGMA busy_timeout = ${options.busyTimeout}`);
  const mode = (db.prepare("PRAGMA journal_mode = wal").get() as { journal_mode: string })
    .journal_mode;
  if (mode !== "wal") throw new Error(`${options.db}: could not switch to WAL (got ${mode})`);
  db.exec("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, n INTEGER, payload BLOB)");
  const pageSize = (db.prepare("PRAGMA page_size").get() as { page_size: number }).page_size;
  const insert = db.prepare("INSERT INTO t (n, payload) VALUES (?, ?)");
  // n grows with id, so the newest row holds the last transaction number (an index lookup).
  const lastN = db.prepare("SELECT n FROM t ORDER BY id DESC LIMIT 1");
  const lastId = Number((lastN.get() as { n: number | bigint } | undefined)?.n ?? 0);
  const ack = options.ackFile
    ? await Deno.open(options.ackFile, { append: true, create: true })
    : undefined;

  let stopping = false;
  const stop = () => stopping = true;
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
  // Until now a SIGTERM kills the process (Deno's default) before its summary: a harness that
  // stops writers waits for this line first (see chaos_lib.ts's startWriter).
  console.error(WRITER_READY);

  const summary = { committed: 0, busyErrors: 0, lastId, checkpoints: 0, checkpointsBusy: 0 };
  const started = performance.now();
  let lastYield = started;
  try {
    while (!stopping) {
      if (options.count > 0 && summary.committed >= options.count) break;
      const elapsed = performance.now() - started;
      if (options.duration > 0 && elapsed >= options.duration * 1000) break;
      if (options.rate > 0) {
        const due = (summary.committed / options.rate) * 1000;
        if (due > elapsed) await sleep(due - elapsed);
        if (stopping) break;
      } else if (performance.now() - lastYield > 20) {
        await sleep(0); // let signal handlers run
        lastYield = performance.now();
      }

      let id: number;
      try {
        db.exec("BEGIN IMMEDIATE");
        // Read under the write lock, so concurrent writers never reuse a number.
        id = Number((lastN.get() as { n: number | bigint } | undefined)?.n ?? 0) + 1;
        const big = options.bigEvery > 0 && id % options.bigEvery === 0;
        // A big transaction: 64 KiB blobs (overflow pages) adding up to more than bigPages pages.
        const rows = big
          ? Math.ceil(((options.bigPages + 1) * pageSize) / 65536) + 1
          : 1 + (random() % 4);
        const rowSize = big ? 65536 : Math.max(1, options.rowSize + (random() % 32) - 16);
        for (let i = 0; i < rows; i++) insert.run(id, payload(rowSize));
        db.exec("COMMIT");
      } catch (err) {
        if (db.isTransaction) db.exec("ROLLBACK");
        if (!isBusyError(err)) throw err;
        summary.busyErrors++; // not acknowledged: the transaction is tried again
        await sleep(1 + (random() % 5));
        continue;
      }
      summary.lastId = id;
      summary.committed++;
      if (ack) {
        const line = options.ackTimes ? `${id} ${Date.now()}\n` : `${id}\n`;
        await writeAll(ack, new TextEncoder().encode(line));
      }

      if (options.checkpointMode !== "none" && id % options.checkpointEvery === 0) {
        const modes = ["PASSIVE", "FULL", "RESTART", "TRUNCATE"];
        const chosen = options.checkpointMode === "random"
          ? modes[random() % modes.length]
          : options.checkpointMode.toUpperCase();
        try {
          const result = db.prepare(`PRAGMA wal_checkpoint(${chosen})`).get() as { busy: number };
          summary.checkpoints++;
          if (result.busy) summary.checkpointsBusy++;
        } catch (err) {
          if (!isBusyError(err)) throw err;
          summary.busyErrors++;
        }
      }
    }
  } finally {
    Deno.removeSignalListener("SIGTERM", stop);
    Deno.removeSignalListener("SIGINT", stop);
    ack?.close();
    db.close();
  }
  return summary;
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array) {
  for (let written = 0; written < bytes.length;) {
    written += await file.write(bytes.subarray(written));
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

if (import.meta.main) {
  let options: WriterOptions;
  try {
    options = parseWriterArgs(Deno.args);
  } catch (err) {
    console.error(`writer: ${(err as Error).message}`);
    Deno.exit(2);
  }
  try {
    console.log(JSON.stringify(await runWriter(options)));
  } catch (err) {
    console.error(`writer: ${options.db}: ${(err as Error).message}`);
    Deno.exit(1);
  }
}
