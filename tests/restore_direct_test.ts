/**
 * The direct restore path (src/restore/_direct.ts): a directory replica's files read, decoded,
 * verified and written by a worker of their own. It must produce the streaming path's bytes and
 * fail where it fails: corrupt files are reported, never restored.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { LTXError, type Page } from "../src/ltx/mod.ts";
import { FileReplicaClient, type ListOptions, type LTXFileInfo } from "../src/replica/mod.ts";
import { restore, TruncatedFileError } from "../src/restore/mod.ts";
import {
  copyTree,
  fixture,
  leftovers,
  patternPage,
  withTempDir,
  writeGrowthWithoutPage3,
  writeLTX,
} from "./_restore_helpers.ts";

const PAGE_SIZE = 4096;
/** Pages of the snapshot: 12 MiB of random bytes, above the worker threshold as LTX too. */
const PAGES = 3072;

/** Runs `fn` with `SLUICE_PIPELINE` set to `where` (the direct path's switch), then restores it. */
async function withPlacement<T>(where: string, fn: () => Promise<T>): Promise<T> {
  const before = Deno.env.get("SLUICE_PIPELINE");
  Deno.env.set("SLUICE_PIPELINE", where);
  try {
    return await fn();
  } finally {
    if (before === undefined) Deno.env.delete("SLUICE_PIPELINE");
    else Deno.env.set("SLUICE_PIPELINE", before);
  }
}

function randomPage(): Uint8Array {
  const data = new Uint8Array(PAGE_SIZE);
  for (let at = 0; at < PAGE_SIZE; at += 65536) {
    crypto.getRandomValues(data.subarray(at, Math.min(PAGE_SIZE, at + 65536)));
  }
  return data;
}

/**
 * A replica of a large snapshot followed by incrementals that overwrite pages, shrink the
 * database and grow it again; returns the image a restore must produce.
 */
async function buildReplica(client: FileReplicaClient): Promise<Uint8Array> {
  const image: Uint8Array[] = [];
  const snapshot: Page[] = [];
  for (let pgno = 1; pgno <= PAGES; pgno++) {
    image[pgno] = randomPage();
    snapshot.push({ pgno, data: image[pgno] });
  }
  await writeLTX(
    client,
    0,
    { minTXID: 1, maxTXID: 1, pageSize: PAGE_SIZE, commit: PAGES },
    snapshot,
  );
  // TXID 2: pages 5, 6, 7 and the last change.
  const second = [5, 6, 7, PAGES].map((pgno) => ({ pgno, data: patternPage(PAGE_SIZE, pgno, 2) }));
  for (const page of second) image[page.pgno] = page.data;
  await writeLTX(client, 0, { minTXID: 2, maxTXID: 2, pageSize: PAGE_SIZE, commit: PAGES }, second);
  // TXID 3: the database shrinks to 2000 pages (page 6 changes again).
  image[6] = patternPage(PAGE_SIZE, 6, 3);
  await writeLTX(client, 0, { minTXID: 3, maxTXID: 3, pageSize: PAGE_SIZE, commit: 2000 }, [
    { pgno: 6, data: image[6] },
  ]);
  // TXID 4: it grows to 2100 pages, whose new pages are all in the file.
  const grown: Page[] = [];
  for (let pgno = 2001; pgno <= 2100; pgno++) {
    image[pgno] = patternPage(PAGE_SIZE, pgno, 4);
    grown.push({ pgno, data: image[pgno] });
  }
  await writeLTX(client, 0, { minTXID: 4, maxTXID: 4, pageSize: PAGE_SIZE, commit: 2100 }, grown);
  const out = new Uint8Array(2100 * PAGE_SIZE);
  for (let pgno = 1; pgno <= 2100; pgno++) out.set(image[pgno], (pgno - 1) * PAGE_SIZE);
  return out;
}

