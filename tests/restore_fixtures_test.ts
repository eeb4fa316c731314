import assert from "node:assert/strict";
import { join } from "node:path";
import { Decoder, HEADER_FLAG_NO_CHECKSUM, LTXChecksumError, type Page } from "../src/ltx/mod.ts";
import { FileReplicaClient } from "../src/replica/mod.ts";
import { IntegrityCheckError, OutputExistsError, restore } from "../src/restore/mod.ts";
import {
  copyTree,
  fixture,
  leftovers,
  patternPage,
  planNames,
  withTempDir,
  writeGrowthWithoutPage3,
  writeLTX,
} from "./_restore_helpers.ts";

const EXPECTED: Record<string, string> = {
  "rep-block": "sqlite/v2.db",
  "rep-frame": "sqlite/v2.db",
  "rep-l1": "sqlite/v3.db",
  "rep-big-block": "sqlite/big.db",
  "rep-big-frame": "sqlite/big.db",
};

Deno.test("fixtures: every Go-verified replica restores byte-identical", async () => {
  await withTempDir(async (dir) => {
    for (const [replica, expected] of Object.entries(EXPECTED)) {
      const client = new FileReplicaClient(fixture(`node-written-go-verified/${replica}`));
      const outputPath = join(dir, `${replica}.db`);
      const result = await restore(client, { outputPath, integrityCheck: "full" });
      const want = await Deno.readFile(fixture(expected));
      assert.deepEqual(await Deno.readFile(outputPath), want, `${replica} → ${expected}`);
      assert.equal(result.bytes, want.byteLength);
      assert.equal(result.checksumsVerified, false);
      assert.deepEqual(await leftovers(dir, `${replica}.db`), [], "no -wal/-shm/.tmp left");
    }
  });
});

Deno.test("fixtures: rep-l1 plan is L1 1-2 then L0 3-3, and --txid 2 gives v2", async () => {
  await withTempDir(async (dir) => {
    const client = new FileReplicaClient(fixture("node-written-go-verified/rep-l1"));
    const latest = await restore(client, { outputPath: join(dir, "v3.db") });
    assert.deepEqual(planNames(latest.files), ["L1:1-2", "L0:3-3"]);
    const result = await restore(client, { outputPath: join(dir, "v2.db"), txid: 2 });
    assert.deepEqual(planNames(result.files), ["L1:1-2"]);
    assert.deepEqual(
      await Deno.readFile(join(dir, "v2.db")),
      await Deno.readFile(fixture("sqlite/v2.db")),
    );
  });
});

Deno.test("fixtures: rep-checksum restores to v2 with its rolling checksums verified", async () => {
  await withTempDir(async (dir) => {
    const client = new FileReplicaClient(fixture("negative/rep-checksum"));
    const outputPath = join(dir, "out.db");
    const result = await restore(client, { outputPath });
    assert.equal(result.checksumsVerified, true);
    assert.deepEqual(planNames(result.files), ["L9:1-1", "L0:2-2"]);
    assert.deepEqual(await Deno.readFile(outputPath), await Deno.readFile(fixture("sqlite/v2.db")));
  });
});

/** Decodes a file completely: header, pages (copied) and trailer. */
async function readWhole(path: string) {
  const file = await Deno.open(path);
  const decoder = new Decoder(file.readable, { name: path });
  const header = await decoder.readHeader();
  const pages: Page[] = [];
  for (let page = await decoder.readPage(); page !== null; page = await decoder.readPage()) {
    pages.push({ pgno: page.pgno, data: page.data.slice() });
  }
  return { header, pages, trailer: decoder.trailer! };
}

