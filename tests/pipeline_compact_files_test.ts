/**
 * `compactFiles` (src/pipeline): a compaction of files on this machine run wholly on the codec
 * worker against the stream path it replaces (`compactSources` over in-thread decoders): the
 * same bytes out, the same error classes and messages for corrupt, missing and misordered
 * input, the output aborted on failure, and every file the worker opened closed by the time
 * the call settles (counted in /proc/self/fd, which the worker's descriptors are part of).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  Decoder,
  HEADER_FLAG_NO_CHECKSUM,
  LTXChecksumError,
  type Page,
  type PageEncoding,
} from "../src/ltx/mod.ts";
import {
  compactFiles,
  compactSources,
  FileCompaction,
  type FileInput,
  runningWorkers,
} from "../src/pipeline/mod.ts";
import { encodeLTX, patternPage, withTempDir } from "./_restore_helpers.ts";

/** Random-ish page contents: some compressible, some not, like blobs in a real database. */
function pagesOf(pageSize: number, pgnos: Iterable<number>, version: number): Page[] {
  const pages: Page[] = [];
  for (const pgno of pgnos) {
    const data = patternPage(pageSize, pgno, version);
    if ((pgno + version) % 3 === 0) crypto.getRandomValues(data.subarray(64, pageSize / 2));
    pages.push({ pgno, data });
  }
  return pages;
}

function randomPages(pageSize: number, pgnos: number[]): Page[] {
  return pgnos.map((pgno) => {
    const data = new Uint8Array(pageSize);
    for (let at = 0; at < pageSize; at += 65536) {
      crypto.getRandomValues(data.subarray(at, Math.min(pageSize, at + 65536)));
    }
    if (pgno % 2 === 0) data.fill(pgno & 0xff, 0, pageSize / 2); // half compressible
    return { pgno, data };
  });
}

function range(from: number, to: number, step = 1): number[] {
  const out: number[] = [];
  for (let n = from; n <= to; n += step) out.push(n);
  return out;
}

/** A snapshot, deltas that overwrite, grow and shrink the database, written to `dir`. */
async function writeInputs(dir: string, encoding: PageEncoding): Promise<FileInput[]> {
  const pageSize = 4096;
  const files: { commit: number; pgnos: number[] }[] = [
    { commit: 300, pgnos: range(1, 300) },
    { commit: 320, pgnos: [...range(2, 300, 7), ...range(301, 320)] },
    { commit: 320, pgnos: range(5, 60) },
    { commit: 250, pgnos: range(100, 250, 3) }, // shrinks: pages above 250 are dropped
    { commit: 260, pgnos: range(240, 260) },
  ];
  const inputs: FileInput[] = [];
  for (const [i, file] of files.entries()) {
    const txid = i + 1;
    const bytes = await encodeLTX(
      {
        pageSize,
        commit: file.commit,
        minTXID: txid,
        maxTXID: txid,
        flags: HEADER_FLAG_NO_CHECKSUM,
        timestamp: 1_700_000_000_000 + txid,
      },
      pagesOf(pageSize, file.pgnos, txid),
      { encoding },
    );
    const path = join(dir, `${txid}.ltx`);
    await Deno.writeFile(path, bytes);
    inputs.push({ path, name: `input ${txid}`, size: bytes.length });
  }
  return inputs;
}

/** A sink that keeps what it is given and whether it was closed or aborted. */
function collector(options: { failAtWrite?: number } = {}) {
  const chunks: Uint8Array<ArrayBuffer>[] = [];
  const state = { closed: false, aborted: false as unknown };
  let writes = 0;
  const sink = new WritableStream<Uint8Array>({
    write(chunk) {
      if (++writes === options.failAtWrite) throw new Error("the disk is full");
      chunks.push(chunk.slice());
    },
    close() {
      state.closed = true;
    },
    abort(reason) {
      state.aborted = reason ?? true;
    },
  });
  const bytes = () => {
    const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  };
  return { sink, state, bytes };
}

