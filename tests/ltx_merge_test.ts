/**
 * Merging and compaction (FORMAT.md §3.1): latest input wins, truncation by the last Commit, TXID
 * contiguity, page-size equality, snapshot completeness, checksum verification of every input
 * before the output closes, and the output header.
 */

import assert from "node:assert/strict";
import {
  compact,
  Decoder,
  Encoder,
  type Header,
  HEADER_FLAG_NO_CHECKSUM,
  LTXChecksumError,
  LTXError,
  LTXFormatError,
  mergeDecoders,
  type Page,
  type PageEncoding,
} from "../src/ltx/mod.ts";

function header(fields: Partial<Header>): Header {
  return {
    flags: HEADER_FLAG_NO_CHECKSUM,
    pageSize: 4096,
    commit: 1,
    minTXID: 1,
    maxTXID: 1,
    timestamp: 1_700_000_000_000,
    preApplyChecksum: 0n,
    walOffset: 0,
    walSize: 0,
    walSalt1: 0,
    walSalt2: 0,
    nodeID: 0n,
    ...fields,
  };
}

/** A page whose bytes say which file wrote it. */
function page(pgno: number, version: number, pageSize = 4096): Page {
  const data = new Uint8Array(pageSize);
  data[0] = pgno & 0xff;
  data[1] = version;
  data.fill(version, 2, 64);
  return { pgno, data };
}

async function encode(h: Header, pages: Page[], encoding?: PageEncoding): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const encoder = new Encoder(new WritableStream({ write: (c) => void chunks.push(c) }), h, {
    encoding,
  });
  for (const p of pages) await encoder.encodePage(p.pgno, p.data);
  await encoder.close();
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

interface Input {
  name: string;
  bytes: Uint8Array;
  cancelled: boolean;
}

function decoders(inputs: Input[]): Decoder[] {
  return inputs.map((input) => {
    let offset = 0;
    return new Decoder(
      new ReadableStream({
        // Small chunks on demand, so an early stop leaves the stream unfinished.
        pull(controller) {
          const at = offset;
          offset += 64;
          controller.enqueue(input.bytes.slice(at, at + 64));
          if (offset >= input.bytes.length) controller.close();
        },
        cancel() {
          input.cancelled = true;
        },
      }),
      { name: input.name },
    );
  });
}

async function file(name: string, h: Header, pages: Page[], encoding?: PageEncoding) {
  return { name, bytes: await encode(h, pages, encoding), cancelled: false };
}

/** The merged pages, copied: each page the merge yields is valid only until the next one. */
async function collect(pages: AsyncIterable<Page>): Promise<Page[]> {
  const out: Page[] = [];
  for await (const p of pages) out.push({ pgno: p.pgno, data: p.data.slice() });
  return out;
}

/** A snapshot of 6 pages (TXID 1), then two incrementals, then a shrink to 4 pages. */
async function chain() {
  return [
    await file(
      "a.ltx",
      header({ commit: 6, timestamp: 10 }),
      [1, 2, 3, 4, 5, 6].map((p) => page(p, 1)),
    ),
    await file(
      "b.ltx",
      header({ minTXID: 2, maxTXID: 3, commit: 7, timestamp: 20 }),
      [page(2, 2), page(5, 2), page(7, 2)],
      "block",
    ),
    await file(
      "c.ltx",
      header({ minTXID: 4, maxTXID: 4, commit: 4, timestamp: 30 }),
      [page(2, 3), page(3, 3)],
    ),
  ];
}

Deno.test("merge: latest input wins and the last Commit truncates", async () => {
  const inputs = await chain();
  const merged = await mergeDecoders(decoders(inputs));
  const pages = await collect(merged.pages);
  assert.deepEqual(pages.map((p) => [p.pgno, p.data[1]]), [[1, 1], [2, 3], [3, 3], [4, 1]]);
  assert.equal(merged.trailers().length, 3);
  assert.ok(inputs.every((i) => !i.cancelled));
  assert.deepEqual(merged.header, header({ minTXID: 1, maxTXID: 4, commit: 4, timestamp: 30 }));
});

Deno.test("merge: without the shrink, pages grow to the last Commit", async () => {
  const [a, b] = await chain();
  const merged = await mergeDecoders(decoders([a, b]));
  const pages = await collect(merged.pages);
  assert.deepEqual(
    pages.map((p) => [p.pgno, p.data[1]]),
    [[1, 1], [2, 2], [3, 1], [4, 1], [5, 2], [6, 1], [7, 2]],
  );
  assert.equal(merged.header.commit, 7);
  assert.equal(merged.header.maxTXID, 3);
});

Deno.test("merge: overlapping inputs are fine, gaps are not", async () => {
  const a = await file("a.ltx", header({ commit: 2 }), [page(1, 1), page(2, 1)]);
  const overlap = await file(
    "o.ltx",
    header({ minTXID: 1, maxTXID: 3, commit: 2 }),
    [page(1, 9), page(2, 9)],
  );
  const merged = await mergeDecoders(decoders([a, overlap]));
  assert.deepEqual((await collect(merged.pages)).map((p) => p.data[1]), [9, 9]);

  const gap = await file("gap.ltx", header({ minTXID: 3, maxTXID: 3, commit: 2 }), [page(1, 2)]);
  const inputs = [a, gap];
  await assert.rejects(mergeDecoders(decoders(inputs)), (err: Error) => {
    assert.ok(err instanceof LTXError);
    assert.match(err.message, /non-contiguous LTX files: a\.ltx .* gap\.ltx/);
    return true;
  });
  assert.ok(inputs.every((i) => i.cancelled), "inputs are cancelled on error");

  // The next file must reach beyond the previous one.
  const inside = await file("in.ltx", header({ minTXID: 1, maxTXID: 1, commit: 2 }), [
    page(1, 2),
    page(2, 2),
  ]);
  await assert.rejects(mergeDecoders(decoders([overlap, inside])), /non-contiguous/);
});

