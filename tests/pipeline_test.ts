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
  codeOnMainThreadToo,
  compactSources,
  handOffPipe,
  keepIdleWorkers,
  openEncoder,
  type PageSink,
  ParallelEncoder,
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
      // The sink copies each chunk, so it may also let the encoder reuse its buffers.
      for (const reuseChunks of [false, true]) {
        const chunks: Uint8Array<ArrayBuffer>[] = [];
        const encoder = new WorkerEncoder(
          new WritableStream({ write: (chunk) => void chunks.push(chunk.slice()) }),
          makeHeader(fields),
          { encoding, reuseChunks },
        );
        for (const page of pages(pageSize, count)) await encoder.encodePage(page.pgno, page.data);
        await encoder.close();
        const actual = new Uint8Array(await new Blob(chunks).arrayBuffer());
        assert.equal(encoder.bytesWritten, expected.length);
        assert.ok(actual.length === expected.length && actual.every((b, i) => b === expected[i]));
      }
    }
    assert.equal(runningWorkers(), 0);
  });
}

/** Pages of random bytes (LZ4's worst case, stored raw in frames) and of patterns, mixed. */
function mixedPages(pageSize: number, pgnos: number[]): Page[] {
  return pgnos.map((pgno) => ({
    pgno,
    data: pgno % 3 === 0
      ? crypto.getRandomValues(new Uint8Array(pageSize))
      : patternPage(pageSize, pgno, 1),
  }));
}

for (const encoding of ["frame", "block"] as PageEncoding[]) {
  Deno.test(`pipeline: the parallel encoder writes the single-thread encoder's bytes (${encoding})`, async () => {
    for (const pageSize of [512, 4096, 65536]) {
      // Batches are 1 MiB: several on each worker, and a short last one.
      const count = pageSize === 65536 ? 70 : pageSize === 4096 ? 1100 : 4500;
      const snapshot = { pageSize, commit: count, minTXID: 1, maxTXID: 1, timestamp: 1e12 };
      const withChecksum = { ...snapshot, flags: 0 };
      const lockPage = Math.floor(0x40000000 / pageSize) + 1;
      const sparse = Array.from({ length: count }, (_, i) => 1 + i * 7).filter((p) =>
        p !== lockPage
      );
      const incremental = {
        pageSize,
        commit: sparse.at(-1)! + 3,
        minTXID: 5,
        maxTXID: 9,
        timestamp: 1e12,
        flags: 0,
        preApplyChecksum: 0x8000000000001234n,
      };
      const cases: [string, typeof incremental | typeof snapshot, Page[], bigint?][] = [
        ["snapshot, NoChecksum", snapshot, mixedPages(pageSize, sparse.map((_, i) => i + 1))],
        ["snapshot with page checksums", withChecksum, pages(pageSize, count)],
        ["incremental", incremental, mixedPages(pageSize, sparse), 0x8000000000005678n],
        ["one page", { ...snapshot, commit: 1 }, pages(pageSize, 1)],
      ];
      // Every case with 4 KiB pages; the other sizes once (each case starts its workers).
      for (const [what, fields, feed, postApply] of pageSize === 4096 ? cases : cases.slice(0, 1)) {
        const expected = await encodeLTX(fields, feed, { encoding, postApplyChecksum: postApply });
        // The sink copies each chunk: with reuseChunks the frames are coded into buffers that
        // go back and forth between the threads instead of fresh pieces.
        const runs = pageSize === 4096 && feed === cases[0][2]
          ? [[2, false], [3, false], [1, true], [2, true]] as const
          : [[2, false], [2, true]] as const;
        for (const [workers, reuseChunks] of runs) {
          const chunks: Uint8Array<ArrayBuffer>[] = [];
          const encoder = new ParallelEncoder(
            new WritableStream({ write: (chunk) => void chunks.push(chunk.slice()) }),
            makeHeader(fields),
            { encoding, workers, reuseChunks },
          );
          for (const page of feed) await encoder.encodePage(page.pgno, page.data);
          const trailer = await encoder.close(postApply);
          const actual = new Uint8Array(await new Blob(chunks).arrayBuffer());
          const label = `${what}, ${pageSize}-byte pages, ${workers} workers` +
            (reuseChunks ? ", reused buffers" : "");
          assert.equal(encoder.bytesWritten, expected.length, label);
          assert.equal(encoder.pageCount, feed.length, label);
          assert.ok(
            actual.length === expected.length && actual.every((b, i) => b === expected[i]),
            label,
          );
          const view = new DataView(expected.buffer, expected.byteOffset + expected.length - 16);
          assert.equal(trailer.fileChecksum, view.getBigUint64(8), label);
          assert.equal(runningWorkers(), 0, label);
        }
      }
    }
  });
}

