/**
 * The codec pipeline (src/pipeline) against the in-thread codec it stands in for: the same
 * pages from every fixture file, the same bytes out of the encoder in both encodings, the same
 * error classes and messages for corrupt, truncated and misused input, and no worker left
 * running once the jobs end (Deno's sanitizers would also catch a leaked worker).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  compact,
  Decoder,
  Encoder,
  type Header,
  HEADER_FLAG_NO_CHECKSUM,
  LTXChecksumError,
  LTXError,
  LTXFormatError,
  type Page,
  type PageEncoding,
} from "../src/ltx/mod.ts";
import {
  compactSources,
  runningWorkers,
  WorkerDecoder,
  WorkerEncoder,
} from "../src/pipeline/mod.ts";
import { encodeLTX, makeHeader, patternPage } from "./_restore_helpers.ts";
import { ROOT } from "./_sluice.ts";

function streamOf(bytes: Uint8Array, chunk = 65_000): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream({
    pull(controller) {
      if (at >= bytes.length) return controller.close();
      controller.enqueue(bytes.slice(at, at + chunk));
      at += chunk;
    },
  });
}

async function pagesOf(
  decoder: Pick<Decoder, "readHeader" | "readPage" | "trailer">,
): Promise<{ header: Header; pages: Page[]; trailer: unknown }> {
  const header = await decoder.readHeader();
  const pages: Page[] = [];
  for (let page = await decoder.readPage(); page; page = await decoder.readPage()) {
    pages.push({ pgno: page.pgno, data: page.data.slice() });
  }
  return { header, pages, trailer: decoder.trailer };
}

async function outcome(run: () => Promise<unknown>): Promise<string> {
  try {
    await run();
    return "ok";
  } catch (err) {
    return `${(err as Error).constructor.name}: ${(err as Error).message}`;
  }
}

async function* fixtureFiles(dir: string): AsyncGenerator<string> {
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) yield* fixtureFiles(path);
    else if (entry.name.endsWith(".ltx")) yield path;
  }
}

/** A database image of `count` pages as a snapshot's pages. */
function pages(pageSize: number, count: number, version = 0): Page[] {
  const out: Page[] = [];
  for (let pgno = 1; pgno <= count; pgno++) {
    out.push({ pgno, data: patternPage(pageSize, pgno, version) });
  }
  return out;
}

Deno.test("pipeline: the worker decodes every fixture file exactly like the in-thread decoder", async () => {
  let files = 0;
  for await (const path of fixtureFiles(join(ROOT, "tests", "fixtures"))) {
    const bytes = await Deno.readFile(path);
    const expected = await outcome(() => pagesOf(new Decoder(streamOf(bytes), { name: path })));
    const actual = await outcome(() => pagesOf(new WorkerDecoder(streamOf(bytes), { name: path })));
    assert.equal(actual, expected, path);
    if (expected === "ok") {
      const a = await pagesOf(new Decoder(streamOf(bytes), { name: path }));
      const b = await pagesOf(new WorkerDecoder(streamOf(bytes, 1 << 20), { name: path }));
      assert.deepEqual(b, a, path);
    }
    files++;
  }
  assert.ok(files >= 10, `only ${files} fixture files`);
  assert.equal(runningWorkers(), 0);
});

for (const encoding of ["frame", "block"] as PageEncoding[]) {
  Deno.test(`pipeline: the worker encoder writes the in-thread encoder's bytes (${encoding})`, async () => {
    for (const pageSize of [512, 4096, 65536]) {
      const count = pageSize === 65536 ? 40 : 700; // more than one batch and one output chunk
      const fields = {
        pageSize,
        commit: count,
        minTXID: 1,
        maxTXID: 1,
        timestamp: 1_700_000_000_000,
      };
      const expected = await encodeLTX(fields, pages(pageSize, count), { encoding });
      const chunks: Uint8Array<ArrayBuffer>[] = [];
      const encoder = new WorkerEncoder(
        new WritableStream({ write: (chunk) => void chunks.push(chunk.slice()) }),
        makeHeader(fields),
        { encoding },
      );
      for (const page of pages(pageSize, count)) await encoder.encodePage(page.pgno, page.data);
      await encoder.close();
      const actual = new Uint8Array(await new Blob(chunks).arrayBuffer());
      assert.equal(encoder.bytesWritten, expected.length);
      assert.ok(actual.length === expected.length && actual.every((b, i) => b === expected[i]));
    }
    assert.equal(runningWorkers(), 0);
  });
}

