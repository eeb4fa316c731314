/**
 * The codec worker's "compactFiles" job: a whole compaction step of files on this machine,
 * run here from the first read to the last encoded byte. The worker opens each input itself,
 * decodes and verifies it with src/ltx's {@linkcode Decoder}, merges and encodes
 * (_frame_copy.ts: stored frames copied where the encoding allows, or src/ltx's
 * {@linkcode compact}), and sends only the output chunks to the main thread, under the same
 * output credits as an encode job. Reading, decoding, merging and batching the pages of a
 * step of 100–256 files cost the main thread ~4 s of CPU per GB when it did them.
 *
 * Every file the job opened is closed before its last message ("compacted", "error" or
 * "cancelled") is sent, so the main thread may count descriptors as soon as it has it.
 *
 * @module
 */

import {
  compact,
  decodePageIndex,
  Decoder,
  type Header,
  HEADER_SIZE,
  PAGE_HEADER_SIZE,
  TRAILER_SIZE,
} from "../ltx/mod.ts";
import { Credit } from "./_credit.ts";
import { toWire } from "./_errors.ts";
import { compactCopyingFrames, type FrameSource } from "./_frame_copy.ts";
import {
  FILE_READ_BYTES,
  type FileInput,
  OUTPUT_BUFFER_BYTES,
  OUTPUT_CHUNKS_IN_FLIGHT,
  type Reply,
  type Request,
} from "./_protocol.ts";

/**
 * An encoder's output chunk (a view of its staging buffer) copied into a buffer that can move
 * to the main thread: one it gave back, or a new one. One that will come back (`reuseChunks`)
 * has room for any later chunk; one that may be kept, no more than this chunk needs.
 */
export function outputCopy(
  chunk: Uint8Array,
  free: ArrayBuffer[],
  reuseChunks: boolean,
): ArrayBuffer {
  let out = free.pop();
  if (out === undefined || out.byteLength < chunk.length) {
    out = new ArrayBuffer(reuseChunks ? Math.max(chunk.length, OUTPUT_BUFFER_BYTES) : chunk.length);
  }
  new Uint8Array(out, 0, chunk.length).set(chunk);
  return out;
}

/** A running "compactFiles" job, as the worker's message loop sees it. */
export interface CompactFilesJob {
  kind: "compactFiles";
  /** Output chunks the main thread has not written yet. */
  credit: Credit;
  /** Output chunk buffers the main thread gave back. */
  free: ArrayBuffer[];
  /** Lets the merge begin (the main thread checked the headers). */
  start(): void;
  /** Set by "cancel": reads and writes fail from now on. */
  cancelled: boolean;
}

/** What reads and writes fail with once the job is cancelled; never reported as an error. */
class Cancelled extends Error {}

/**
 * Reading buffers per input, used in turn: the decoder holds at most the current chunk and
 * the rest of the one before (src/ltx/_byte_reader.ts), so the third is free to read into.
 */
const READ_BUFFERS = 3;

/**
 * Starts the job of `message`; `end` gets its last reply once every file it opened is closed.
 * `post` sends the other replies (the headers and the output chunks).
 */
export function startCompactFiles(
  message: Extract<Request, { type: "compactFiles" }>,
  post: (reply: Reply, transfer?: Transferable[]) => void,
  end: (last: Reply) => void,
): CompactFilesJob {
  let start!: () => void;
  const started = new Promise<void>((resolve) => start = resolve);
  const job: CompactFilesJob = {
    kind: "compactFiles",
    credit: new Credit(OUTPUT_CHUNKS_IN_FLIGHT),
    free: [],
    start,
    cancelled: false,
  };
  const files: InputFile[] = [];
  run(message, job, files, started, post).then(
    (last) => last,
    (err): Reply =>
      job.cancelled || err instanceof Cancelled
        ? { type: "cancelled", id: message.id }
        : { type: "error", id: message.id, error: toWire(err) },
  ).then(async (last) => {
    await Promise.all(files.map((file) => file.close()));
    end(job.cancelled ? { type: "cancelled", id: message.id } : last);
  });
  return job;
}

/** Stops `job` at its next read, write or wait; it then closes its files and says "cancelled". */
export function cancelCompactFiles(job: CompactFilesJob): void {
  job.cancelled = true;
  job.credit.release();
  job.start();
}

async function run(
  message: Extract<Request, { type: "compactFiles" }>,
  job: CompactFilesJob,
  files: InputFile[],
  started: Promise<void>,
  post: (reply: Reply, transfer?: Transferable[]) => void,
): Promise<Reply> {
  const { id } = message;
  const copyFrames = message.copyFrames !== false;
  const decoders: Decoder[] = [];
  for (const input of message.inputs) {
    if (job.cancelled) throw new Cancelled();
    const file = await InputFile.open(input, job, copyFrames);
    files.push(file);
    decoders.push(new Decoder(file.stream, { name: input.name }));
  }
  const headers: Header[] = [];
  try {
    for (const decoder of decoders) headers.push(await decoder.readHeader());
  } catch (err) {
    await Promise.all(decoders.map((d) => d.cancel().catch(() => {})));
    throw err;
  }
  post({ type: "headers", id, headers });
  await started;
  if (job.cancelled) throw new Cancelled();

  let bytes = 0;
  const sink = new WritableStream<Uint8Array>({
    async write(chunk) {
      await job.credit.take();
      if (job.cancelled) throw new Cancelled();
      const out = outputCopy(chunk, job.free, message.options.reuseChunks === true);
      post({ type: "output", id, buffer: out, length: chunk.length }, [out]);
      bytes += chunk.length;
    },
  });
  // Both verify every input to its end before they close the output, and cancel the inputs
  // and abort the sink on any failure.
  const options = { ...message.options, reuseChunks: true };
  const header = copyFrames
    ? await compactCopyingFrames(decoders, files, sink, options)
    : await compact(decoders, sink, options);
  return { type: "compacted", id, header, bytes };
}

