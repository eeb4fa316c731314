/**
 * The direct-restore worker: the whole byte path of a restore from replica files on this
 * machine, off the main thread. It reads each planned LTX file itself, decodes it with src/ltx's
 * {@linkcode Decoder} (every check and checksum as everywhere else) into its own batch buffers,
 * and writes the pages at their offsets in the output through descriptors of its own, the next
 * batch decoding while the last ones are written (the writes run on Deno's I/O thread pool).
 *
 * The files are applied in plan order, so the latest file's copy of a page is the one left:
 * the merge's result, without a merge. Pages past the final Commit are not written; a bitmap of
 * the pages written proves the result complete before the output is truncated to its size.
 *
 * @module
 */

import {
  CHECKSUM_FLAG,
  Decoder,
  type Header,
  HEADER_FLAG_NO_CHECKSUM,
  HEADER_SIZE,
  lockPageNumber,
  LTXError,
  LTXFormatError,
  pageChecksum,
  type Trailer,
} from "../ltx/mod.ts";
import {
  type DirectFile,
  type DirectReply,
  type DirectRequest,
  toWire,
} from "./_direct_protocol.ts";
import { TruncatedFileError } from "./_truncated.ts";

/** This worker's global scope (the project is type-checked with the window's lib). */
const scope = self as unknown as {
  onmessage: ((event: MessageEvent<DirectRequest>) => void) | null;
  postMessage(message: DirectReply): void;
};

/** Bytes per read of a replica file. */
const READ_BYTES = 1 << 20;
/**
 * Read buffers in rotation: the decoder's reader holds the current chunk and the rest of the
 * one before (src/ltx/_byte_reader.ts), so a buffer is free again three reads later.
 */
const READ_BUFFERS = 4;
/**
 * Decoded pages per batch, in bytes: one decode call and (for a snapshot) one write each.
 * Measured on 1 GiB restores (loaded 2-core machine): 4 batches of 1 MiB took 1.7–3.5 s
 * wall and 0.6–1.7 s of system time, 3 of 2 MiB 2.4–4.5 s and 1.2–2.5 s.
 */
const BATCH_BYTES = 1 << 20;
/**
 * Batches in rotation: one being decoded while the others are written. Each has a descriptor
 * of its own (its seek and write cannot interleave with another batch's), so its write starts
 * as soon as it is decoded: a write chained to the one before would start only when this
 * thread next awaits, i.e. after decoding a whole further batch.
 */
const BATCHES = 4;
/**
 * Bytes written between two background flushes (replica's FlushBehind, on a descriptor of its
 * own: Deno runs one operation at a time per file handle, so an `fdatasync` on a writing
 * descriptor holds the writes behind it). Measured on 1 GiB restores on the loaded 2-core
 * machine: 32, 64 and 128 MiB were alike (1.7–4.4 s), no flushes slower (3.5–4.2 s: the final
 * fsync then writes everything).
 */
const FLUSH_BEHIND_BYTES = 64 << 20;
/** Bytes written between two progress messages. */
const PROGRESS_BYTES = 16 << 20;

scope.onmessage = (event: MessageEvent<DirectRequest>) => {
  if (event.data.type !== "restore") return;
  scope.onmessage = null;
  restore(event.data).then(
    (done) => scope.postMessage(done),
    (err) => scope.postMessage({ type: "error", error: toWire(err) }),
  );
};

async function restore(request: DirectRequest): Promise<DirectReply> {
  const ring = new ReadRing();
  const decoders = request.files.map((file) =>
    new Decoder(openLocal(file, ring), { name: file.name })
  );
  const outputs: Deno.FsFile[] = [];
  try {
    const headers: Header[] = [];
    for (const decoder of decoders) headers.push(await decoder.readHeader());
    scope.postMessage({ type: "headers", headers });
    const { pageSize } = headers[0];
    if (headers.some((h) => h.pageSize !== pageSize)) {
      throw new LTXError("the planned files have mismatched page sizes");
    }
    const commit = headers[headers.length - 1].commit;
    const checksummed = headers.some((h) => (h.flags & HEADER_FLAG_NO_CHECKSUM) === 0);
    for (let i = 0; i <= BATCHES; i++) {
      const output = await Deno.open(request.outputPath, { write: true });
      outputs.push(output);
      const { dev, ino } = await output.stat();
      if (dev !== request.output.dev || ino !== request.output.ino) {
        throw new Error(
          `${request.outputPath} was replaced while restoring (another file is at its path now)`,
        );
      }
    }
    const writer = new PageWriter(outputs, pageSize, commit, checksummed);
    const trailers: Trailer[] = [];
    for (const decoder of decoders) {
      await writer.apply(decoder);
      trailers.push(decoder.trailer!);
    }
    const bytes = await writer.finish(decoders.map((d) => d.name));
    return {
      type: "done",
      trailers,
      bytes,
      databaseChecksum: writer.databaseChecksum,
    };
  } catch (err) {
    await Promise.all(decoders.map((d) => d.cancel().catch(() => {})));
    throw err;
  } finally {
    for (const output of outputs) output.close();
  }
}

