/**
 * A seeded, reproducible mutation fuzzer over LTX files (the test fixtures and files made by
 * our Encoder) and WAL files (fixtures). Every case must end in one of:
 *
 * - an error of the format's own class (LTXError, WALError), never another exception;
 * - exactly the original content (LTX: the same header and pages; WAL: a committed prefix of
 *   the original frames, byte for byte).
 *
 * A last group restores whole replicas with one damaged file: the restore fails, or its
 * output is byte-identical to the expected database. Every decode runs under a time limit.
 *
 * Reproduce a failure with its printed seed and case number: `FUZZ_SEED=… deno test -A
 * tests/fuzz_test.ts`.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  Decoder,
  Encoder,
  type Header,
  HEADER_FLAG_NO_CHECKSUM,
  LTXError,
  type Page,
  type PageEncoding,
} from "../src/ltx/mod.ts";
import { type RandomAccessFile, readWAL, WALError } from "../src/sqlite/mod.ts";
import { FileReplicaClient } from "../src/replica/mod.ts";
import { restore } from "../src/restore/mod.ts";
import { Rng } from "../scripts/chaos_lib.ts";

const SEED = Number(Deno.env.get("FUZZ_SEED") ?? 20261123);
const fixtures = new URL("./fixtures/", import.meta.url);
const TIME_LIMIT_MS = 5000;

/** Rejects when `promise` takes longer than the limit (a hang). */
async function limited<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`${what}: no answer in ${TIME_LIMIT_MS} ms`)),
          TIME_LIMIT_MS,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------- mutations

type Mutator = (bytes: Uint8Array, rng: Rng) => Uint8Array;

const INTERESTING_U32 = [0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x1000, 0x10000, 0x7fffffff, 0xffffffff];

const MUTATORS: Record<string, Mutator> = {
  flipBit(bytes, rng) {
    const out = bytes.slice();
    const i = rng.int(0, out.length - 1);
    out[i] ^= 1 << rng.int(0, 7);
    return out;
  },
  flipBits(bytes, rng) {
    const out = bytes.slice();
    for (let k = rng.int(2, 8); k > 0; k--) out[rng.int(0, out.length - 1)] ^= 1 << rng.int(0, 7);
    return out;
  },
  randomByte(bytes, rng) {
    const out = bytes.slice();
    out[rng.int(0, out.length - 1)] = rng.pick([0, 0xff, rng.int(0, 255)]);
    return out;
  },
  interestingU32(bytes, rng) {
    const out = bytes.slice();
    const at = rng.int(0, Math.max(0, out.length - 4));
    new DataView(out.buffer).setUint32(at, rng.pick(INTERESTING_U32));
    return out;
  },
  truncate(bytes, rng) {
    return bytes.slice(0, rng.int(0, bytes.length - 1));
  },
  append(bytes, rng) {
    const extra = new Uint8Array(rng.int(1, 64)).map(() => rng.int(0, 255));
    return concat(bytes, extra);
  },
  insert(bytes, rng) {
    const at = rng.int(0, bytes.length);
    const extra = new Uint8Array(rng.int(1, 16)).map(() => rng.int(0, 255));
    return concat(bytes.subarray(0, at), extra, bytes.subarray(at));
  },
  remove(bytes, rng) {
    const at = rng.int(0, bytes.length - 1);
    return concat(bytes.subarray(0, at), bytes.subarray(at + rng.int(1, 32)));
  },
  duplicate(bytes, rng) {
    const from = rng.int(0, bytes.length - 1);
    const chunk = bytes.slice(from, from + rng.int(1, 64));
    const to = rng.int(0, bytes.length);
    return concat(bytes.subarray(0, to), chunk, bytes.subarray(to));
  },
  overwriteRun(bytes, rng) {
    const out = bytes.slice();
    const at = rng.int(0, out.length - 1);
    out.fill(rng.pick([0, 0xff]), at, at + rng.int(1, 64));
    return out;
  },
};
const MUTATOR_NAMES = Object.keys(MUTATORS);

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

// ---------------------------------------------------------------- LTX inputs

interface Decoded {
  header: Header;
  pages: Page[];
}

async function decode(bytes: Uint8Array, name: string): Promise<Decoded> {
  const decoder = new Decoder(ReadableStream.from([bytes]), { name });
  const header = await decoder.readHeader();
  const pages: Page[] = [];
  for (let page = await decoder.readPage(); page; page = await decoder.readPage()) {
    pages.push(page);
  }
  return { header, pages };
}

async function encode(header: Header, pages: Page[], encoding: PageEncoding): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const sink = new WritableStream<Uint8Array>({ write: (c) => void chunks.push(c.slice()) });
  const encoder = new Encoder(sink, header, { encoding });
  for (const p of pages) await encoder.encodePage(p.pgno, p.data);
  await encoder.close();
  return concat(...chunks);
}