Deno.test("pipeline: the parallel encoder's shared slots take a new batch only once the last one's frames are written", async () => {
  // Small batches: many more than the slots of each worker's memory, so every slot is used
  // again and again; consumers that take their time (and keep what they read, or not).
  const fields = { pageSize: 4096, commit: 700, minTXID: 1, maxTXID: 1, timestamp: 1e12 };
  const feed = mixedPages(4096, pages(4096, 700).map((page) => page.pgno));
  const expected = await encodeLTX(fields, feed);
  const slowly = () => new Promise((resolve) => setTimeout(resolve, 0));
  const runs = [1, 2, 3].flatMap((workers) =>
    [true, false].flatMap((reuseChunks) =>
      [false, true].map((helps) => ({ workers, reuseChunks, helps }))
    )
  );
  for (const { workers, reuseChunks, helps } of runs) {
    const label = `${workers} workers${reuseChunks ? ", reused chunks" : ""}` +
      (helps ? ", the main thread helps" : "");
    const pause = helps ? () => Promise.resolve() : slowly;
    const through = reuseChunks ? handOffPipe() : new TransformStream<Uint8Array, Uint8Array>();
    const collected = (async () => {
      const chunks: Uint8Array[] = [];
      for await (const chunk of through.readable) {
        await slowly();
        // A consumer that may keep chunks keeps them as they are, and checks them at the end.
        chunks.push(reuseChunks ? chunk.slice() : chunk);
      }
      return new Uint8Array(await new Blob(chunks as Uint8Array<ArrayBuffer>[]).arrayBuffer());
    })();
    // The main thread codes a batch itself whenever its worker has two to code: fed
    // without pauses, it does so often. (Read when the encoder opens.)
    codeOnMainThreadToo(helps);
    const encoder = new ParallelEncoder(through.writable, makeHeader(fields), {
      workers,
      reuseChunks,
      batchBytes: 3 * 4096,
    });
    codeOnMainThreadToo(false);
    for (let at = 0; at < feed.length;) {
      const n = Math.min(feed.length - at, 1 + (at % 7));
      await encoder.encodePagesFrom(feed[at].pgno, n, async (into, first, count) => {
        await pause();
        for (let i = 0; i < count; i++) into.set(feed[first - 1 + i].data, i * 4096);
      });
      at += n;
    }
    await encoder.close();
    const actual = await collected;
    assert.ok(
      actual.length === expected.length && actual.every((b, i) => b === expected[i]),
      label,
    );
  }
  assert.equal(runningWorkers(), 0);
});

