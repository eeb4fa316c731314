/**
 * Issue 21 item 1: SQLite's speedtest1 benchmark as the application while `sluice replicate`
 * runs, then sluice's SIGTERM. The application's database must come out intact and with the
 * content speedtest1 leaves without sluice; sluice's and Litestream's restores must equal it.
 * (With sluice dropping its SHARED lock, speedtest1's close deleted the WAL under it and
 * sluice's shutdown then left `database disk image is malformed`.)
 *
 * Needs the speedtest1 binary built by scripts/speedtest1.sh (which `.ci/run` calls); skipped
 * when it is missing. The longer runs are campaign (e) of `deno task test:chaos`.
 */

import assert from "node:assert/strict";
import {
  runSpeedtest1,
  speedtest1Missing,
  speedtest1Reference,
} from "../scripts/chaos_speedtest1.ts";

const missing = Deno.build.os !== "linux" ? "needs Linux (/proc/locks)" : speedtest1Missing();
if (missing) console.warn(`speedtest1_test: skipped: ${missing}`);

const RUNS: readonly (readonly string[])[] = [
  ["--size", "20", "--autovacuum"],
  ["--size", "15", "--incrvacuum", "--big-transactions"],
];

for (const args of RUNS) {
  Deno.test({
    name: `issue 21: speedtest1 ${args.join(" ")} under sluice: source intact, restores equal it`,
    ignore: missing !== undefined,
    fn: async () => {
      const dir = await Deno.makeTempDir({ prefix: "sluice-speedtest1-" });
      try {
        const expected = await speedtest1Reference(args, dir);
        // A busy timeout, as sluice's README asks of applications (issue 21 item 5).
        const result = await runSpeedtest1({
          dir,
          args,
          busyTimeoutMs: 5000,
          settleMs: 1500,
          expected,
        });
        assert.deepEqual(
          result.failures,
          [],
          `${result.failures.join("\n")}\nsluice's log:\n${result.sluiceLog}`,
        );
        assert.equal(result.speedtestCode, 0);
        assert.equal(result.source.sha256, expected.sha256);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}
