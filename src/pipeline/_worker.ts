/**
 * The codec worker: runs the LTX {@linkcode Decoder} and {@linkcode Encoder} of src/ltx for the
 * jobs the main thread sends it, so that LZ4, xxh32 and CRC-64 work never holds up the main
 * thread's event loop. Several jobs may share one worker; each is a small state machine driven
 * by messages (see _protocol.ts), and each waits for credit before sending more.
 *
 * @module
 */

import { setPriority } from "node:os";
import { Decoder, Encoder, SharedFrameEncoder } from "../ltx/mod.ts";
import { Credit } from "./_credit.ts";
import { toWire } from "./_errors.ts";
import {
  cancelCompactFiles,
  type CompactFilesJob,
  outputCopy,
  startCompactFiles,
} from "./_worker_files.ts";
import {
  DECODE_BATCH_BYTES,
  DECODE_BATCHES_IN_FLIGHT,
  OUTPUT_CHUNKS_IN_FLIGHT,
  type Reply,
  type Request,
  type WireError,
} from "./_protocol.ts";

/** This worker's global scope (the project is type-checked with the window's lib). */
const scope = self as unknown as {
  onmessage: ((event: MessageEvent<Request>) => void) | null;
  postMessage(message: Reply, transfer?: Transferable[]): void;
};

/** The marker an input stream errors with when the main thread's source failed. */
class InputFailed extends Error {}

interface DecodeJob {
  kind: "decode";
  /** Batch buffers the main thread gave back. */
  free: { pgnos: Uint32Array<ArrayBuffer>; data: Uint8Array<ArrayBuffer> }[];
  input: InputQueue;
  credit: Credit;
  decoder: Decoder;
  cancelled: boolean;
}

interface EncodeJob {
  kind: "encode";
  chain: Promise<void>;
  credit: Credit;
  encoder?: Encoder;
  failed: boolean;
  /** Output chunk buffers the main thread gave back. */
  free: ArrayBuffer[];
}

/** A parallel encoder's part: its batches are coded in the memory it shares with this thread. */
interface FramesJob {
  kind: "frames";
  encoder: SharedFrameEncoder;
}

/**
 * Chunks the decoder may still hold when it asks for the next one: its reader keeps the current
 * chunk and the rest of the one before (src/ltx/_byte_reader.ts), and views of them live until
 * its next read. A chunk's buffer goes back to the main thread only this many reads later.
 */
const CHUNKS_HELD = 2;

/** LTX bytes the main thread sent, as the stream the decoder reads. */
class InputQueue {
  readonly stream: ReadableStream<Uint8Array>;
  #chunks: (Uint8Array | null | InputFailed)[] = [];
  /** Chunks handed to the decoder, oldest first, whose buffers are not given back yet. */
  #held: Uint8Array[] = [];
  #wake: (() => void) | undefined;

  constructor(id: number) {
    this.stream = new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        while (this.#chunks.length === 0) {
          await new Promise<void>((resolve) => this.#wake = resolve);
        }
        const next = this.#chunks.shift()!;
        if (next === null) {
          controller.close();
        } else if (next instanceof InputFailed) {
          controller.error(next);
        } else {
          // The decoder reads the message's buffer itself (no copy); the buffer goes back to
          // the main thread for a later input once the decoder is done with it.
          this.#held.push(next);
          if (this.#held.length > CHUNKS_HELD) {
            const done = this.#held.shift()!;
            post(
              { type: "consumed", id, bytes: done.byteLength, buffer: done.buffer as ArrayBuffer },
              [done.buffer as ArrayBuffer],
            );
          }
          controller.enqueue(next);
        }
      },
    }, { highWaterMark: 0 });
  }

  push(item: Uint8Array | null | InputFailed): void {
    this.#chunks.push(item);
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}

const jobs = new Map<number, DecodeJob | EncodeJob | FramesJob | CompactFilesJob>();

function post(message: Reply, transfer: Transferable[] = []): void {
  scope.postMessage(message, transfer);
}

function wire(err: unknown): WireError {
  if (err instanceof InputFailed) return { name: "Error", message: "input failed", input: true };
  return toWire(err);
}

function fail(id: number, err: unknown): void {
  if (!jobs.has(id)) return;
  jobs.delete(id);
  post({ type: "error", id, error: wire(err) });
}

scope.onmessage = (event: MessageEvent<Request>) => {
  const message = event.data;
  const job = jobs.get(message.id);
  switch (message.type) {
    case "decode":
      startDecode(message.id, message.name);
      return;
    case "encode":
      startEncode(message.id, message);
      return;
    case "framesJob":
      try {
        jobs.set(message.id, { kind: "frames", encoder: new SharedFrameEncoder(message.memory) });
      } catch (err) {
        post({ type: "error", id: message.id, error: wire(err) });
      }
      return;
    case "frames":
      if (job?.kind === "frames") encodeFrames(job, message);
      return;
    case "compactFiles": {
      const id = message.id;
      jobs.set(
        id,
        startCompactFiles(message, post, (last: Reply) => {
          // The job's files are closed by now; its last word ends it.
          if (jobs.get(id)?.kind !== "compactFiles") return;
          jobs.delete(id);
          post(last);
        }),
      );
      return;
    }
    case "compactStart":
      if (job?.kind === "compactFiles") job.start();
      return;
    case "priority":
      try {
        // Linux's nice value is per thread: with no pid, this thread's alone.
        setPriority(message.nice);
      } catch {
        // Not permitted (no --allow-sys) or not supported: the work runs at normal priority.
      }
      return;
    case "cancel":
      if (job?.kind === "decode") {
        job.cancelled = true;
        job.credit.release();
        job.decoder.cancel().catch(() => {});
      } else if (job?.kind === "encode") {
        job.failed = true;
        job.credit.release();
        job.encoder?.abort().catch(() => {});
      } else if (job?.kind === "compactFiles") {
        // Stays registered until its files are closed and "cancelled" is sent.
        cancelCompactFiles(job);
        return;
      }
      jobs.delete(message.id);
      return;
  }
  if (job?.kind === "decode") {
    if (message.type === "input") {
      job.input.push(new Uint8Array(message.buffer, 0, message.length));
    } else if (message.type === "inputEnd") job.input.push(null);
    else if (message.type === "inputFailed") job.input.push(new InputFailed());
    else if (message.type === "batchAck") {
      if (message.data && message.pgnos) {
        job.free.push({ pgnos: message.pgnos, data: new Uint8Array(message.data) });
      }
      job.credit.give();
    }
  } else if (job?.kind === "compactFiles") {
    if (message.type === "outputAck") {
      if (message.buffer) job.free.push(message.buffer);
      job.credit.give();
    }
  } else if (job?.kind === "encode") {
    if (message.type === "outputAck") {
      if (message.buffer) job.free.push(message.buffer);
      job.credit.give();
    } else if (message.type === "pages" || message.type === "close") {
      job.chain = job.chain.then(() => encodeStep(message.id, job, message));
    }
  }
};