Deno.test("pipeline: a handOffPipe write resolves once the consumer reads on; encoders reusing their buffers write the same bytes through it", async () => {
  const pipe = handOffPipe();
  const writer = pipe.writable.getWriter();
  const reader = pipe.readable.getReader();
  let firstDone = false;
  const first = writer.write(Uint8Array.of(1, 2)).then(() => firstDone = true);
  assert.deepEqual((await reader.read()).value, Uint8Array.of(1, 2));
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(firstDone, false, "the consumer still holds the first chunk");
  const next = reader.read();
  await first;
  const second = writer.write(Uint8Array.of(3));
  assert.deepEqual((await next).value, Uint8Array.of(3));
  const closed = writer.close();
  assert.equal((await reader.read()).done, true);
  await Promise.all([second, closed]);

  // A consumer that cancels fails the writes; an aborted writer errors the consumer's read.
  const cancelled = handOffPipe();
  const w = cancelled.writable.getWriter();
  const write = w.write(Uint8Array.of(1));
  await cancelled.readable.cancel(new Error("consumer gone"));
  assert.equal(await outcome(() => write), "Error: consumer gone");
  const aborted = handOffPipe();
  const read = aborted.readable.getReader().read();
  await aborted.writable.abort(new Error("encoder failed"));
  assert.equal(await outcome(() => read), "Error: encoder failed");

  // Every encoder, its buffers reused, through the pipe to a consumer that copies each chunk.
  const fields = { pageSize: 4096, commit: 600, minTXID: 1, maxTXID: 1, timestamp: 1e12 };
  const feed = mixedPages(4096, pages(4096, 600).map((page) => page.pgno));
  const expected = await encodeLTX(fields, feed);
  for (const where of ["thread", "worker", "parallel"] as const) {
    const through = handOffPipe();
    // Copies each chunk before it reads the next, as the directory replica's write does.
    const collected = (async () => {
      const copies: Uint8Array<ArrayBuffer>[] = [];
      for await (const chunk of through.readable) copies.push(chunk.slice());
      return await new Blob(copies).arrayBuffer();
    })();
    const encoder = where === "parallel"
      ? new ParallelEncoder(through.writable, makeHeader(fields), { workers: 2, reuseChunks: true })
      : openEncoder(through.writable, makeHeader(fields), { where, reuseChunks: true });
    for (const page of feed) await encoder.encodePage(page.pgno, page.data);
    await encoder.close();
    const actual = new Uint8Array(await collected);
    assert.ok(
      actual.length === expected.length && actual.every((b, i) => b === expected[i]),
      where,
    );
  }
  assert.equal(runningWorkers(), 0);
});

Deno.test("pipeline: encodePagesFrom fills the encoders' own batches and writes encodePage's bytes", async () => {
  const pageSize = 4096;
  const count = 900; // three 1 MiB batches and a short one, split across fills at odd places
  const fields = { pageSize, commit: count + 5, minTXID: 2, maxTXID: 2, timestamp: 1e12 };
  const feed = mixedPages(pageSize, Array.from({ length: count }, (_, i) => 3 + i));
  const expected = await encodeLTX(fields, feed);
  const image = new Uint8Array(count * pageSize);
  feed.forEach((page, i) => image.set(page.data, i * pageSize));
  const fills: [number, number][] = [];
  /** Writes the pages as a read of `image` would, recording the calls. */
  const fill = (into: Uint8Array, first: number, n: number) => {
    fills.push([first, n]);
    assert.equal(into.length, n * pageSize);
    into.set(image.subarray((first - 3) * pageSize, (first - 3 + n) * pageSize));
    return Promise.resolve();
  };
  const encoders: [string, (sink: WritableStream<Uint8Array>) => PageSink][] = [
    ["in-thread", (sink) => new Encoder(sink, makeHeader(fields))],
    ["worker", (sink) => new WorkerEncoder(sink, makeHeader(fields))],
    ["parallel, 1 worker", (sink) => new ParallelEncoder(sink, makeHeader(fields), { workers: 1 })],
    [
      "parallel, 2 workers",
      (sink) => new ParallelEncoder(sink, makeHeader(fields), { workers: 2 }),
    ],
  ];
  for (const [what, open] of encoders) {
    const chunks: Uint8Array<ArrayBuffer>[] = [];
    const encoder = open(new WritableStream({ write: (chunk) => void chunks.push(chunk.slice()) }));
    fills.length = 0;
    await encoder.encodePage(3, feed[0].data);
    await encoder.encodePagesFrom(4, 400, fill);
    await encoder.encodePages(404, 2, image.subarray(401 * pageSize, 403 * pageSize));
    await encoder.encodePagesFrom(406, count - 403, fill);
    await encoder.close();
    const actual = new Uint8Array(await new Blob(chunks).arrayBuffer());
    assert.equal(encoder.pageCount, count, what);
    assert.ok(
      actual.length === expected.length && actual.every((b, i) => b === expected[i]),
      what,
    );
    // Every page filled once, in order, at most a batch (1 MiB) per call.
    let next = 4;
    for (const [first, n] of fills) {
      if (first === 406) next = 406;
      assert.equal(first, next, what);
      assert.ok(n >= 1 && n <= 256, what);
      next += n;
    }
    assert.equal(next, count + 3, what);
  }

  // A failing fill fails the call and the encoder, and aborts the sink; a page that may not
  // come next is refused before anything is filled.
  for (const [what, open] of encoders) {
    let aborted: unknown;
    const encoder = open(new WritableStream({ abort: (reason) => void (aborted = reason) }));
    const failure = new Error("disk gone");
    assert.equal(
      await outcome(() => encoder.encodePagesFrom(1, 300, () => Promise.reject(failure))),
      "Error: disk gone",
      what,
    );
    assert.equal(aborted, failure, what);
    assert.match(await outcome(() => encoder.encodePage(2, feed[0].data)), /failed/, what);

    const other = open(new WritableStream());
    let filled = 0;
    const counting = () => {
      filled++;
      return Promise.resolve();
    };
    assert.match(
      await outcome(() => other.encodePagesFrom(fields.commit, 2, counting)),
      /LTXFormatError: .*page 904.*beyond Commit 905|LTXFormatError: .*page 906.*beyond Commit/,
      what,
    );
    assert.equal(filled, 0, what);
  }
  assert.equal(runningWorkers(), 0);
});