/** The stream path's result over the same files, read in-thread. */
async function viaStreams(inputs: FileInput[], encoding: PageEncoding) {
  const out = collector();
  const decoders = await Promise.all(
    inputs.map(async (input) =>
      new Decoder((await Deno.open(input.path)).readable, { name: input.name })
    ),
  );
  let error: unknown;
  try {
    await compactSources(decoders, out.sink, { encoding, where: "thread" });
  } catch (err) {
    error = err;
  }
  return { bytes: out.bytes(), error };
}

/**
 * Descriptors of this process (the worker's included) open on files under `dir`. Only those:
 * a worker's start leaves Deno's own event descriptors behind for the process's lifetime.
 */
function openDescriptors(dir: string): number {
  let count = 0;
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    try {
      if (Deno.readLinkSync(`/proc/self/fd/${entry.name}`).startsWith(dir)) count++;
    } catch {
      // Closed since it was listed (the directory listing's own descriptor).
    }
  }
  return count;
}

async function failure(run: () => Promise<unknown>): Promise<Error> {
  try {
    await run();
  } catch (err) {
    return err as Error;
  }
  throw new Error("expected a failure");
}

for (const encoding of ["frame", "block"] as const) {
  Deno.test(`compactFiles: writes the stream path's bytes (${encoding})`, async () => {
    await withTempDir(async (dir) => {
      const inputs = await writeInputs(dir, encoding);
      const expected = await viaStreams(inputs, encoding);
      assert.equal(expected.error, undefined);
      const before = openDescriptors(dir);
      for (const [reuseChunks, copyFrames] of [[false, true], [true, true], [true, false]]) {
        const out = collector();
        const header = await compactFiles(inputs, out.sink, { encoding, reuseChunks, copyFrames });
        assert.deepEqual([header.minTXID, header.maxTXID, header.commit], [1, 5, 260]);
        assert.ok(out.state.closed);
        assert.deepEqual(out.bytes(), expected.bytes);
      }
      // And the output is a valid LTX file holding the latest version of each page.
      const decoder = new Decoder(new Blob([expected.bytes]).stream());
      const latest = new Map<number, number>();
      for (const [i, input] of inputs.entries()) {
        const d = new Decoder((await Deno.open(input.path)).readable);
        for (let p = await d.readPage(); p; p = await d.readPage()) latest.set(p.pgno, i + 1);
      }
      let pages = 0;
      for (let p = await decoder.readPage(); p; p = await decoder.readPage()) {
        assert.deepEqual(
          p.data.subarray(0, 8),
          patternPage(4096, p.pgno, latest.get(p.pgno)).subarray(0, 8),
        );
        pages++;
      }
      assert.equal(pages, 260);
      assert.equal(openDescriptors(dir), before);
      assert.equal(runningWorkers(), 0);
    });
  });
}

/** Stored and output encodings: copied (or coded) frames of files written one way or the other. */
const ENCODING_PAIRS = [["frame", "block"], ["block", "frame"], ["frame", "frame"]] as const;

Deno.test("compactFiles: copied frames of large pages and other encodings give the stream path's bytes", async () => {
  await withTempDir(async (dir) => {
    for (const pageSize of [512, 65536]) {
      for (const [stored, output] of ENCODING_PAIRS) {
        const inputs: FileInput[] = [];
        for (const txid of [1, 2, 3]) {
          // Frames of 64 KiB pages span the worker's 64 KiB reads; 512-byte files are tiny.
          const commit = 10 + txid * 2;
          const pgnos = txid === 1 ? range(1, commit) : [
            ...range(txid, commit - 2, txid),
            ...range(commit - 1, commit),
          ];
          const bytes = await encodeLTX(
            { pageSize, commit, minTXID: txid, maxTXID: txid },
            randomPages(pageSize, pgnos),
            { encoding: txid === 2 ? output : stored },
          );
          const path = join(dir, `${pageSize}-${stored}-${output}-${txid}.ltx`);
          await Deno.writeFile(path, bytes);
          inputs.push({ path, name: `input ${txid}`, size: bytes.length });
        }
        const expected = await viaStreams(inputs, output);
        assert.equal(expected.error, undefined);
        const out = collector();
        await compactFiles(inputs, out.sink, { encoding: output });
        assert.deepEqual(out.bytes(), expected.bytes, `${pageSize} ${stored} → ${output}`);
      }
    }
    assert.equal(openDescriptors(dir), 0);
  });
});