/** Small files from our Encoder: snapshots and incrementals, both encodings, three page sizes. */
async function encodedInputs(rng: Rng): Promise<{ name: string; bytes: Uint8Array }[]> {
  const out: { name: string; bytes: Uint8Array }[] = [];
  for (const pageSize of [512, 1024, 4096]) {
    for (const encoding of ["frame", "block"] as const) {
      for (const snapshot of [true, false]) {
        const commit = rng.int(2, 6);
        const pgnos = snapshot
          ? Array.from({ length: commit }, (_, i) => i + 1)
          : [...new Set([rng.int(1, commit), commit])].sort((a, b) => a - b);
        const pages = pgnos.map((pgno) => {
          const data = new Uint8Array(pageSize);
          // Half compressible (a repeated pattern), half random.
          for (let i = 0; i < pageSize; i++) data[i] = i < pageSize / 2 ? i % 7 : rng.int(0, 255);
          if (pgno === 1) data.set(new TextEncoder().encode("SQLite format 3\0"));
          return { pgno, data };
        });
        const minTXID = snapshot ? 1 : rng.int(2, 50);
        const header: Header = {
          flags: HEADER_FLAG_NO_CHECKSUM,
          pageSize,
          commit,
          minTXID,
          maxTXID: minTXID + rng.int(0, 3),
          timestamp: 1_790_000_000_000 + rng.int(0, 1e6),
          preApplyChecksum: 0n,
          walOffset: 0,
          walSize: 0,
          walSalt1: 0,
          walSalt2: 0,
          nodeID: 0n,
        };
        out.push({
          name: `encoded-${pageSize}-${encoding}-${snapshot ? "snapshot" : "incr"}`,
          bytes: await encode(header, pages, encoding),
        });
      }
    }
  }
  return out;
}

async function fixtureInputs(): Promise<{ name: string; bytes: Uint8Array }[]> {
  const out: { name: string; bytes: Uint8Array }[] = [];
  const walk = async (dir: URL, rel: string): Promise<void> => {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.isDirectory) await walk(new URL(`${entry.name}/`, dir), `${rel}${entry.name}/`);
      else if (entry.name.endsWith(".ltx")) {
        out.push({ name: rel + entry.name, bytes: await Deno.readFile(new URL(entry.name, dir)) });
      }
    }
  };
  await walk(fixtures, "");
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

