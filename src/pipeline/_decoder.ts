/**
 * The main thread's side of a decode job: reads the LTX bytes from the source stream (I/O stays
 * here), moves them to a codec worker, and hands out the verified pages the worker sends back.
 * Reading, decoding and the caller's writing overlap; credits bound what is in flight to
 * {@linkcode INPUT_BYTES_IN_FLIGHT} of input and `DECODE_BATCHES_IN_FLIGHT` batches of
 * pages per file.
 *
 * @module
 */

import { type Header, LTXError, type Page, type Trailer } from "../ltx/mod.ts";
import { fromWire } from "./_errors.ts";
import { type JobChannel, openJob } from "./_pool.ts";
import { INPUT_BYTES_IN_FLIGHT, INPUT_MESSAGE_BYTES, type Reply } from "./_protocol.ts";

/** Options of {@linkcode WorkerDecoder}. */
export interface WorkerDecoderOptions {
  /** The file being read (path or object key), named in every error message. */
  name?: string;
}

interface Batch {
  pgnos: Uint32Array<ArrayBuffer>;
  data: Uint8Array<ArrayBuffer>;
  count: number;
  at: number;
}

/**
 * The {@linkcode Decoder} of src/ltx, run on a codec worker: same calls, same checks, same
 * errors (classes and messages). Call {@linkcode readHeader}, then {@linkcode readPage} until it
 * returns null: only then was the whole file verified.
 *
 * Unlike the in-thread decoder's pages, a page's `data` is a view into a batch buffer that goes
 * back to the worker for reuse once the decoder is two batches further: it stays valid for at
 * least the next 16 `readPage` calls (a batch holds 1 MiB of pages, and at least 16). Copy it
 * to keep it longer; the merge, the restore's writer and both encoders consume each page
 * before that.
 */
export class WorkerDecoder {
  #name: string;
  #source: ReadableStream<Uint8Array>;
  #reader: ReadableStreamDefaultReader<Uint8Array> | ReadableStreamBYOBReader | undefined;
  #channel: JobChannel | undefined;
  #header: Header | undefined;
  #trailer: Trailer | undefined;
  #pageCount = 0;
  #done = false;
  #error: unknown;
  #busy = false;
  // What the worker sent and the caller has not taken yet.
  #pendingHeader: Header | undefined;
  #batches: Batch[] = [];
  #current: Batch | undefined;
  #retired: Batch | undefined;
  #pendingTrailer: Trailer | undefined;
  #pendingError: unknown;
  #wake: (() => void) | undefined;
  // The input pump.
  #inFlight = 0;
  #spare: Uint8Array<ArrayBuffer>[] = [];
  #pumpWake: (() => void) | undefined;
  #inputError: unknown;
  #stopped = false;

  /** Keeps `source`; nothing is read and no worker is used before the first call. */
  constructor(source: ReadableStream<Uint8Array>, options: WorkerDecoderOptions = {}) {
    this.#name = options.name ?? "LTX stream";
    this.#source = source;
  }

  /** The file name used in error messages. */
  get name(): string {
    return this.#name;
  }

  /** The header, once {@linkcode readHeader} returned. */
  get header(): Header | undefined {
    return this.#header;
  }

  /** The verified trailer; set once {@linkcode readPage} returned null. */
  get trailer(): Trailer | undefined {
    return this.#trailer;
  }

  /** Pages returned so far. */
  get pageCount(): number {
    return this.#pageCount;
  }

  /**
   * Reads and validates the header. Later calls return the same header.
   * @throws {LTXFormatError} on a short file, bad magic or a broken header rule.
   */
  async readHeader(): Promise<Header> {
    if (this.#header) return this.#header;
    return await this.#guard(async () => {
      this.#start();
      for (;;) {
        if (this.#pendingHeader) {
          this.#header = this.#pendingHeader;
          return this.#header;
        }
        if (this.#pendingError !== undefined) throw this.#pendingError;
        await this.#wait();
      }
    });
  }