Deno.test("compactFiles: a corrupt input fails as in the stream path, naming the file", async () => {
  await withTempDir(async (dir) => {
    const inputs = await writeInputs(dir, "frame");
    const before = openDescriptors(dir);
    // A byte of the trailer's file checksum, one of the page index (whose frame sizes the
    // worker uses to copy frames), and one in the middle of a page frame.
    for (const offset of [-1, -27, 0.5]) {
      const victim = inputs[2].path;
      const bytes = await Deno.readFile(victim);
      const at = offset < 0 ? bytes.length + offset : Math.floor(bytes.length * offset);
      bytes[at] ^= 0x5a;
      await Deno.writeFile(victim, bytes);
      const expected = await viaStreams(inputs, "frame");
      const out = collector();
      const err = await failure(() => compactFiles(inputs, out.sink));
      assert.ok(expected.error instanceof Error);
      assert.equal(err.constructor, expected.error.constructor);
      assert.equal(err.message, expected.error.message);
      assert.match(err.message, /input 3/);
      if (offset < 0) assert.ok(err instanceof LTXChecksumError);
      assert.ok(out.state.aborted, "the output was aborted");
      assert.ok(!out.state.closed);
      assert.equal(openDescriptors(dir), before);
      bytes[at] ^= 0x5a;
      await Deno.writeFile(victim, bytes);
    }
    assert.equal(runningWorkers(), 0);
  });
});

Deno.test("compactFiles: a missing input fails as NotFound naming it, with nothing left open", async () => {
  await withTempDir(async (dir) => {
    const inputs = await writeInputs(dir, "frame");
    await Deno.remove(inputs[3].path);
    const before = openDescriptors(dir);
    const out = collector();
    const err = await failure(() => compactFiles(inputs, out.sink));
    assert.ok(err instanceof Deno.errors.NotFound, `${err.name}: ${err.message}`);
    assert.match(err.message, /^input 4: /);
    assert.ok(out.state.aborted);
    assert.equal(openDescriptors(dir), before);
    assert.equal(runningWorkers(), 0);
  });
});

Deno.test("compactFiles: a failing sink or a cancel stops the worker and closes every file", async () => {
  await withTempDir(async (dir) => {
    const inputs = await writeInputs(dir, "frame");
    const before = openDescriptors(dir);
    assert.equal(before, 0);
    // Incompressible pages, so that the output takes several chunks and fails mid-way.
    const noise: FileInput[] = [];
    for (const txid of [1, 2, 3]) {
      const pages = range(1, 400).map((pgno) => ({
        pgno,
        data: crypto.getRandomValues(new Uint8Array(4096)),
      }));
      const bytes = await encodeLTX(
        { pageSize: 4096, commit: 400, minTXID: txid, maxTXID: txid },
        pages,
      );
      const path = join(dir, `noise-${txid}.ltx`);
      await Deno.writeFile(path, bytes);
      noise.push({ path, name: `noise ${txid}`, size: bytes.length });
    }
    const out = collector({ failAtWrite: 3 });
    const err = await failure(() => compactFiles(noise, out.sink));
    assert.equal(err.message, "the disk is full");
    assert.ok(!out.state.closed);
    assert.equal(openDescriptors(dir), before);

    // Cancelled between the headers and the merge (the caller's header checks failed).
    const job = await FileCompaction.open(inputs);
    assert.deepEqual(job.headers.map((h) => h.minTXID), [1, 2, 3, 4, 5]);
    assert.equal(openDescriptors(dir), before + inputs.length);
    await job.cancel();
    assert.equal(openDescriptors(dir), before);
    assert.equal(runningWorkers(), 0);
  });
});