/** Decodes `bytes`: "error" (an LTXError), "same", or "other" (a valid file, other content). */
async function ltxOutcome(
  bytes: Uint8Array,
  original: Decoded | undefined,
  what: string,
): Promise<"error" | "same" | "other"> {
  let got: Decoded;
  try {
    got = await limited(decode(bytes, "fuzz.ltx"), what);
  } catch (err) {
    if (err instanceof LTXError) return "error";
    throw new Error(`${what}: not an LTXError: ${(err as Error)?.stack ?? err}`);
  }
  // Whatever decodes must be well-formed.
  let previous = 0;
  for (const page of got.pages) {
    assert.equal(page.data.length, got.header.pageSize, `${what}: page size`);
    assert.ok(page.pgno > previous && page.pgno <= got.header.commit, `${what}: page order`);
    previous = page.pgno;
  }
  if (original === undefined) return "other";
  const same = got.header.pageSize === original.header.pageSize &&
    got.header.commit === original.header.commit &&
    got.header.minTXID === original.header.minTXID &&
    got.header.maxTXID === original.header.maxTXID &&
    got.pages.length === original.pages.length &&
    got.pages.every((p, i) =>
      p.pgno === original.pages[i].pgno && equalBytes(p.data, original.pages[i].data)
    );
  return same ? "same" : "other";
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

Deno.test("fuzz: mutated LTX files decode to an LTXError or to the very same pages", async () => {
  const rng = new Rng(SEED);
  const inputs = [...await fixtureInputs(), ...await encodedInputs(rng)];
  const counts = { error: 0, same: 0, other: 0, cases: 0 };
  for (const input of inputs) {
    let original: Decoded | undefined;
    try {
      original = await decode(input.bytes, input.name);
    } catch (err) {
      assert.ok(err instanceof LTXError, `${input.name}: ${err}`);
      original = undefined; // a file that must be rejected (legacy format): stays rejected
    }
    const big = input.bytes.length > 100_000;
    const n = big ? 100 : 400;
    for (let k = 0; k < n; k++) {
      const mutator = rng.pick(MUTATOR_NAMES);
      const what = `seed ${SEED} ${input.name} case ${k} ${mutator}`;
      const mutated = MUTATORS[mutator](input.bytes, rng);
      const outcome = await ltxOutcome(mutated, original, what);
      counts.cases++;
      counts[outcome]++;
      if (outcome === "other") {
        throw new Error(`${what}: decoded without error to different content (wrong database)`);
      }
      if (original === undefined && outcome !== "error") {
        throw new Error(`${what}: a file that must be rejected decoded`);
      }
    }
  }
  console.log(`LTX: ${inputs.length} inputs, ${JSON.stringify(counts)}`);
  assert.ok(counts.cases >= 3000, `${counts.cases} cases`);
  assert.ok(counts.error > counts.cases * 0.9, "nearly every mutation is detected");
});

// ---------------------------------------------------------------- WAL

function memoryFile(bytes: Uint8Array): RandomAccessFile {
  return {
    readAt(buffer, position) {
      if (position >= bytes.length) return Promise.resolve(0);
      const n = Math.min(buffer.length, bytes.length - position);
      buffer.set(bytes.subarray(position, position + n));
      return Promise.resolve(n);
    },
    size: () => Promise.resolve(bytes.length),
  };
}

Deno.test("fuzz: mutated WAL files read as nothing, a WALError, or a committed prefix", async () => {
  const rng = new Rng(SEED + 1);
  const paths = [
    "testdata/wal-reader/ok/wal",
    "testdata/wal-reader/frame-salts/wal",
    "testdata/wal-reader/salt-mismatch/wal",
    "sqlite/big.wal",
  ];
  const counts = { null: 0, error: 0, prefix: 0, cases: 0 };
  for (const path of paths) {
    const bytes = await Deno.readFile(new URL(path, fixtures));
    const original = await readWAL(memoryFile(bytes));
    assert.ok(original, path);
    // Commit boundaries of the original: where a valid prefix may end.
    const n = bytes.length > 100_000 ? 300 : 1500;
    for (let k = 0; k < n; k++) {
      const mutator = rng.pick(MUTATOR_NAMES);
      const what = `seed ${SEED + 1} ${path} case ${k} ${mutator}`;
      const mutated = MUTATORS[mutator](bytes, rng);
      counts.cases++;
      let result;
      try {
        result = await limited(readWAL(memoryFile(mutated)), what);
      } catch (err) {
        if (err instanceof WALError) {
          counts.error++;
          continue;
        }
        throw new Error(`${what}: not a WALError: ${(err as Error)?.stack ?? err}`);
      }
      if (result === null || result.endOffset === 0) {
        counts.null++;
        continue;
      }
      // What is read as committed must be the original's bytes, and end where it committed.
      assert.ok(result.endOffset <= original.endOffset, `${what}: read past the original`);
      assert.ok(
        equalBytes(mutated.subarray(0, result.endOffset), bytes.subarray(0, result.endOffset)),
        `${what}: accepted frames that differ from the original (end ${result.endOffset})`,
      );
      if (result.endOffset === original.endOffset) {
        assert.deepEqual(result.pageMap, original.pageMap, what);
        assert.equal(result.commit, original.commit, what);
      }
      counts.prefix++;
    }
  }
  console.log(`WAL: ${JSON.stringify(counts)}`);
  assert.ok(counts.cases >= 4000);
});

// ---------------------------------------------------------------- whole restores

Deno.test("fuzz: a replica with one damaged file restores the right database or fails", async () => {
  const rng = new Rng(SEED + 2);
  const dir = await Deno.makeTempDir({ prefix: "sluice-fuzz-restore-" });
  try {
    const cases = [
      { replica: "node-written-go-verified/rep-block", expected: "sqlite/v2.db" },
      { replica: "node-written-go-verified/rep-frame", expected: "sqlite/v2.db" },
      { replica: "node-written-go-verified/rep-l1", expected: "sqlite/v3.db" },
      { replica: "negative/rep-checksum", expected: "sqlite/v2.db" },
    ];
    const counts = { failed: 0, same: 0, cases: 0 };
    for (const { replica, expected } of cases) {
      const want = await Deno.readFile(new URL(expected, fixtures));
      const files: string[] = [];
      const root = fileURLToPath(new URL(`${replica}/`, fixtures));
      for await (const level of Deno.readDir(join(root, "ltx"))) {
        for await (const f of Deno.readDir(join(root, "ltx", level.name))) {
          files.push(join("ltx", level.name, f.name));
        }
      }
      files.sort();
      for (let k = 0; k < 120; k++) {
        const what = `seed ${SEED + 2} ${replica} case ${k}`;
        const copy = join(dir, `rep-${counts.cases}`);
        for (const f of files) {
          await Deno.mkdir(join(copy, f, ".."), { recursive: true });
          await Deno.copyFile(join(root, f), join(copy, f));
        }
        const victim = rng.pick(files);
        const mutator = rng.pick(MUTATOR_NAMES);
        const bytes = await Deno.readFile(join(copy, victim));
        await Deno.writeFile(join(copy, victim), MUTATORS[mutator](bytes, rng));
        const out = join(dir, `out-${counts.cases}.db`);
        counts.cases++;
        try {
          await limited(
            restore(new FileReplicaClient(copy), { outputPath: out, integrityCheck: "none" }),
            what,
          );
        } catch (err) {
          if ((err as Error)?.message?.includes("no answer in")) throw err;
          // A programming error is not a refusal of bad input.
          for (const bug of [TypeError, RangeError, ReferenceError, SyntaxError]) {
            if (err instanceof bug) throw new Error(`${what}: ${(err as Error).stack}`);
          }
          counts.failed++;
          continue;
        } finally {
          await Deno.remove(copy, { recursive: true });
        }
        const got = await Deno.readFile(out);
        await Deno.remove(out);
        assert.ok(
          equalBytes(got, want),
          `${what} (${victim} ${mutator}): restored a wrong database`,
        );
        counts.same++;
      }
    }
    console.log(`restore: ${JSON.stringify(counts)}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