Deno.test("direct: a large local plan restores the merge's bytes, as the streaming path does", async () => {
  await withTempDir(async (dir) => {
    const client = new FileReplicaClient(join(dir, "replica"));
    const expected = await buildReplica(client);
    const direct = join(dir, "direct.db");
    const progress: number[] = [];
    const result = await restore(client, {
      outputPath: direct,
      onProgress: (done, total) => {
        assert.equal(total, expected.byteLength);
        progress.push(done);
      },
    });
    assert.equal(result.commit, 2100);
    assert.equal(result.bytes, expected.byteLength);
    assert.equal(result.files.length, 4);
    assert.deepEqual(await Deno.readFile(direct), expected);
    assert.equal(progress.at(-1), expected.byteLength);

    const streamed = join(dir, "streamed.db");
    await withPlacement("thread", () => restore(client, { outputPath: streamed }));
    assert.deepEqual(await Deno.readFile(streamed), expected);
    // An earlier TXID: the snapshot and TXID 2 only.
    const earlier = join(dir, "earlier.db");
    const at2 = await restore(client, { outputPath: earlier, txid: 2 });
    assert.equal(at2.commit, PAGES);
    const bytes = await Deno.readFile(earlier);
    assert.deepEqual(bytes.subarray(5 * PAGE_SIZE, 6 * PAGE_SIZE), patternPage(PAGE_SIZE, 6, 2));
    assert.deepEqual(await leftovers(dir, "direct.db"), []);
  });
});

Deno.test("direct: a flipped byte in a large file fails naming it; nothing is written", async () => {
  await withTempDir(async (dir) => {
    const root = join(dir, "replica");
    const client = new FileReplicaClient(root);
    await buildReplica(client);
    const name = "0000000000000001-0000000000000001.ltx";
    const path = join(root, "ltx/0", name);
    await Deno.chmod(path, 0o644);
    const original = await Deno.readFile(path);
    // A page payload byte early, one in the middle, and the trailer's file checksum.
    for (const offset of [5000, Math.floor(original.length / 2), original.length - 1]) {
      const bytes = original.slice();
      bytes[offset] ^= 0x01;
      await Deno.writeFile(path, bytes);
      const outputPath = join(dir, "out.db");
      await assert.rejects(() => restore(client, { outputPath }), (err: Error) => {
        assert.ok(err instanceof LTXError, `offset ${offset}: ${err}`);
        assert.ok(err.message.includes(name), `offset ${offset}: ${err.message}`);
        return true;
      });
      assert.deepEqual(await leftovers(dir, "out.db"), []);
    }
  });
});

Deno.test("direct: missing pages, rolling checksums and aborts behave as in the streaming path", async () => {
  await withPlacement("worker", async () => {
    await withTempDir(async (dir) => {
      const client = new FileReplicaClient(join(dir, "replica"));
      await writeGrowthWithoutPage3(client);
      await assert.rejects(
        () => restore(client, { outputPath: join(dir, "out.db") }),
        /page 3 of 4 is in none of the files/,
      );
      assert.deepEqual(await leftovers(dir, "out.db"), []);

      const checksummed = new FileReplicaClient(join(dir, "checksum"));
      await copyTree(fixture("negative/rep-checksum"), join(dir, "checksum"));
      const result = await restore(checksummed, { outputPath: join(dir, "sum.db") });
      assert.equal(result.checksumsVerified, true);
      assert.deepEqual(
        await Deno.readFile(join(dir, "sum.db")),
        await Deno.readFile(fixture("sqlite/v2.db")),
      );

      const during = new AbortController();
      await assert.rejects(
        () =>
          restore(checksummed, {
            outputPath: join(dir, "aborted.db"),
            signal: during.signal,
            onProgress: () => during.abort(new Error("stopped while writing")),
          }),
        /stopped while writing/,
      );
      assert.deepEqual(await leftovers(dir, "aborted.db"), []);
    });
  });
});

/** A directory replica whose listing says each file is longer than it is (replaced meanwhile). */
class LongerListing extends FileReplicaClient {
  override async *ltxFiles(level: number, options?: ListOptions): AsyncIterable<LTXFileInfo> {
    for await (const info of super.ltxFiles(level, options)) {
      yield { ...info, size: info.size + 10 };
    }
  }
}

Deno.test("direct: a file shorter than its listed size is a TruncatedFileError on both paths", async () => {
  await withTempDir(async (dir) => {
    await buildReplica(new FileReplicaClient(join(dir, "replica")));
    const client = new LongerListing(join(dir, "replica"));
    for (const where of ["auto", "thread"]) {
      await withPlacement(where, async () => {
        await assert.rejects(
          () => restore(client, { outputPath: join(dir, "out.db") }),
          (err: Error) => {
            assert.ok(err instanceof TruncatedFileError, `${where}: ${err}`);
            assert.match(
              err.message,
              /\d{16}-\d{16}\.ltx .*: read \d+ of \d+ bytes before the stream ended/,
            );
            return true;
          },
        );
      });
      assert.deepEqual(await leftovers(dir, "out.db"), []);
    }
  });
});
