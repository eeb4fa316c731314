/**
 * Corruption: a damaged LTX file must make the decoder throw an LTXError that names the file.
 * It may never return different pages. (A flip inside LZ4 data can, rarely, decode to the very
 * same page, e.g. a match offset within a run of zeros; then the file is still right.)
 */

import assert from "node:assert/strict";
import { Decoder, LTXError, type Page } from "../src/ltx/mod.ts";

const fixtures = new URL("./fixtures/", import.meta.url);
const NAME = "corrupt.ltx";

type Outcome = "error" | "same";

async function decodeAll(bytes: Uint8Array): Promise<Page[]> {
  const decoder = new Decoder(ReadableStream.from([bytes]), { name: NAME });
  await decoder.readHeader();
  const pages: Page[] = [];
  for (let page = await decoder.readPage(); page; page = await decoder.readPage()) {
    pages.push(page);
  }
  return pages;
}

/** Decodes damaged bytes: an LTXError naming the file, or exactly the original pages. */
async function outcome(bytes: Uint8Array, original: Page[], what: string): Promise<Outcome> {
  let pages: Page[];
  try {
    pages = await decodeAll(bytes);
  } catch (err) {
    assert.ok(err instanceof LTXError, `${what}: not an LTXError: ${err}`);
    assert.ok(err.message.startsWith(`${NAME}: `), `${what}: ${err.message}`);
    return "error";
  }
  assert.deepEqual(pages, original, `${what}: decoded to different pages without an error`);
  return "same";
}

async function flipSweep(path: string, step: number, masks: number[]) {
  const bytes = await Deno.readFile(new URL(path, fixtures));
  const original = await decodeAll(bytes);
  const counts = { error: 0, same: 0 };
  for (let i = 0; i < bytes.length; i += step) {
    for (const mask of masks) {
      const damaged = bytes.slice();
      damaged[i] ^= mask;
      counts[await outcome(damaged, original, `byte ${i} ^ 0x${mask.toString(16)}`)]++;
    }
  }
  return counts;
}

Deno.test("corruption: every byte of the 366-byte Go-written file, three flip patterns", async () => {
  const counts = await flipSweep(
    "go-written/vfs-a/0000000000000001-0000000000000001.ltx",
    1,
    [0x01, 0x80, 0xff],
  );
  assert.equal(counts.error + counts.same, 366 * 3);
  // Benign flips (same pages) are possible only inside LZ4 data; they must be rare.
  assert.ok(counts.same <= 366 * 3 * 0.02, `too many accepted flips: ${counts.same}`);
});

Deno.test("corruption: dense sample of frame- and block-encoded 4 KiB files", async () => {
  for (
    const path of [
      "node-written-go-verified/rep-frame/ltx/0/0000000000000002-0000000000000002.ltx",
      "node-written-go-verified/rep-block/ltx/0/0000000000000002-0000000000000002.ltx",
    ]
  ) {
    const counts = await flipSweep(path, 5, [0xff]);
    assert.ok(counts.error > 0);
    assert.ok(counts.same <= (counts.error + counts.same) * 0.02, `${path}: ${counts.same}`);
  }
});

Deno.test("corruption: sample of 64 KiB-page files with stored-raw blocks", async () => {
  for (
    const path of [
      "node-written-go-verified/rep-big-frame/ltx/0/0000000000000001-0000000000000001.ltx",
      "node-written-go-verified/rep-big-block/ltx/0/0000000000000001-0000000000000001.ltx",
    ]
  ) {
    const counts = await flipSweep(path, 197, [0x01, 0xff]);
    assert.ok(counts.error > 0);
    assert.ok(counts.same <= (counts.error + counts.same) * 0.02, `${path}: ${counts.same}`);
  }
});

Deno.test("corruption: truncation at every length and bytes after the trailer", async () => {
  const bytes = await Deno.readFile(
    new URL("go-written/vfs-a/0000000000000001-0000000000000001.ltx", fixtures),
  );
  const original = await decodeAll(bytes);
  for (let n = 0; n < bytes.length; n++) {
    assert.equal(await outcome(bytes.subarray(0, n), original, `first ${n} bytes`), "error");
  }
  for (const extra of [Uint8Array.of(0), new Uint8Array(16), bytes.subarray(bytes.length - 16)]) {
    const longer = new Uint8Array(bytes.length + extra.length);
    longer.set(bytes);
    longer.set(extra, bytes.length);
    assert.equal(await outcome(longer, original, `${extra.length} extra bytes`), "error");
  }
});

Deno.test("corruption: swapped, dropped and duplicated 4 KiB regions", async () => {
  const bytes = await Deno.readFile(
    new URL(
      "node-written-go-verified/rep-frame/ltx/0/0000000000000001-0000000000000001.ltx",
      fixtures,
    ),
  );
  const original = await decodeAll(bytes);
  for (let at = 100; at + 200 < bytes.length; at += 1500) {
    const dropped = new Uint8Array(bytes.length - 100);
    dropped.set(bytes.subarray(0, at));
    dropped.set(bytes.subarray(at + 100), at);
    assert.equal(await outcome(dropped, original, `100 bytes dropped at ${at}`), "error");
    const doubled = new Uint8Array(bytes.length + 100);
    doubled.set(bytes.subarray(0, at + 100));
    doubled.set(bytes.subarray(at), at + 100);
    assert.equal(await outcome(doubled, original, `100 bytes repeated at ${at}`), "error");
  }
});
