/**
 * Issue 20: short-lived writers (open, commit, close, exit) while `sluice replicate` runs. When
 * sluice loses its SHARED lock on the database file (closing any descriptor of the file drops
 * every POSIX lock of the process), the writer's last connection believes it is the only one,
 * checkpoints the WAL into the database and deletes it under sluice, and the replica stops.
 *
 * For each kind of writer (Python's `sqlite3`, the `sqlite3` shell, `node:sqlite`): 20 writer
 * processes commit 1–3 transactions each, one after another; then sluice must still hold its
 * SHARED lock (`/proc/locks`), must not hold a deleted `-wal`, and after its SIGTERM the
 * restore must hold every acknowledged transaction and equal the source.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  deletedFilesHeld,
  holdsSharedLock,
  readAcks,
  replicaPosition,
  runSluice,
  spawnSluice,
  until,
  writeConfig,
} from "../scripts/chaos_lib.ts";
import { runShortWriter, WRITER_KINDS, writerKindMissing } from "../scripts/chaos_short_writers.ts";
import { createDatabase, digest } from "./_sluice.ts";

const WRITERS = 20;

for (const kind of WRITER_KINDS) {
  const missing = Deno.build.os !== "linux"
    ? "needs Linux (/proc/locks)"
    : await writerKindMissing(kind);
  if (missing) console.warn(`short_writers_test: skipping the ${kind} writers: ${missing}`);
  Deno.test({
    name:
      `issue 20: ${WRITERS} short-lived ${kind} writers; sluice keeps its lock, the WAL, every commit`,
    ignore: missing !== undefined,
    fn: async () => {
      const dir = await Deno.makeTempDir({ prefix: `sluice-short-${kind}-` });
      const dbPath = join(dir, "app.db");
      const replica = join(dir, "replica");
      const ackFile = join(dir, "acks");
      const config = join(dir, "sluice.yml");
      createDatabase(dbPath);
      await writeConfig(
        config,
        `
dbs:
  - path: ${dbPath}
    monitor-interval: 100ms
    replica:
      url: file://${replica}
`,
      );
      const spec = { type: "file" as const, path: replica };
      const sluice = spawnSluice(["replicate", "-c", config]);
      try {
        await until("sluice's first snapshot", async () => (await replicaPosition(spec)) > 0);
        assert.ok(
          await holdsSharedLock(sluice.pid, dbPath),
          `sluice (pid ${sluice.pid}) holds no SHARED lock on ${dbPath} after its first snapshot`,
        );
        let stalls = 0;
        for (let i = 0; i < WRITERS; i++) {
          const before = await replicaPosition(spec);
          await runShortWriter({ kind, db: dbPath, transactions: 1 + (i % 3), ackFile, seed: i });
          // Wait for sluice to sync the writer's commits before the next writer comes: the
          // lost lock shows when one writer's commits were read and the next one closes.
          const moved = async () => (await replicaPosition(spec)) > before;
          await until("the replica to move", moved, 5000).catch(() => stalls++);
        }
        assert.ok(
          await holdsSharedLock(sluice.pid, dbPath),
          `sluice (pid ${sluice.pid}) lost its SHARED lock on ${dbPath}; ${stalls} of ` +
            `${WRITERS} writers were not replicated within 5 s`,
        );
        assert.deepEqual(
          await deletedFilesHeld(sluice.pid, dbPath),
          [],
          "WAL deleted under sluice",
        );
        assert.equal(stalls, 0, `${stalls} of ${WRITERS} writers were not replicated within 5 s`);
        const stopped = await sluice.stop("SIGTERM");
        assert.equal(stopped.code, 0, stopped.stderr);

        const acks = await readAcks(ackFile);
        const out = join(dir, "restored.db");
        const restored = await runSluice(["restore", "-o", out, `file://${replica}`]);
        assert.equal(restored.code, 0, restored.stderr);
        const [source, copy] = [await digest(dbPath), await digest(out)];
        assert.equal(source.integrity, "ok");
        assert.equal(copy.integrity, "ok");
        assert.equal(source.maxN, acks.length, "every acknowledged transaction is in the source");
        assert.equal(copy.maxN, acks.length, "restore holds every acknowledged transaction");
        assert.equal(copy.distinctN, copy.maxN);
        assert.equal(copy.rows, source.rows);
        assert.equal(copy.sha256, source.sha256, "restore differs from the source");
      } finally {
        await sluice.stop("SIGKILL");
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      }
    },
  });
}
