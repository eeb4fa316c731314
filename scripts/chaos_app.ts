/**
 * An application that misbehaves the way real ones do, one step per run, for campaign (b):
 *
 *   deno run -A scripts/chaos_app.ts --db PATH --ack-file PATH --step STEP [--count N] [--seed N]
 *     [--then-ms MS]
 *
 * Steps (each also commits `--count` transactions in the writer's format: transaction k inserts
 * 1–4 rows of `t` with `n = k`, and appends `<k> <ms>` to the ack file after its commit):
 *
 * - `checkpoints`: a checkpoint of a random mode (PASSIVE/FULL/RESTART/TRUNCATE) every few
 *   transactions;
 * - `long-read`: a second connection holds a read transaction for over a second while the
 *   writes and RESTART/TRUNCATE checkpoints go on;
 * - `vacuum`: grows the file with a ballast table, drops it and VACUUMs (the file shrinks),
 *   then grows it again;
 * - `journal`: switches to `journal_mode=DELETE`, writes, and back to WAL; prints
 *   `"journal":"refused"` when the switch was refused (another connection, e.g. sluice, holds
 *   the database open in WAL mode);
 * - `replace`: copies the database (VACUUM INTO), TRUNCATE-checkpoints it, moves the copy over
 *   the file (a new inode), waits 1.5 s (sluice notices the new inode), then writes to it;
 * - `replace-now`: the same without the wait. Not in {@linkcode APP_STEPS}: with sluice's read
 *   transaction open, the TRUNCATE checkpoint cannot empty the WAL, and the reopened file is
 *   read through the old WAL: SQLite corrupts the application's own database (a documented
 *   SQLite hazard of replacing an open database; docs/RELIABILITY.md, F1). Run it with
 *   `--step replace-now` to see it.
 * - `delete-wal`: TRUNCATE-checkpoints, closes, deletes `-wal` and `-shm` (run it while sluice
 *   is stopped), then writes a new WAL generation.
 * - `reconnect`: closes its own connection; then short-lived writers of each kind installed
 *   (Python's sqlite3, the sqlite3 shell, node:sqlite; scripts/chaos_short_writers.ts) commit
 *   the step's transactions, each on a new connection, so every close may be the application's
 *   last (issue 20: without sluice's SHARED lock it deletes the WAL). Kinds not installed are
 *   listed in `"skipped"`.
 *
 * With `--then-ms`, the step's connection goes on committing (one transaction every 20 ms)
 * for that long before it closes. Prints one JSON line: `{"step":…,"committed":N,"lastN":N,"busy":N,…}`.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import { parseArgs } from "node:util";
import { isBusyError } from "../src/sqlite/mod.ts";
import { Rng } from "./chaos_lib.ts";
import { runShortWriter, WRITER_KINDS, writerKindMissing } from "./chaos_short_writers.ts";

/** The steps this script knows. */
export const APP_STEPS = [
  "checkpoints",
  "long-read",
  "vacuum",
  "journal",
  "replace",
  "delete-wal",
  "reconnect",
] as const;
/** One application behaviour (`replace-now` is opt-in: it corrupts the application's file). */
export type AppStep = (typeof APP_STEPS)[number] | "replace-now";

const CHECKPOINT_MODES = ["PASSIVE", "FULL", "RESTART", "TRUNCATE"] as const;

class App {
  db: DatabaseSync;
  #rng: Rng;
  #ack: Deno.FsFile;
  committed = 0;
  busy = 0;
  lastN = 0;
  notes: Record<string, unknown> = {};

  constructor(readonly path: string, ack: Deno.FsFile, rng: Rng) {
    this.#ack = ack;
    this.#rng = rng;
    this.db = App.open(path);
  }

  static open(path: string): DatabaseSync {
    const db = new DatabaseSync(path);
    db.exec("PRAGMA busy_timeout = 2000");
    const mode = (db.prepare("PRAGMA journal_mode = wal").get() as { journal_mode: string })
      .journal_mode;
    if (mode !== "wal") throw new Error(`${path}: could not switch to WAL (got ${mode})`);
    db.exec("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, n INTEGER, payload BLOB)");
    return db;
  }

  reopen(): void {
    this.db.close();
    this.db = App.open(this.path);
  }