Deno.test("merge: mismatched page sizes are rejected", async () => {
  const a = await file("a.ltx", header({ commit: 1 }), [page(1, 1)]);
  const b = await file(
    "b.ltx",
    header({ minTXID: 2, maxTXID: 2, commit: 1, pageSize: 1024 }),
    [page(1, 2, 1024)],
  );
  await assert.rejects(mergeDecoders(decoders([a, b])), /mismatched page sizes: a\.ltx has 4096/);
  await assert.rejects(mergeDecoders([]), LTXError);
});

Deno.test("merge: a merge from TXID 1 must form a complete database", async () => {
  const a = await file("a.ltx", header({ commit: 2 }), [page(1, 1), page(2, 1)]);
  // Grows to 4 pages but sends only page 4: page 3 is missing (a writer without growth pages).
  const b = await file("b.ltx", header({ minTXID: 2, maxTXID: 2, commit: 4 }), [page(4, 2)]);
  const merged = await mergeDecoders(decoders([a, b]));
  await assert.rejects(collect(merged.pages), (err: Error) => {
    assert.ok(err instanceof LTXFormatError);
    assert.match(err.message, /page 3 of 4 is in none of the files/);
    return true;
  });
  // Missing pages at the end.
  const c = await file("c.ltx", header({ minTXID: 2, maxTXID: 2, commit: 5 }), [page(3, 2)]);
  const tail = await mergeDecoders(decoders([a, c]));
  await assert.rejects(collect(tail.pages), /pages 4…5 are in none/);
});

Deno.test("merge: an incremental-only merge may be sparse", async () => {
  const b = await file("b.ltx", header({ minTXID: 5, maxTXID: 5, commit: 9 }), [page(4, 1)]);
  const c = await file("c.ltx", header({ minTXID: 6, maxTXID: 7, commit: 9 }), [page(8, 2)]);
  const merged = await mergeDecoders(decoders([b, c]));
  assert.deepEqual((await collect(merged.pages)).map((p) => p.pgno), [4, 8]);
  assert.equal(merged.header.minTXID, 5);
});

Deno.test("merge: a corrupt input fails the merge before it ends, and all inputs are cancelled", async () => {
  const inputs = await chain();
  const last = inputs[2].bytes;
  last[last.length - 1] ^= 1; // file checksum
  const merged = await mergeDecoders(decoders(inputs));
  await assert.rejects(collect(merged.pages), (err: Error) => {
    assert.ok(err instanceof LTXChecksumError);
    assert.match(err.message, /^c\.ltx: file checksum mismatch/);
    return true;
  });
  assert.throws(() => merged.trailers(), /before its pages were read to the end/);
});

Deno.test("merge: stopping early cancels every input", async () => {
  const inputs = await chain();
  const merged = await mergeDecoders(decoders(inputs));
  for await (const p of merged.pages) {
    assert.equal(p.pgno, 1);
    break;
  }
  assert.ok(inputs.some((i) => i.cancelled));
  assert.throws(() => merged.trailers(), LTXError);
});

Deno.test("compact: output header per FORMAT.md §3.1 and identical pages in both encodings", async () => {
  for (const encoding of ["frame", "block"] as const) {
    const inputs = await chain();
    const chunks: Uint8Array[] = [];
    const out = await compact(
      decoders(inputs),
      new WritableStream({ write: (c) => void chunks.push(c) }),
      { encoding },
    );
    assert.deepEqual(out, header({ minTXID: 1, maxTXID: 4, commit: 4, timestamp: 30 }));
    const decoder = new Decoder(ReadableStream.from(chunks), { name: "compacted.ltx" });
    assert.deepEqual(await decoder.readHeader(), out);
    const pages: Page[] = [];
    for (let p = await decoder.readPage(); p; p = await decoder.readPage()) pages.push(p);
    assert.deepEqual(pages.map((p) => [p.pgno, p.data[1]]), [[1, 1], [2, 3], [3, 3], [4, 1]]);
    assert.equal(decoder.trailer?.postApplyChecksum, 0n);
  }
});

Deno.test("compact: an input failing its checksum aborts the output", async () => {
  const inputs = await chain();
  inputs[1].bytes[inputs[1].bytes.length - 20] ^= 0x40; // index length field
  let aborted = false;
  let closed = false;
  await assert.rejects(
    compact(
      decoders(inputs),
      new WritableStream({ abort: () => void (aborted = true), close: () => void (closed = true) }),
    ),
    (err: Error) => err instanceof LTXError && err.message.startsWith("b.ltx: "),
  );
  assert.ok(aborted);
  assert.ok(!closed);
});

Deno.test("compact: incremental inputs compact into an incremental file", async () => {
  const [, b, c] = await chain();
  const chunks: Uint8Array[] = [];
  const out = await compact(
    decoders([b, c]),
    new WritableStream({ write: (x) => void chunks.push(x) }),
  );
  assert.equal(out.minTXID, 2);
  assert.equal(out.maxTXID, 4);
  assert.equal(out.commit, 4);
  const decoder = new Decoder(ReadableStream.from(chunks), { name: "l1.ltx" });
  await decoder.readHeader();
  const pgnos: number[] = [];
  for (let p = await decoder.readPage(); p; p = await decoder.readPage()) pgnos.push(p.pgno);
  assert.deepEqual(pgnos, [2, 3]); // pages 5 and 7 are beyond the final Commit 4
});