/**
 * One batch of a parallel encoder: stateless, done as soon as it arrives, in the job's memory
 * (the pages are read there by the main thread, which writes the frames out from there).
 */
function encodeFrames(job: FramesJob, message: Extract<Request, { type: "frames" }>): void {
  const { id, seq } = message;
  try {
    const { bytes, crc, hashedLength, pageChecksums } = job.encoder.encode(
      message.layout,
      message.count,
      message.pageSize,
      { encoding: message.encoding, withPageChecksum: message.withPageChecksum },
    );
    post({
      type: "frames",
      id,
      seq,
      count: message.count,
      bytes,
      crc,
      hashedLength,
      pageChecksums,
    });
  } catch (err) {
    post({ type: "error", id, error: wire(err) });
  }
}

function startDecode(id: number, name: string): void {
  const input = new InputQueue(id);
  const job: DecodeJob = {
    kind: "decode",
    free: [],
    input,
    credit: new Credit(DECODE_BATCHES_IN_FLIGHT),
    decoder: new Decoder(input.stream, { name }),
    cancelled: false,
  };
  jobs.set(id, job);
  decode(id, job).catch((err) => {
    if (!job.cancelled) fail(id, err);
  });
}

async function decode(id: number, job: DecodeJob): Promise<void> {
  const { decoder } = job;
  const header = await decoder.readHeader();
  if (job.cancelled) return;
  post({ type: "header", id, header });
  const pageSize = header.pageSize;
  const capacity = Math.max(1, Math.floor(DECODE_BATCH_BYTES / pageSize));
  const nextBatch = () => {
    const reused = job.free.pop();
    return reused && reused.pgnos.length === capacity
      ? reused
      : { pgnos: new Uint32Array(capacity), data: new Uint8Array(capacity * pageSize) };
  };
  for (;;) {
    // Decoded straight into the batch, a batch per call: nothing is allocated or copied per
    // page on this side.
    const { data, pgnos } = nextBatch();
    const count = await decoder.readPagesInto(data, pgnos);
    if (job.cancelled || count === 0) break;
    await job.credit.take();
    if (job.cancelled) return;
    post({ type: "batch", id, pgnos, data: data.buffer, count }, [data.buffer, pgnos.buffer]);
    if (count < capacity) break;
  }
  if (job.cancelled) return;
  jobs.delete(id);
  post({ type: "decoded", id, trailer: decoder.trailer! });
}

function startEncode(id: number, message: Extract<Request, { type: "encode" }>): void {
  const credit = new Credit(OUTPUT_CHUNKS_IN_FLIGHT);
  const job: EncodeJob = {
    kind: "encode",
    chain: Promise.resolve(),
    credit,
    failed: false,
    free: [],
  };
  jobs.set(id, job);
  const sink = new WritableStream<Uint8Array>({
    async write(chunk) {
      await credit.take();
      if (job.failed) return;
      const out = outputCopy(chunk, job.free, message.options.reuseChunks === true);
      post({ type: "output", id, buffer: out, length: chunk.length }, [out]);
    },
  });
  try {
    // Its sink copies each chunk: the in-worker encoder may always reuse its buffer.
    job.encoder = new Encoder(sink, message.header, { ...message.options, reuseChunks: true });
  } catch (err) {
    job.failed = true;
    fail(id, err);
  }
}

async function encodeStep(
  id: number,
  job: EncodeJob,
  message: Extract<Request, { type: "pages" | "close" }>,
): Promise<void> {
  if (job.failed || !job.encoder) return;
  try {
    if (message.type === "pages") {
      const { pgnos, count } = message;
      const pageSize = job.encoder.header.pageSize;
      const data = new Uint8Array(message.data);
      for (let i = 0; i < count; i++) {
        await job.encoder.encodePage(pgnos[i], data.subarray(i * pageSize, (i + 1) * pageSize));
        if (job.failed) return;
      }
      post({ type: "pagesAck", id, pgnos: pgnos as Uint32Array<ArrayBuffer>, data: message.data }, [
        pgnos.buffer as ArrayBuffer,
        message.data,
      ]);
    } else {
      const trailer = await job.encoder.close(message.postApplyChecksum);
      if (job.failed) return;
      jobs.delete(id);
      post({ type: "closed", id, trailer, bytes: job.encoder.bytesWritten });
    }
  } catch (err) {
    job.failed = true;
    fail(id, err);
  }
}
