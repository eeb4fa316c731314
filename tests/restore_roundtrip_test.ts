import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { lockPageNumber, type Page, type PageEncoding } from "../src/ltx/mod.ts";
import { FileReplicaClient } from "../src/replica/mod.ts";
import { restore } from "../src/restore/mod.ts";
import {
  buildStates,
  changedPages,
  patternPage,
  planNames,
  snapshotPages,
  withTempDir,
  writeLTX,
} from "./_restore_helpers.ts";

function rowCount(path: string): number {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    return Number((db.prepare("SELECT count(*) AS n FROM t").get() as { n: number }).n);
  } finally {
    db.close();
  }
}

for (const pageSize of [4096, 65536]) {
  for (const encoding of ["frame", "block"] as PageEncoding[]) {
    Deno.test(`round trip: ${pageSize / 1024} KiB pages, ${encoding} encoding, every TXID`, async () => {
      await withTempDir(async (dir) => {
        const images = buildStates(join(dir, "source.db"), pageSize);
        assert.ok(images[2].byteLength < images[1].byteLength, "state 3 shrank");
        assert.ok(images[3].byteLength > images[1].byteLength, "state 4 regrew");

        const client = new FileReplicaClient(join(dir, "replica"));
        const pages = (i: number) => images[i].byteLength / pageSize;
        const ts = Date.now() - 60_000;
        await writeLTX(
          client,
          0,
          { minTXID: 1, maxTXID: 1, pageSize, commit: pages(0), timestamp: ts },
          snapshotPages(images[0], pageSize),
          { encoding },
        );
        for (let txid = 2; txid <= 4; txid++) {
          await writeLTX(
            client,
            0,
            {
              minTXID: txid,
              maxTXID: txid,
              pageSize,
              commit: pages(txid - 1),
              timestamp: ts + txid,
            },
            changedPages(images[txid - 2], images[txid - 1], pageSize),
            { encoding },
          );
        }
        // A level-9 snapshot at TXID 2 shortens the latest plan.
        await writeLTX(
          client,
          9,
          { minTXID: 1, maxTXID: 2, pageSize, commit: pages(1), timestamp: ts + 2 },
          snapshotPages(images[1], pageSize),
          { encoding },
        );

        const expectedPlans: Record<number, string[]> = {
          1: ["L0:1-1"],
          2: ["L9:1-2"],
          3: ["L9:1-2", "L0:3-3"],
          4: ["L9:1-2", "L0:3-3", "L0:4-4"],
        };
        for (let txid = 1; txid <= 4; txid++) {
          const outputPath = join(dir, `restored-${txid}.db`);
          const result = await restore(client, {
            outputPath,
            txid: txid === 4 ? undefined : txid,
            integrityCheck: "full",
          });
          assert.deepEqual(planNames(result.files), expectedPlans[txid]);
          assert.equal(result.txid, txid);
          assert.equal(result.pageSize, pageSize);
          assert.equal(result.commit, pages(txid - 1));
          const restored = await Deno.readFile(outputPath);
          assert.ok(restored.byteLength === images[txid - 1].byteLength, `size at TXID ${txid}`);
          assert.deepEqual(restored, images[txid - 1], `bytes at TXID ${txid}`);
        }
        assert.equal(rowCount(join(dir, "restored-4.db")), 860);
      });
    });
  }
}

Deno.test("round trip: a database past 1 GiB (lock page zeroed), streamed, compared by hash", async () => {
  const pageSize = 65536;
  const lockPage = lockPageNumber(pageSize);
  assert.equal(lockPage, 16385);
  const commit = lockPage + 1;
  const updated = new Set([1, 2, lockPage - 1, lockPage + 1]);

  await withTempDir(async (dir) => {
    const client = new FileReplicaClient(join(dir, "replica"));
    function* base(): Generator<Page> {
      for (let pgno = 1; pgno <= commit; pgno++) {
        if (pgno !== lockPage) yield { pgno, data: patternPage(pageSize, pgno, 0) };
      }
    }
    await writeLTX(client, 9, { minTXID: 1, maxTXID: 1, pageSize, commit }, base());
    await writeLTX(
      client,
      0,
      { minTXID: 2, maxTXID: 2, pageSize, commit },
      [...updated].map((pgno) => ({ pgno, data: patternPage(pageSize, pgno, 1) })),
      { encoding: "block" },
    );

    const expected = createHash("sha256");
    for (let pgno = 1; pgno <= commit; pgno++) {
      expected.update(
        pgno === lockPage
          ? new Uint8Array(pageSize)
          : patternPage(pageSize, pgno, updated.has(pgno) ? 1 : 0),
      );
    }

    const outputPath = join(dir, "big.db");
    let maxRSS = 0;
    let lastProgress = 0;
    const result = await restore(client, {
      outputPath,
      onProgress: (done, total) => {
        assert.equal(total, commit * pageSize);
        assert.ok(done >= lastProgress);
        lastProgress = done;
        maxRSS = Math.max(maxRSS, Deno.memoryUsage().rss);
      },
    });
    assert.equal(result.bytes, commit * pageSize);
    assert.equal(lastProgress, commit * pageSize);
    assert.deepEqual(planNames(result.files), ["L9:1-1", "L0:2-2"]);
    assert.equal((await Deno.stat(outputPath)).size, commit * pageSize);
    // A page store holding the database would need more than 1 GiB.
    assert.ok(maxRSS < 768 * 2 ** 20, `restore used ${Math.round(maxRSS / 2 ** 20)} MiB`);

    const actual = createHash("sha256");
    const file = await Deno.open(outputPath);
    try {
      const buffer = new Uint8Array(8 << 20);
      for (let n = await file.read(buffer); n !== null; n = await file.read(buffer)) {
        actual.update(buffer.subarray(0, n));
      }
    } finally {
      file.close();
    }
    assert.equal(actual.digest("hex"), expected.digest("hex"));
  });
});