Deno.test("pipeline: openEncoder spreads a large output over the workers asked for", async () => {
  const header = makeHeader({ pageSize: 4096, commit: 10, minTXID: 1, maxTXID: 1 });
  const open = (options: Parameters<typeof openEncoder>[2]) => {
    const encoder = openEncoder(new WritableStream(), header, options);
    const kind = encoder.constructor.name;
    return encoder.abort().then(() => kind);
  };
  assert.equal(await open({ expectedBytes: 40_000, workers: 2 }), "Encoder");
  assert.equal(await open({ expectedBytes: 16 << 20, workers: 2 }), "WorkerEncoder");
  // A large output is coded in batches of frames, on as many workers as asked for and cores
  // allow, one at least.
  assert.equal(await open({ expectedBytes: 64 << 20, workers: 2 }), "ParallelEncoder");
  assert.equal(await open({ expectedBytes: 64 << 20 }), "ParallelEncoder");
  assert.equal(await open({ where: "worker" }), "WorkerEncoder");
  assert.equal(runningWorkers(), 0);
});

/** `bytes` as a byte stream (read in BYOB mode by the worker decoder's pump). */
function byteStreamOf(bytes: Uint8Array, chunk = 100_000): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream({
    type: "bytes",
    pull(controller) {
      const request = controller.byobRequest;
      if (at >= bytes.length) {
        controller.close();
        request?.respond(0);
        return;
      }
      if (request?.view) {
        const view = new Uint8Array(request.view.buffer, request.view.byteOffset);
        const n = Math.min(request.view.byteLength, chunk, bytes.length - at);
        view.set(bytes.subarray(at, at + n));
        at += n;
        request.respond(n);
      } else {
        controller.enqueue(bytes.slice(at, at + chunk));
        at += chunk;
      }
    },
  });
}