Deno.test("pipeline: corrupt and truncated input fail with the in-thread errors", async () => {
  const fields = { pageSize: 4096, commit: 300, minTXID: 1, maxTXID: 1 };
  const good = await encodeLTX(fields, pages(4096, 300));
  const flipped = good.slice();
  flipped[good.length - 3] ^= 0xff; // the file checksum
  const damaged = good.slice();
  damaged[5000] ^= 0x55; // inside a page frame
  const cases: [string, Uint8Array][] = [
    ["checksum", flipped],
    ["frame", damaged],
    ["truncated", good.subarray(0, good.length - 5000)],
    ["empty", new Uint8Array(0)],
  ];
  for (const [what, bytes] of cases) {
    const expected = await outcome(() => pagesOf(new Decoder(streamOf(bytes), { name: what })));
    const actual = await outcome(() => pagesOf(new WorkerDecoder(streamOf(bytes), { name: what })));
    assert.notEqual(expected, "ok", what);
    assert.equal(actual, expected, what);
  }
  const checksum = await outcome(() =>
    pagesOf(new WorkerDecoder(streamOf(flipped), { name: "x" }))
  );
  assert.match(checksum, new RegExp(`^${LTXChecksumError.name}`));

  // A source that fails surfaces its own error, after the pages before it.
  const failing = new Error("the network went away");
  let sent = false;
  const source = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (!sent) {
        sent = true;
        controller.enqueue(good.slice(0, 100_000));
      } else controller.error(failing);
    },
  });
  const decoder = new WorkerDecoder(source, { name: "net" });
  await decoder.readHeader();
  let read = 0;
  await assert.rejects(async () => {
    while (await decoder.readPage()) read++;
  }, (err) => err === failing);
  assert.ok(read > 0);
  assert.equal(runningWorkers(), 0);
});

Deno.test("pipeline: misuse, cancel and bad pages give the in-thread messages", async () => {
  const fields = { pageSize: 4096, commit: 10, minTXID: 1, maxTXID: 1 };
  const bytes = await encodeLTX(fields, pages(4096, 10));
  const decoder = new WorkerDecoder(streamOf(bytes), { name: "c" });
  await decoder.readHeader();
  await decoder.readPage();
  await decoder.cancel();
  await assert.rejects(() => decoder.readPage(), LTXError);
  assert.equal(runningWorkers(), 0);

  const header = makeHeader(fields);
  for (
    const [what, feed] of [
      ["wrong size", [{ pgno: 1, data: new Uint8Array(100) }]],
      ["gap", [{ pgno: 1, data: patternPage(4096, 1) }, { pgno: 3, data: patternPage(4096, 3) }]],
      ["beyond commit", pages(4096, 11)],
    ] as [string, Page[]][]
  ) {
    const run = async (make: (sink: WritableStream<Uint8Array>) => Encoder | WorkerEncoder) => {
      const encoder = make(new WritableStream());
      for (const page of feed) await encoder.encodePage(page.pgno, page.data);
      await encoder.close();
    };
    const expected = await outcome(() => run((sink) => new Encoder(sink, header, { name: "e" })));
    const actual = await outcome(() =>
      run((sink) => new WorkerEncoder(sink, header, { name: "e" }))
    );
    assert.match(expected, new RegExp(`^${LTXFormatError.name}`), what);
    assert.equal(actual, expected, what);
  }
  const snapshotMissingEnd = await outcome(async () => {
    const encoder = new WorkerEncoder(new WritableStream(), header);
    for (const page of pages(4096, 5)) await encoder.encodePage(page.pgno, page.data);
    await encoder.close();
  });
  assert.match(snapshotMissingEnd, /pages 6…10 are missing/);
  assert.throws(
    () => new WorkerEncoder(new WritableStream(), { ...header, pageSize: 1000 }),
    LTXFormatError,
  );
  // A sink that fails surfaces its error.
  const broken = new Error("disk full");
  await assert.rejects(async () => {
    const encoder = new WorkerEncoder(
      new WritableStream({ write: () => Promise.reject(broken) }),
      { ...header, commit: 600 },
    );
    for (const page of pages(4096, 600)) await encoder.encodePage(page.pgno, page.data);
    await encoder.close();
  }, (err) => err === broken);
  assert.equal(runningWorkers(), 0);
});

Deno.test("pipeline: compactSources writes what ltx's compact writes", async () => {
  const base = await encodeLTX(
    { pageSize: 4096, commit: 500, minTXID: 1, maxTXID: 1 },
    pages(4096, 500),
  );
  const delta = await encodeLTX(
    { pageSize: 4096, commit: 520, minTXID: 2, maxTXID: 2, flags: HEADER_FLAG_NO_CHECKSUM },
    [...pages(4096, 520, 1)].filter((p) => p.pgno % 3 === 0 || p.pgno > 500),
  );
  const collect = async (run: (sink: WritableStream<Uint8Array>) => Promise<unknown>) => {
    const chunks: Uint8Array<ArrayBuffer>[] = [];
    await run(new WritableStream({ write: (chunk) => void chunks.push(chunk.slice()) }));
    return new Uint8Array(await new Blob(chunks).arrayBuffer());
  };
  const expected = await collect((sink) =>
    compact([new Decoder(streamOf(base)), new Decoder(streamOf(delta))], sink)
  );
  const actual = await collect((sink) =>
    compactSources(
      [new WorkerDecoder(streamOf(base)), new WorkerDecoder(streamOf(delta))],
      sink,
      { where: "worker" },
    )
  );
  assert.ok(actual.length === expected.length && actual.every((b, i) => b === expected[i]));
  assert.equal(runningWorkers(), 0);
});