/** A copy of rep-checksum whose L0 2-2 is re-encoded (valid file checksum) with changes. */
async function tamperedReplica(
  dir: string,
  change: { preApply?: (v: bigint) => bigint; postApply?: (v: bigint) => bigint },
): Promise<FileReplicaClient> {
  const root = join(dir, "replica");
  await copyTree(fixture("negative/rep-checksum"), root);
  const name = "0000000000000002-0000000000000002.ltx";
  const original = await readWhole(fixture(`negative/rep-checksum/ltx/0/${name}`));
  assert.equal(original.header.flags & HEADER_FLAG_NO_CHECKSUM, 0, "fixture carries checksums");
  await Deno.remove(join(root, "ltx/0", name));
  const client = new FileReplicaClient(root);
  const { header, pages, trailer } = original;
  await writeLTX(
    client,
    0,
    {
      ...header,
      preApplyChecksum: change.preApply?.(header.preApplyChecksum) ?? header.preApplyChecksum,
    },
    pages,
    {
      encoding: "block",
      postApplyChecksum: change.postApply?.(trailer.postApplyChecksum) ?? trailer.postApplyChecksum,
    },
  );
  return client;
}

Deno.test("fixtures: a tampered post-apply checksum (valid file checksum) is refused", async () => {
  await withTempDir(async (dir) => {
    const client = await tamperedReplica(dir, { postApply: (v) => v ^ 0x10n });
    const outputPath = join(dir, "out.db");
    await assert.rejects(() => restore(client, { outputPath }), (err: Error) => {
      assert.ok(err instanceof LTXChecksumError, String(err));
      assert.match(err.message, /0000000000000002-0000000000000002\.ltx/);
      assert.match(err.message, /checksum/);
      return true;
    });
    assert.deepEqual(await leftovers(dir, "out.db"), []);
    assert.equal(await exists(outputPath), false);
  });
});

Deno.test("fixtures: a broken pre-apply chain (valid file checksum) is refused", async () => {
  await withTempDir(async (dir) => {
    const client = await tamperedReplica(dir, { preApply: (v) => v ^ 0x10n });
    const outputPath = join(dir, "out.db");
    await assert.rejects(() => restore(client, { outputPath }), (err: Error) => {
      assert.ok(err instanceof LTXChecksumError, String(err));
      assert.match(err.message, /0000000000000002-0000000000000002\.ltx.*pre-apply/);
      return true;
    });
    assert.equal(await exists(outputPath), false);
    assert.deepEqual(await leftovers(dir, "out.db"), []);
  });
});

Deno.test("corrupt: a flipped byte in a plan file fails naming it; nothing is written", async () => {
  const name = "0000000000000002-0000000000000002.ltx";
  const size = (await Deno.stat(fixture(`node-written-go-verified/rep-block/ltx/0/${name}`))).size;
  // A reserved header byte (only the file checksum notices), a page payload byte, the trailer.
  for (const offset of [90, 2000, Math.floor(size / 2), size - 1]) {
    await withTempDir(async (dir) => {
      const root = join(dir, "replica");
      await copyTree(fixture("node-written-go-verified/rep-block"), root);
      const path = join(root, "ltx/0", name);
      await Deno.chmod(path, 0o644);
      const bytes = await Deno.readFile(path);
      bytes[offset] ^= 0x01;
      await Deno.writeFile(path, bytes);
      const client = new FileReplicaClient(root);

      const outputPath = join(dir, "out.db");
      await assert.rejects(() => restore(client, { outputPath }), (err: Error) => {
        assert.ok(err.message.includes(name), `offset ${offset}: ${err.message}`);
        return true;
      });
      assert.equal(await exists(outputPath), false);
      assert.deepEqual(await leftovers(dir, "out.db"), []);

      // An existing output survives a failed restore, even one allowed to replace it.
      const existing = join(dir, "existing.db");
      await Deno.writeTextFile(existing, "precious");
      await assert.rejects(() => restore(client, { outputPath: existing }), OutputExistsError);
      await assert.rejects(() => restore(client, { outputPath: existing, overwrite: true }));
      assert.equal(await Deno.readTextFile(existing), "precious");
      assert.equal(await exists(`${existing}.tmp`), false);
    });
  }
});

