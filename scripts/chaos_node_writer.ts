/**
 * The `node:sqlite` kind of short-lived writer (scripts/chaos_short_writers.ts): `--count`
 * transactions, each on a new connection (open, BEGIN IMMEDIATE, insert 1–4 rows with
 * `n` = the newest row's `n` + 1, COMMIT, close), each acknowledged as `<n> <ms>` in
 * `--ack-file` after its commit. Prints the last `n`. Kept apart from the campaign code so the
 * process starts fast (it imports nothing but SQLite's busy check).
 *
 *   deno run -A scripts/chaos_node_writer.ts --db PATH --ack-file PATH [--count N]
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import { parseArgs } from "node:util";
import { isBusyError } from "../src/sqlite/mod.ts";

/** Busy timeout of each connection, ms: the application waits for sluice's locks. */
const BUSY_TIMEOUT_MS = 5000;

function between(lo: number, hi: number): number {
  return lo + Math.floor(Math.random() * (hi - lo + 1));
}

/** Commits one transaction on a connection of its own; returns its transaction number. */
async function commitOnce(db: string): Promise<number> {
  for (;;) {
    const con = new DatabaseSync(db);
    try {
      con.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
      con.exec("BEGIN IMMEDIATE");
      const row = con.prepare("SELECT n FROM t ORDER BY id DESC LIMIT 1").get() as
        | { n: number }
        | undefined;
      const n = Number(row?.n ?? 0) + 1;
      const insert = con.prepare("INSERT INTO t (n, payload) VALUES (?, ?)");
      for (let rows = between(1, 4); rows > 0; rows--) {
        insert.run(n, crypto.getRandomValues(new Uint8Array(between(50, 300))));
      }
      con.exec("COMMIT");
      return n;
    } catch (err) {
      if (!isBusyError(err)) throw err;
      await new Promise((resolve) => setTimeout(resolve, 10)); // retried on a new connection
    } finally {
      con.close();
    }
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      db: { type: "string" },
      "ack-file": { type: "string" },
      count: { type: "string", default: "1" },
    },
  });
  if (!values.db || !values["ack-file"]) {
    console.error("chaos_node_writer: need --db PATH --ack-file PATH [--count N]");
    Deno.exit(2);
  }
  let last = 0;
  for (let i = 0; i < Number(values.count); i++) {
    last = await commitOnce(values.db);
    await Deno.writeTextFile(values["ack-file"], `${last} ${Date.now()}\n`, { append: true });
  }
  console.log(last);
}
