/**
 * Every way of attaching a database to a replica (src/engine/attach.ts) applies the same
 * checks: here the daemonless `sluice snapshot`, which once skipped the replica's owner marker
 * and let two databases write one replica.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { createDatabase, digest, restoreTo, runWriter, sluice, startReplicate } from "./_sluice.ts";
import { OWNER_MARKER_NAME } from "../src/replica/mod.ts";

Deno.test("snapshot: a second database's snapshot into a claimed replica is refused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice-attach-" });
  try {
    const a = join(dir, "a.db");
    const b = join(dir, "b.db");
    const replica = join(dir, "r");
    const url = `file://${replica}`;
    for (const db of [a, b]) {
      createDatabase(db);
      await runWriter("--db", db, "--rate", "0", "--count", "5");
    }

    const first = await sluice("snapshot", a, url);
    assert.equal(first.code, 0, first.stderr);
    // The first snapshot claimed the replica for a.db.
    const marker = JSON.parse(await Deno.readTextFile(join(replica, OWNER_MARKER_NAME)));
    assert.equal(marker.db, a);

    const second = await sluice("snapshot", b, url);
    assert.equal(second.code, 1, second.stdout + second.stderr);
    assert.match(second.stderr, /belongs to database .*a\.db/);
    assert.match(second.stderr, /give each database its own replica path/);

    // Refused at once: it exits by itself (stopped after 30 s if it replicates instead).
    const replicate = startReplicate(b, url);
    const timer = setTimeout(() => replicate.process.kill("SIGKILL"), 30_000);
    try {
      const status = await replicate.process.status;
      const { stderr } = await replicate.stop();
      assert.equal(status.code, 1, stderr);
      assert.match(stderr, /belongs to database .*a\.db/);
    } finally {
      clearTimeout(timer);
    }

    // The replica still restores to a.db alone.
    const out = join(dir, "restored.db");
    await restoreTo(replica, out);
    assert.deepEqual(await digest(out), await digest(a));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