/** Read buffers shared by the files, which are decoded one after the other. */
class ReadRing {
  #buffers: Uint8Array[] = [];
  #next = 0;

  /** The next buffer of the rotation (allocated on first use). */
  take(): Uint8Array {
    const i = this.#next;
    this.#next = (i + 1) % READ_BUFFERS;
    return this.#buffers[i] ??= new Uint8Array(READ_BYTES);
  }
}

/**
 * `file` as the decoder's stream, read synchronously (this thread has nothing else to do) into
 * the ring's buffers. Opened on the first read; the first read takes just the header, so that
 * every file of the plan can have its header read without a buffer of its own.
 */
function openLocal(file: DirectFile, ring: ReadRing): ReadableStream<Uint8Array> {
  let handle: Deno.FsFile | undefined;
  let received = 0;
  const close = () => {
    handle?.close();
    handle = undefined;
  };
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (handle === undefined) {
        if (received > 0) return controller.close();
        handle = Deno.openSync(file.path, { read: true });
      }
      const into = received === 0 ? new Uint8Array(HEADER_SIZE) : ring.take();
      let n: number | null;
      try {
        n = handle.readSync(into);
      } catch (err) {
        close();
        throw new Error(`read ${file.path}: ${(err as Error).message}`, { cause: err });
      }
      if (n === null) {
        close();
        if (received < file.size) throw new TruncatedFileError(file.name, received, file.size);
        controller.close();
        return;
      }
      received += n;
      controller.enqueue(into.subarray(0, n));
    },
    cancel() {
      close();
    },
  }, { highWaterMark: 0 });
}

interface Batch {
  pgnos: Uint32Array;
  data: Uint8Array;
  /** The descriptor this batch writes through. */
  file: Deno.FsFile;
  /** The write of this batch in progress, if any. */
  written: Promise<void>;
}

/** Writes decoded pages at their offsets, remembering which pages the output holds. */
class PageWriter {
  /** Another descriptor of the output, for the background flushes and the truncation. */
  #flusher: Deno.FsFile;
  #pageSize: number;
  #commit: number;
  #lockPage: number;
  /** Bit p is set once page p was written. */
  #present: Uint8Array;
  /** Each page's checksum, when the database checksum is computed. */
  #sums: BigUint64Array | undefined;
  #batches: Batch[];
  #nextBatch = 0;
  #error: unknown;
  #written = 0;
  #sinceFlush = 0;
  #sinceProgress = 0;
  #flushing: Promise<void> | undefined;
  #flushError: unknown;
  databaseChecksum: bigint | undefined;