Deno.test("corrupt: a file shorter than a header, or than its listed size, is refused", async () => {
  await withTempDir(async (dir) => {
    const root = join(dir, "replica");
    await copyTree(fixture("node-written-go-verified/rep-block"), root);
    const path = join(root, "ltx/0/0000000000000002-0000000000000002.ltx");
    await Deno.chmod(path, 0o644);
    const bytes = await Deno.readFile(path);
    await Deno.writeFile(path, bytes.subarray(0, 60));
    const client = new FileReplicaClient(root);
    await assert.rejects(
      () => restore(client, { outputPath: join(dir, "out.db") }),
      /0000000000000002-0000000000000002\.ltx.*60 bytes is smaller than an LTX header/,
    );
    await Deno.writeFile(path, bytes.subarray(0, bytes.byteLength - 100));
    await assert.rejects(
      () => restore(client, { outputPath: join(dir, "out.db") }),
      /0000000000000002-0000000000000002\.ltx/,
    );
    assert.deepEqual(await leftovers(dir, "out.db"), []);
  });
});

Deno.test("corrupt: a database size grown without its pages is an incomplete restore", async () => {
  await withTempDir(async (dir) => {
    const client = new FileReplicaClient(dir);
    await writeGrowthWithoutPage3(client);
    await assert.rejects(
      () => restore(client, { outputPath: join(dir, "out.db") }),
      /page 3 of 4 is (missing|in none of the files)/,
    );
    assert.deepEqual(await leftovers(dir, "out.db"), []);
    // The state before the growth is complete and restorable.
    const result = await restore(client, { outputPath: join(dir, "out.db"), txid: 1 });
    assert.equal(result.commit, 2);
  });
});

Deno.test("integrity: a restore SQLite rejects is moved aside to .corrupt, never deleted", async () => {
  await withTempDir(async (dir) => {
    const client = new FileReplicaClient(join(dir, "replica"));
    const pageSize = 4096;
    // Valid LTX, but the pages are not a SQLite database.
    await writeLTX(
      client,
      0,
      { minTXID: 1, maxTXID: 1, pageSize, commit: 3 },
      [1, 2, 3].map((pgno) => ({
        pgno,
        data: patternPage(pageSize, pgno),
      })),
    );
    const outputPath = join(dir, "out.db");
    await assert.rejects(
      () => restore(client, { outputPath, integrityCheck: "quick" }),
      (err: Error) => {
        assert.ok(err instanceof IntegrityCheckError, String(err));
        assert.equal(err.corruptPath, `${outputPath}.corrupt`);
        assert.match(err.message, /out\.db failed the quick integrity check/);
        return true;
      },
    );
    assert.equal(await exists(outputPath), false);
    assert.equal((await Deno.stat(`${outputPath}.corrupt`)).size, 3 * pageSize);
    assert.deepEqual(await leftovers(dir, "out.db"), ["out.db.corrupt"]);

    // A second failure does not clobber the first one's evidence.
    await assert.rejects(
      () => restore(client, { outputPath, integrityCheck: "full" }),
      IntegrityCheckError,
    );
    assert.deepEqual(await leftovers(dir, "out.db"), ["out.db.corrupt", "out.db.corrupt.1"]);
    // Without a check the same bytes restore (they are what the replica holds).
    await restore(client, { outputPath });
    assert.equal((await Deno.stat(outputPath)).size, 3 * pageSize);
  });
});

Deno.test("abort: an aborted restore leaves neither output nor temp file", async () => {
  await withTempDir(async (dir) => {
    const client = new FileReplicaClient(fixture("node-written-go-verified/rep-block"));
    const outputPath = join(dir, "out.db");
    const before = new AbortController();
    before.abort(new Error("stop"));
    await assert.rejects(() => restore(client, { outputPath, signal: before.signal }), /stop/);

    const during = new AbortController();
    await assert.rejects(
      () =>
        restore(client, {
          outputPath,
          signal: during.signal,
          onProgress: () => during.abort(new Error("stopped while writing")),
        }),
      /stopped while writing/,
    );
    assert.deepEqual(await leftovers(dir, "out.db"), []);
    assert.equal(await exists(outputPath), false);
  });
});

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}
