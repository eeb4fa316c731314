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
 * errors (classes and messages). Call {@linkcode readHeader}, then {@linkcode readPage},
 * {@linkcode readPageView} or {@linkcode readPageInto} until it returns null: only then was the
 * whole file verified. The worker decodes straight into batch buffers that travel back and forth.
 *
 * Unlike the in-thread decoder's pages, a page's `data` from `readPage` is a view into a batch
 * buffer that goes back to the worker for reuse once the decoder is two batches further: it
 * stays valid for at least the next 16 `readPage` calls (a batch holds 1 MiB of pages, and at
 * least 16). Copy it to keep it longer, or use `readPageInto`.
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
  /** The page object {@linkcode readPageView} reuses. */
  #view: Page = { pgno: 0, data: new Uint8Array(0) };
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
    const { pageSize } = this.#header ?? (await this.readHeader());
    const batch = await this.#guard(() => this.#nextPage());
    if (batch === null) return null;
    const i = batch.at - 1;
    return { pgno: batch.pgnos[i], data: batch.data.subarray(i * pageSize, (i + 1) * pageSize) };
  }

  /**
   * The next page as a view of the worker's batch, in a page object reused for every page, or
   * null once the end of the file was verified, like src/ltx's {@linkcode Decoder.readPageView}:
   * valid until the next read on this decoder; nothing is allocated or copied.
   * @throws {LTXFormatError} on malformed bytes or a broken rule.
   * @throws {LTXChecksumError} when the file checksum or the rolling checksum does not match.
   */
  async readPageView(): Promise<Page | null> {
    if (this.#done && this.#error === undefined) return null;
    const { pageSize } = this.#header ?? (await this.readHeader());
    const batch = await this.#guard(() => this.#nextPage());
    if (batch === null) return null;
    const i = batch.at - 1;
    const view = this.#view;
    view.pgno = batch.pgnos[i];
    view.data = batch.data.subarray(i * pageSize, (i + 1) * pageSize);
    return view;
  }

  /**
   * Copies the next page into `buffer` at `offset` (the header's page size in bytes), or
   * returns null once the end of the file was verified, like src/ltx's
   * {@linkcode Decoder.readPageInto}: the page is the caller's, valid for as long as it likes.
   * @returns the page number of the page now in the slot, or null at the verified end.
   * @throws {RangeError} when the slot does not fit in `buffer`.
   * @throws {LTXFormatError} on malformed bytes or a broken rule.
   * @throws {LTXChecksumError} when the file checksum or the rolling checksum does not match.
   */
  async readPageInto(buffer: Uint8Array, offset = 0): Promise<number | null> {
    if (this.#done && this.#error === undefined) return null;
    const { pageSize } = this.#header ?? (await this.readHeader());
    if (!(offset >= 0 && offset + pageSize <= buffer.length)) {
      throw new RangeError(
        `${this.#name}: readPageInto needs ${pageSize} bytes at offset ${offset}, the buffer ` +
          `has ${buffer.length}`,
      );
    }
    const batch = await this.#guard(() => this.#nextPage());
    if (batch === null) return null;
    const i = batch.at - 1;
    buffer.set(batch.data.subarray(i * pageSize, (i + 1) * pageSize), offset);
    return batch.pgnos[i];
  }

  /**
   * Moves to the next page: the batch that holds it, at the index after it; or null once the
   * worker verified the end of the file.
   */
  async #nextPage(): Promise<Batch | null> {
    for (;;) {
      const batch = this.#current;
      if (batch && batch.at < batch.count) {
        batch.at++;
        this.#pageCount++;
        return batch;
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
   * {@linkcode INPUT_MESSAGE_BYTES}. A byte stream (a replica file) is read in BYOB mode
   * straight into the message buffers, which the worker gives back for reuse, so the bytes are
   * never copied on this thread (a 256 MiB restore peaks at the same RSS, 137 MB, as when
   * they were copied into buffers made here); chunks of any other stream are copied in.
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
    const endOfInput = () => {
      flush();
      channel.send({ type: "inputEnd", id });
      read.reader.releaseLock();
      this.#reader = undefined;
    };
    try {
      for (;;) {
        while (this.#inFlight >= INPUT_BYTES_IN_FLIGHT && !this.#stopped) {
          await new Promise<void>((resolve) => this.#pumpWake = resolve);
          this.#pumpWake = undefined;
        }
        if (this.#stopped) return;
        if (read.byob) {
          // Straight into the message's buffer: no copy on this thread.
          staging ??= this.#spare.pop() ?? new Uint8Array(INPUT_MESSAGE_BYTES);
          const { value, done } = await read.byob.read(staging.subarray(staged));
          // The read moved the buffer into `value`; a cancelled stream returns none.
          if (value) {
            staging = new Uint8Array(value.buffer as ArrayBuffer);
          } else {
            staging = undefined;
            staged = 0;
          }
          if (this.#stopped) return;
          if (done) return endOfInput();
          staged += value.byteLength;
          if (staged === staging!.length) flush();
          continue;
        }
        const { value, done } = await read.next();
        if (this.#stopped) return;
        if (done) return endOfInput();
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

/**
 * A reader of `source`: `byob` when it is a byte stream (the pump reads into its message
 * buffers), else a default reader whose chunks the pump copies.
 */
function openReader(source: ReadableStream<Uint8Array>): {
  reader: ReadableStreamDefaultReader<Uint8Array> | ReadableStreamBYOBReader;
  byob?: ReadableStreamBYOBReader;
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
  return {
    reader,
    byob,
    next: () => Promise.reject(new TypeError("read a byte stream with `byob`")),
  };
}