  /** `files`: descriptors of the output, one per batch and one more for the flushes. */
  constructor(files: Deno.FsFile[], pageSize: number, commit: number, checksummed: boolean) {
    this.#flusher = files[BATCHES];
    this.#pageSize = pageSize;
    this.#commit = commit;
    this.#lockPage = lockPageNumber(pageSize);
    this.#present = new Uint8Array((commit >>> 3) + 1);
    this.#sums = checksummed ? new BigUint64Array(commit + 1) : undefined;
    const capacity = Math.max(1, Math.floor(BATCH_BYTES / pageSize));
    this.#batches = Array.from({ length: BATCHES }, (_, i) => ({
      pgnos: new Uint32Array(capacity),
      data: new Uint8Array(capacity * pageSize),
      file: files[i],
      written: Promise.resolve(),
    }));
  }

  /** Decodes `decoder` to its verified end, writing each page as its batch fills. */
  async apply(decoder: Decoder): Promise<void> {
    for (;;) {
      const batch = this.#batches[this.#nextBatch];
      this.#nextBatch = (this.#nextBatch + 1) % BATCHES;
      await batch.written; // its previous pages are out
      if (this.#error !== undefined) throw this.#error;
      const count = await decoder.readPagesInto(batch.data, batch.pgnos);
      if (count > 0) this.#queue(batch, count);
      if (count < batch.pgnos.length) break;
    }
    // The next file may hold newer copies of these pages: they must not be overtaken.
    await this.#drain();
  }

  /** Waits for every write in flight. */
  async #drain(): Promise<void> {
    await Promise.all(this.#batches.map((batch) => batch.written));
  }

  /** Records the pages of `batch` and queues their writes, in runs of consecutive pages. */
  #queue(batch: Batch, count: number): void {
    const { pgnos, data } = batch;
    const size = this.#pageSize;
    const present = this.#present;
    const sums = this.#sums;
    const runs: number[] = []; // [first index, end index) pairs
    let start = -1;
    for (let i = 0; i < count; i++) {
      const pgno = pgnos[i];
      if (pgno > this.#commit) { // past the final Commit: dropped, as in the merge
        if (start >= 0) runs.push(start, i);
        start = -1;
        continue;
      }
      present[pgno >>> 3] |= 1 << (pgno & 7);
      if (sums !== undefined) {
        sums[pgno] = pageChecksum(pgno, data.subarray(i * size, (i + 1) * size));
      }
      if (start >= 0 && pgno !== pgnos[i - 1] + 1) {
        runs.push(start, i);
        start = -1;
      }
      if (start < 0) start = i;
    }
    if (start >= 0) runs.push(start, count);
    batch.written = (async () => {
      try {
        for (let r = 0; r < runs.length && this.#error === undefined; r += 2) {
          const [from, to] = [runs[r], runs[r + 1]];
          batch.file.seekSync((pgnos[from] - 1) * size, Deno.SeekMode.Start);
          await writeAll(batch.file, data.subarray(from * size, to * size));
          this.#wrote((to - from) * size);
        }
      } catch (err) {
        this.#error ??= err;
      }
    })();
  }

  #wrote(bytes: number): void {
    this.#written += bytes;
    this.#sinceProgress += bytes;
    if (this.#sinceProgress >= PROGRESS_BYTES) {
      this.#sinceProgress = 0;
      scope.postMessage({ type: "progress", bytes: this.#written });
    }
    this.#sinceFlush += bytes;
    if (this.#sinceFlush < FLUSH_BEHIND_BYTES || this.#flushing) return;
    this.#sinceFlush = 0;
    // The dirty pages start going to disk while the rest is written, so the final fsync
    // waits only for the tail. Linux may report a write-back error to one fsync only: kept.
    this.#flushing = this.#flusher.syncData()
      .catch((err) => {
        this.#flushError ??= err;
      })
      .finally(() => this.#flushing = undefined);
  }

  /**
   * Waits for the writes, checks that every page 1…commit (but the lock page) was written,
   * and truncates the output to its size.
   * @returns the size of the database in bytes.
   */
  async finish(names: string[]): Promise<number> {
    await this.#drain();
    await this.#flushing;
    if (this.#error !== undefined) throw this.#error;
    if (this.#flushError !== undefined) throw this.#flushError;
    const missing = this.#firstMissing(1);
    if (missing !== undefined) {
      const inputs = names.length <= 3
        ? names.join(", ")
        : `${names[0]} … ${names[names.length - 1]} (${names.length} files)`;
      // The merge's messages (src/ltx/merge.ts): the same plan fails the same way either path.
      const tail = this.#firstPresent(missing + 1) === undefined;
      throw new LTXFormatError(
        tail
          ? `merging ${inputs}: pages ${missing}…${this.#commit} are in none of the files, so ` +
            `they do not form a complete database`
          : `merging ${inputs}: page ${missing} of ${this.#commit} is in none of the files, so ` +
            `they do not form a complete database`,
      );
    }
    const bytes = this.#commit * this.#pageSize;
    await this.#flusher.truncate(bytes);
    const sums = this.#sums;
    if (sums !== undefined) {
      let rolling = 0n;
      for (let p = 1; p <= this.#commit; p++) if (p !== this.#lockPage) rolling ^= sums[p];
      this.databaseChecksum = CHECKSUM_FLAG | rolling;
    }
    return bytes;
  }

  #has(pgno: number): boolean {
    return (this.#present[pgno >>> 3] & (1 << (pgno & 7))) !== 0;
  }

  #firstMissing(from: number): number | undefined {
    for (let p = from; p <= this.#commit; p++) {
      if (p !== this.#lockPage && !this.#has(p)) return p;
    }
    return undefined;
  }

  #firstPresent(from: number): number | undefined {
    for (let p = from; p <= this.#commit; p++) if (this.#has(p)) return p;
    return undefined;
  }
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await file.write(bytes.subarray(at));
}
