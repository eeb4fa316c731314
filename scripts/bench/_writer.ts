/**
 * Benchmark load generator, run as a child process so its timing is not disturbed by the
 * benchmark's own work:
 *
 *   deno run -A scripts/bench/_writer.ts --db PATH --rate N --seconds S --payload-bytes B
 *     --first-k K --times-out FILE
 *
 * Like an application: one `node:sqlite` connection, WAL mode, `synchronous = NORMAL` (the usual
 * setting with WAL), SQLite's default autocheckpoint, `busy_timeout = 5000`. Transaction k is one
 * autocommit `INSERT` into `bench(id, k, payload)` whose payload starts with a 16-byte marker
 * (magic, k, ~k) followed by random bytes, so the benchmark can find in any replica file exactly which
 * transactions it holds. `--rate 0` writes as fast as possible. The commit time of each
 * transaction (ms since the epoch, sub-millisecond, taken right after the commit returned) is
 * written to `--times-out` as a Float64Array; one JSON line on stdout summarises the run.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import { parseArgs } from "node:util";
import { MARKER_MAGIC, MARKER_SIZE } from "./_markers.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    db: { type: "string" },
    rate: { type: "string", default: "0" },
    seconds: { type: "string", default: "5" },
    "payload-bytes": { type: "string", default: "100" },
    "first-k": { type: "string", default: "1" },
    "times-out": { type: "string" },
  },
});
if (!values.db) throw new Error("--db PATH is required");
const rate = Number(values.rate);
const seconds = Number(values.seconds);
const payloadBytes = Math.max(MARKER_SIZE, Number(values["payload-bytes"]));
const firstK = Number(values["first-k"]);

const db = new DatabaseSync(values.db);
db.exec("PRAGMA busy_timeout = 5000; PRAGMA journal_mode = wal; PRAGMA synchronous = NORMAL;");
db.exec("CREATE TABLE IF NOT EXISTS bench (id INTEGER PRIMARY KEY, k INTEGER, payload BLOB)");
const insert = db.prepare("INSERT INTO bench (k, payload) VALUES (?, ?)");

const times: number[] = [];
const payload = new Uint8Array(payloadBytes);
payload.set(MARKER_MAGIC, 0);
const view = new DataView(payload.buffer);
const now = () => performance.timeOrigin + performance.now();

const start = now();
const end = start + seconds * 1000;
let k = firstK;
for (;;) {
  const t = now();
  if (t >= end) break;
  if (rate > 0) {
    const due = start + (times.length * 1000) / rate;
    if (due > t) {
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, Math.floor(due - t))));
      continue;
    }
  }
  view.setUint32(8, k, true);
  view.setUint32(12, ~k >>> 0, true); // check word: stale bytes in free space fail it
  for (let at = MARKER_SIZE; at < payloadBytes; at += 65536) {
    crypto.getRandomValues(payload.subarray(at, Math.min(payloadBytes, at + 65536)));
  }
  insert.run(k, payload);
  times.push(now());
  k++;
  // Unthrottled: yield now and then so a SIGTERM or timer could run; cheap at this period.
  if (rate === 0 && (times.length & 1023) === 0) await new Promise((r) => setTimeout(r, 0));
}
const elapsed = (now() - start) / 1000;
db.close();
if (values["times-out"]) {
  await Deno.writeFile(values["times-out"], new Uint8Array(new Float64Array(times).buffer));
}
console.log(JSON.stringify({ committed: times.length, firstK, seconds: elapsed }));