  /**
   * Returns the next page, or null once the end of the file was verified (index, trailer,
   * checksums). After null, later calls return null.
   * @throws {LTXFormatError} on malformed bytes or a broken rule.
   * @throws {LTXChecksumError} when the file checksum or the rolling checksum does not match.
   */
  async readPage(): Promise<Page | null> {
    if (this.#done && this.#error === undefined) return null;
    const header = this.#header ?? (await this.readHeader());
    return await this.#guard(async () => {
      const pageSize = header.pageSize;
      for (;;) {
        const batch = this.#current;
        if (batch && batch.at < batch.count) {
          const i = batch.at++;
          this.#pageCount++;
          return {
            pgno: batch.pgnos[i],
            data: batch.data.subarray(i * pageSize, (i + 1) * pageSize),
          };
        }
        if (batch) {
          this.#current = undefined;
          this.#ackBatch(batch);
        }
        if (this.#batches.length > 0) {
          this.#current = this.#batches.shift();
          continue;
        }
        if (this.#pendingError !== undefined) throw this.#pendingError;
        if (this.#pendingTrailer) {
          this.#trailer = this.#pendingTrailer;
          this.#done = true;
          this.#finish();
          return null;
        }
        await this.#wait();
      }
    });
  }

  /** Stops reading, cancels the source and the worker's job. Later calls throw. */
  async cancel(): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    this.#error = new LTXError(`${this.#name}: the decoder was cancelled`);
    await this.#stop(this.#error);
  }

  /** Runs one step; on failure stops everything and remembers the error. */
  async #guard<T>(step: () => Promise<T>): Promise<T> {
    if (this.#error !== undefined) throw this.#error;
    if (this.#busy) {
      throw new LTXError(`${this.#name}: concurrent calls on one decoder; await each call`);
    }
    this.#busy = true;
    try {
      return await step();
    } catch (err) {
      this.#error = err;
      if (!this.#done) {
        this.#done = true;
        await this.#stop(err);
      }
      throw err;
    } finally {
      this.#busy = false;
    }
  }

  /**
   * Gives the worker credit for one more batch, and back the buffers of the batch before
   * `done` (not `done`'s own: a caller such as the merge still holds its last page).
   */
  #ackBatch(done: Batch): void {
    const channel = this.#channel;
    if (!channel) return;
    const old = this.#retired;
    this.#retired = done;
    if (old === undefined) {
      channel.send({ type: "batchAck", id: channel.id });
      return;
    }
    channel.send(
      { type: "batchAck", id: channel.id, pgnos: old.pgnos, data: old.data.buffer },
      [old.pgnos.buffer, old.data.buffer],
    );
  }

  #start(): void {
    if (this.#channel) return;
    this.#channel = openJob((reply) => this.#onReply(reply));
    this.#channel.send({ type: "decode", id: this.#channel.id, name: this.#name });
    this.#pump().catch(() => {}); // its failures reach the caller through the worker
  }

  #onReply(reply: Reply): void {
    switch (reply.type) {
      case "header":
        this.#pendingHeader = reply.header;
        break;
      case "consumed":
        this.#inFlight -= reply.bytes;
        if (
          this.#spare.length < SPARE_INPUT_BUFFERS &&
          reply.buffer.byteLength === INPUT_MESSAGE_BYTES
        ) {
          this.#spare.push(new Uint8Array(reply.buffer));
        }
        this.#pumpWake?.();
        return;
      case "batch":
        this.#batches.push({
          pgnos: reply.pgnos,
          data: new Uint8Array(reply.data),
          count: reply.count,
          at: 0,
        });
        break;
      case "decoded":
        this.#pendingTrailer = reply.trailer;
        break;
      case "error":
        this.#pendingError = reply.error.input && this.#inputError !== undefined
          ? this.#inputError
          : fromWire(reply.error);
        this.#channel?.release();
        break;
      default:
        return;
    }
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  #wait(): Promise<void> {
    return new Promise((resolve) => this.#wake = resolve);
  }

  /**
   * Moves the source's bytes to the worker within the credit, gathered into messages of
   * {@linkcode INPUT_MESSAGE_BYTES}. The bytes are always copied into buffers made here: a
   * buffer that a read op filled is never transferred, because the runtime keeps such a buffer
   * alive until this thread's next garbage collection, which a worker's work does not prompt.
   * A byte stream is read in BYOB mode into one reused buffer.
   */
  async #pump(): Promise<void> {
    const channel = this.#channel!;
    const id = channel.id;
    const read = this.#reader ? undefined : openReader(this.#source);
    if (read === undefined) return;
    this.#reader = read.reader;
    let staging: Uint8Array<ArrayBuffer> | undefined;
    let staged = 0;
    const flush = () => {
      if (staging === undefined || staged === 0) return;
      channel.send({ type: "input", id, buffer: staging.buffer, length: staged }, [
        staging.buffer,
      ]);
      this.#inFlight += staged;
      staging = undefined;
      staged = 0;
    };
    try {
      for (;;) {
        while (this.#inFlight >= INPUT_BYTES_IN_FLIGHT && !this.#stopped) {
          await new Promise<void>((resolve) => this.#pumpWake = resolve);
          this.#pumpWake = undefined;
        }
        if (this.#stopped) return;
        const { value, done } = await read.next();
        if (this.#stopped) return;
        if (done) {
          flush();
          channel.send({ type: "inputEnd", id });
          read.reader.releaseLock();
          this.#reader = undefined;
          return;
        }
        let at = 0;
        while (at < value.byteLength) {
          staging ??= this.#spare.pop() ?? new Uint8Array(INPUT_MESSAGE_BYTES);
          const n = Math.min(value.byteLength - at, staging.length - staged);
          staging.set(value.subarray(at, at + n), staged);
          staged += n;
          at += n;
          if (staged === staging.length) flush();
        }
      }
    } catch (err) {
      if (this.#stopped) return;
      this.#inputError = err;
      flush(); // the bytes before the failure decode first, as in the in-thread decoder
      channel.send({ type: "inputFailed", id });
    }
  }

  /** The worker verified the file: the job is over. */
  #finish(): void {
    this.#stopped = true;
    this.#channel?.release();
    this.#batches = [];
  }

  async #stop(reason: unknown): Promise<void> {
    this.#stopped = true;
    this.#pumpWake?.();
    this.#batches = [];
    this.#current = undefined;
    if (this.#channel) {
      this.#channel.send({ type: "cancel", id: this.#channel.id });
      this.#channel.release();
    }
    const reader = this.#reader ?? (this.#source.locked ? undefined : this.#source.getReader());
    this.#reader = undefined;
    await reader?.cancel(reason).catch(() => {});
  }
}