/** One input file, read in turn into a few small buffers, closed once. */
export class InputFile implements FrameSource {
  readonly stream: ReadableStream<Uint8Array>;
  /** Each frame's size in file order, from the file's page index; undefined when unread. */
  readonly frameSizes: Uint32Array | undefined;
  #file: Deno.FsFile;
  #open = true;
  /** The read in progress: closing waits for it, so no read outlives the job. */
  #reading: Promise<unknown> = Promise.resolve();
  /** The reading buffers, and the file offset and length of what each holds now. */
  #slots: { buffer: Uint8Array; start: number; length: number }[] = [];

  private constructor(
    file: Deno.FsFile,
    input: FileInput,
    job: CompactFilesJob,
    frameSizes: Uint32Array | undefined,
  ) {
    this.#file = file;
    this.frameSizes = frameSizes;
    const size = input.size ?? FILE_READ_BYTES;
    const bufferBytes = Math.max(4096, Math.min(FILE_READ_BYTES, size));
    let next = 0;
    let offset = 0;
    this.stream = new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        if (job.cancelled) throw new Cancelled();
        const slot = this.#slots[next] ??= {
          buffer: new Uint8Array(bufferBytes),
          start: 0,
          length: 0,
        };
        next = (next + 1) % READ_BUFFERS;
        slot.length = 0; // being overwritten: copyFrame must not take bytes from it
        let n: number | null;
        try {
          const reading = this.#file.read(slot.buffer);
          this.#reading = reading.catch(() => {});
          n = await reading;
        } catch (err) {
          // The in-thread path's message for a failing local read (src/compaction).
          const failed = new Error(`read ${input.path}: ${(err as Error).message}`);
          failed.name = "ReplicaError";
          throw failed;
        }
        if (n === null) {
          await this.close();
          controller.close();
          return;
        }
        slot.start = offset;
        slot.length = n;
        offset += n;
        controller.enqueue(slot.buffer.subarray(0, n));
      },
      cancel: () => this.close(),
    }, { highWaterMark: 0 });
  }

  /**
   * Opens `input`. A missing file fails as Deno's `NotFound` with the input's name first, so
   * the main thread can tell it from a damaged file and read the replica's copy instead.
   * With `withFrameSizes`, the page index at the file's end is read first.
   */
  static async open(
    input: FileInput,
    job: CompactFilesJob,
    withFrameSizes: boolean,
  ): Promise<InputFile> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(input.path, { read: true });
    } catch (err) {
      const failed = new Error(`${input.name}: ${(err as Error).message}`);
      failed.name = (err as Error).name;
      throw failed;
    }
    try {
      const sizes = withFrameSizes ? await readFrameSizes(file) : undefined;
      return new InputFile(file, input, job, sizes);
    } catch (err) {
      file.close();
      throw err;
    }
  }

  /**
   * Copies the file's bytes `offset` to `offset + length` into `into` at `at` from the
   * reading buffers, when they still hold all of them (they hold the last few reads).
   * @returns whether they did.
   */
  copyFrame(offset: number, length: number, into: Uint8Array, at: number): boolean {
    const end = offset + length;
    let pos = offset;
    while (pos < end) {
      const slot = this.#slots.find((s) => s.start <= pos && pos < s.start + s.length);
      if (slot === undefined) return false;
      const stop = Math.min(end, slot.start + slot.length);
      into.set(slot.buffer.subarray(pos - slot.start, stop - slot.start), at + pos - offset);
      pos = stop;
    }
    return true;
  }

  /** Closes the file once no read is in progress (idempotent). */
  async close(): Promise<void> {
    await this.#reading;
    if (!this.#open) return;
    this.#open = false;
    this.#file.close();
  }
}

/**
 * Each frame's size from the page index at the end of `file` (FORMAT.md §1.6), leaving the
 * file at its start; undefined when the end does not parse (the decoder then reports why,
 * and no frame of the file is copied).
 */
async function readFrameSizes(file: Deno.FsFile): Promise<Uint32Array | undefined> {
  try {
    const size = await file.seek(0, Deno.SeekMode.End);
    // The index's length field (8 bytes) and the trailer end the file.
    const end = 8 + TRAILER_SIZE;
    if (size < HEADER_SIZE + PAGE_HEADER_SIZE + 1 + end) return undefined;
    const lengthField = await readAt(file, size - end, 8);
    const indexLength = Number(new DataView(lengthField.buffer).getBigUint64(0));
    if (!(indexLength >= 1 && indexLength <= size - HEADER_SIZE - end)) return undefined;
    const tail = await readAt(file, size - end - indexLength, indexLength + end);
    const sizes: number[] = [];
    decodePageIndex(tail, {
      exact: true,
      fileSize: size,
      onEntry: (_i, _pgno, _offset, frameSize) => sizes.push(frameSize),
    });
    return Uint32Array.from(sizes);
  } catch {
    return undefined;
  } finally {
    await file.seek(0, Deno.SeekMode.Start);
  }
}

/** Exactly `length` bytes of `file` from `offset`. */
async function readAt(file: Deno.FsFile, offset: number, length: number): Promise<Uint8Array> {
  await file.seek(offset, Deno.SeekMode.Start);
  const bytes = new Uint8Array(length);
  let at = 0;
  while (at < length) {
    const n = await file.read(bytes.subarray(at));
    if (n === null) throw new Error("the file ended early");
    at += n;
  }
  return bytes;
}