  /** Commits one transaction of the writer's shape; retried on SQLITE_BUSY. */
  async write(): Promise<void> {
    for (;;) {
      try {
        this.db.exec("BEGIN IMMEDIATE");
        const last = this.db.prepare("SELECT n FROM t ORDER BY id DESC LIMIT 1").get() as
          | { n: number }
          | undefined;
        const n = Number(last?.n ?? 0) + 1;
        const insert = this.db.prepare("INSERT INTO t (n, payload) VALUES (?, ?)");
        const rows = this.#rng.int(1, 4);
        for (let i = 0; i < rows; i++) insert.run(n, this.#payload(this.#rng.int(50, 300)));
        this.db.exec("COMMIT");
        this.lastN = n;
        this.committed++;
        const line = new TextEncoder().encode(`${n} ${Date.now()}\n`);
        for (let at = 0; at < line.length;) at += await this.#ack.write(line.subarray(at));
        return;
      } catch (err) {
        if (this.db.isTransaction) this.db.exec("ROLLBACK");
        if (!isBusyError(err)) throw err;
        this.busy++;
        await sleep(5);
      }
    }
  }

  async writeMany(count: number): Promise<void> {
    for (let i = 0; i < count; i++) await this.write();
  }

  /** A checkpoint; SQLITE_BUSY (or a busy result) is counted, not thrown. */
  checkpoint(mode: string, db = this.db): void {
    // RESTART and TRUNCATE wait for readers (sluice always has one) up to the busy timeout.
    db.exec("PRAGMA busy_timeout = 100");
    try {
      const result = db.prepare(`PRAGMA wal_checkpoint(${mode})`).get() as { busy: number };
      if (result.busy) this.busy++;
    } catch (err) {
      if (!isBusyError(err)) throw err;
      this.busy++;
    } finally {
      db.exec("PRAGMA busy_timeout = 2000");
    }
  }

  /** A ballast table of `pages` 4 KiB-ish blobs (not part of `t`, so the checks ignore it). */
  ballast(pages: number): void {
    this.db.exec("CREATE TABLE IF NOT EXISTS ballast (b BLOB)");
    const insert = this.db.prepare("INSERT INTO ballast (b) VALUES (?)");
    this.db.exec("BEGIN IMMEDIATE");
    for (let i = 0; i < pages; i++) insert.run(this.#payload(4000));
    this.db.exec("COMMIT");
  }

  pageCount(): number {
    return (this.db.prepare("PRAGMA page_count").get() as { page_count: number }).page_count;
  }

  #payload(size: number): Uint8Array {
    const words = new Uint32Array(Math.ceil(size / 4));
    for (let i = 0; i < words.length; i++) words[i] = Math.floor(this.#rng.next() * 2 ** 32);
    return new Uint8Array(words.buffer, 0, size);
  }
}

/** Runs one step against `path`; returns the summary the CLI prints. */
export async function runStep(
  path: string,
  ackFile: string,
  step: AppStep,
  count: number,
  seed: number,
  thenMs = 0,
): Promise<Record<string, unknown>> {
  const rng = new Rng(seed);
  const ack = await Deno.open(ackFile, { append: true, create: true });
  const app = new App(path, ack, rng);
  try {
    switch (step) {
      case "checkpoints": {
        for (let i = 0; i < count; i++) {
          await app.write();
          if (i % 5 === 4) app.checkpoint(rng.pick(CHECKPOINT_MODES));
        }
        break;
      }
      case "long-read": {
        const reader = new DatabaseSync(path, { readOnly: true });
        try {
          reader.exec("BEGIN");
          const before = (reader.prepare("SELECT count(*) AS c FROM t").get() as { c: number }).c;
          const started = Date.now();
          for (let i = 0; i < count; i++) {
            await app.write();
            if (i % 5 === 4) app.checkpoint(rng.pick(["RESTART", "TRUNCATE", "FULL"]));
          }
          await sleep(Math.max(0, 1200 - (Date.now() - started)));
          const after = (reader.prepare("SELECT count(*) AS c FROM t").get() as { c: number }).c;
          app.notes.readStable = before === after; // the snapshot held
          reader.exec("COMMIT");
        } finally {
          reader.close();
        }
        app.checkpoint("TRUNCATE");
        break;
      }
      case "vacuum": {
        await app.writeMany(Math.ceil(count / 3));
        app.ballast(rng.int(300, 600));
        const grown = app.pageCount();
        await app.writeMany(Math.ceil(count / 3));
        app.db.exec("DROP TABLE ballast");
        app.db.exec("VACUUM");
        const shrunk = app.pageCount();
        await app.writeMany(Math.ceil(count / 3));
        app.ballast(rng.int(100, 300));
        app.notes.pages = { grown, shrunk, regrown: app.pageCount() };
        if (shrunk >= grown) throw new Error(`VACUUM did not shrink (${grown} → ${shrunk})`);
        break;
      }
      case "journal": {
        await app.writeMany(Math.ceil(count / 2));
        let mode = "busy";
        try {
          mode = (app.db.prepare("PRAGMA journal_mode = delete").get() as {
            journal_mode: string;
          }).journal_mode;
        } catch (err) {
          if (!isBusyError(err)) throw err; // "database is locked": another connection is open
        }
        if (mode !== "delete") {
          app.notes.journal = "refused";
          await app.writeMany(Math.ceil(count / 2));
          break;
        }
        app.notes.journal = "switched";
        await app.writeMany(Math.ceil(count / 2));
        const back = (app.db.prepare("PRAGMA journal_mode = wal").get() as {
          journal_mode: string;
        }).journal_mode;
        if (back !== "wal") throw new Error(`could not switch back to WAL (got ${back})`);
        await app.writeMany(5);
        break;
      }
      case "replace":
      case "replace-now": {
        await app.writeMany(Math.ceil(count / 2));
        const copy = `${path}.copy-${Date.now()}`;
        app.db.exec(`VACUUM INTO '${copy.replaceAll("'", "''")}'`);
        app.checkpoint("TRUNCATE");
        app.db.close();
        await Deno.rename(copy, path);
        if (step === "replace") await sleep(1500);
        app.db = App.open(path);
        await app.writeMany(Math.ceil(count / 2));
        break;
      }
      case "reconnect": {
        app.db.close(); // no connection of this process stays open meanwhile
        const writers: Record<string, number> = {};
        const skipped: string[] = [];
        const kinds = [...WRITER_KINDS].sort(() => rng.next() - 0.5);
        for (const kind of kinds) {
          const missing = await writerKindMissing(kind);
          if (missing) {
            skipped.push(`${kind}: ${missing}`);
            continue;
          }
          const done = await runShortWriter({
            kind,
            db: path,
            transactions: Math.ceil(count / kinds.length),
            ackFile,
            seed: rng.int(1, 1e9),
          });
          writers[kind] = done.committed;
          app.committed += done.committed;
          app.lastN = Math.max(app.lastN, done.lastN);
        }
        app.notes.writers = writers;
        if (skipped.length > 0) app.notes.skipped = skipped;
        app.db = App.open(path);
        break;
      }
      case "delete-wal": {
        await app.writeMany(Math.ceil(count / 2));
        app.checkpoint("TRUNCATE");
        app.db.close();
        for (const suffix of ["-wal", "-shm"]) {
          await Deno.remove(path + suffix).catch((err) => {
            if (!(err instanceof Deno.errors.NotFound)) throw err;
          });
        }
        app.db = App.open(path);
        await app.writeMany(Math.ceil(count / 2));
        break;
      }
    }
    for (const until = Date.now() + thenMs; Date.now() < until;) {
      await app.write();
      await sleep(20);
    }
  } finally {
    try {
      app.db.close();
    } catch { /* already closed */ }
    ack.close();
  }
  return { step, committed: app.committed, lastN: app.lastN, busy: app.busy, ...app.notes };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      db: { type: "string" },
      "ack-file": { type: "string" },
      step: { type: "string" },
      count: { type: "string", default: "30" },
      seed: { type: "string", default: "1" },
      "then-ms": { type: "string", default: "0" },
    },
  });
  const step = values.step as AppStep;
  const known: readonly string[] = [...APP_STEPS, "replace-now"];
  if (!values.db || !values["ack-file"] || !known.includes(step)) {
    console.error(
      `chaos_app: need --db PATH --ack-file PATH --step ${APP_STEPS.join("|")}`,
    );
    Deno.exit(2);
  }
  try {
    const summary = await runStep(
      values.db,
      values["ack-file"],
      step,
      Number(values.count),
      Number(values.seed),
      Number(values["then-ms"]),
    );
    console.log(JSON.stringify(summary));
  } catch (err) {
    console.error(`chaos_app: ${values.db}: ${step}: ${(err as Error).message}`);
    Deno.exit(1);
  }
}