/** Input buffers kept for reuse: enough for the bytes in flight. */
const SPARE_INPUT_BUFFERS = Math.ceil(INPUT_BYTES_IN_FLIGHT / INPUT_MESSAGE_BYTES) + 1;

/** Size of the reused buffer a byte stream is read into. */
const BYOB_READ_BYTES = 1 << 20;

/** A reader of `source`: BYOB into one reused buffer when it is a byte stream. */
function openReader(source: ReadableStream<Uint8Array>): {
  reader: ReadableStreamDefaultReader<Uint8Array> | ReadableStreamBYOBReader;
  next(): Promise<ReadableStreamReadResult<Uint8Array>>;
} {
  let byob: ReadableStreamBYOBReader | undefined;
  try {
    byob = source.getReader({ mode: "byob" });
  } catch {
    // Not a byte stream.
  }
  if (byob === undefined) {
    const reader = source.getReader();
    return { reader, next: () => reader.read() };
  }
  const reader = byob;
  let buffer = new ArrayBuffer(BYOB_READ_BYTES);
  return {
    reader,
    async next() {
      const result = await reader.read(new Uint8Array(buffer));
      if (result.value) buffer = result.value.buffer as ArrayBuffer;
      return result as ReadableStreamReadResult<Uint8Array>;
    },
  };
}