Deno.test("pipeline: the worker decoder's readPageInto and readPageView give readPage's pages", async () => {
  for (const [pageSize, count] of [[4096, 700], [65536, 40]]) {
    const bytes = await encodeLTX(
      { pageSize, commit: count, minTXID: 1, maxTXID: 1 },
      pages(pageSize, count),
    );
    const expected = await pagesOf(new Decoder(streamOf(bytes)));
    for (const source of [() => streamOf(bytes), () => byteStreamOf(bytes)]) {
      const into = new WorkerDecoder(source());
      const buffer = new Uint8Array(pageSize + 5);
      const got: Page[] = [];
      for (let pgno = await into.readPageInto(buffer, 5); pgno !== null;) {
        got.push({ pgno, data: buffer.slice(5) });
        pgno = await into.readPageInto(buffer, 5);
      }
      assert.deepEqual(got, expected.pages, `readPageInto, ${pageSize}`);
      assert.deepEqual(into.trailer, expected.trailer);

      const view = new WorkerDecoder(source());
      got.length = 0;
      for (let page = await view.readPageView(); page; page = await view.readPageView()) {
        got.push({ pgno: page.pgno, data: page.data.slice() });
      }
      assert.deepEqual(got, expected.pages, `readPageView, ${pageSize}`);
      assert.deepEqual(view.trailer, expected.trailer);
      assert.deepEqual(await pagesOf(new WorkerDecoder(source())), expected);
    }
  }
  assert.equal(runningWorkers(), 0);
});

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
    const run = async (make: (sink: WritableStream<Uint8Array>) => PageSink) => {
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
    const parallel = await outcome(() =>
      run((sink) => new ParallelEncoder(sink, header, { name: "e", workers: 2 }))
    );
    assert.equal(parallel, expected, `${what}, parallel`);
  }
  for (
    const make of [
      () => new WorkerEncoder(new WritableStream(), header),
      () => new ParallelEncoder(new WritableStream(), header, { workers: 2 }),
    ]
  ) {
    const snapshotMissingEnd = await outcome(async () => {
      const encoder = make();
      for (const page of pages(4096, 5)) await encoder.encodePage(page.pgno, page.data);
      await encoder.close();
    });
    assert.match(snapshotMissingEnd, /pages 6…10 are missing/);
  }
  assert.throws(
    () => new ParallelEncoder(new WritableStream(), { ...header, pageSize: 1000 }, { workers: 2 }),
    LTXFormatError,
  );
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
  await assert.rejects(async () => {
    const encoder = new ParallelEncoder(
      new WritableStream({ write: () => Promise.reject(broken) }),
      { ...header, commit: 2000 },
      { workers: 2 },
    );
    for (const page of pages(4096, 2000)) await encoder.encodePage(page.pgno, page.data);
    await encoder.close();
  }, (err) => err === broken);
  // Aborted midway: the sink sees the reason, the workers stop.
  const aborted: unknown[] = [];
  const encoder = new ParallelEncoder(
    new WritableStream({ abort: (reason) => void aborted.push(reason) }),
    { ...header, commit: 2000 },
    { workers: 2 },
  );
  for (const page of pages(4096, 1000)) await encoder.encodePage(page.pgno, page.data);
  await encoder.abort(broken);
  assert.deepEqual(aborted, [broken]);
  await assert.rejects(() => encoder.encodePage(1001, patternPage(4096, 1001)), LTXError);
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

Deno.test("pipeline: keepIdleWorkers keeps one worker for the next job, and 0 lets it go", async () => {
  const bytes = await Deno.readFile(join(
    ROOT,
    "tests/fixtures/node-written-go-verified/rep-block/ltx/9/0000000000000001-0000000000000001.ltx",
  ));
  const decode = () => pagesOf(new WorkerDecoder(streamOf(bytes), { name: "fixture" }));
  keepIdleWorkers(60_000);
  try {
    const first = await decode();
    assert.equal(runningWorkers(), 1, "the worker waits for the next job");
    assert.deepEqual(await decode(), first);
    assert.equal(runningWorkers(), 1, "the next job ran on the same worker");
  } finally {
    keepIdleWorkers(0);
  }
  assert.equal(runningWorkers(), 0, "terminated once lingering is turned off");
});
