/**
 * The main thread's side of an encode job: gathers pages into batches, moves them to a codec
 * worker, and writes the LTX bytes the worker sends back to the sink, in order. The caller's
 * reading, the encoding and the sink's writing overlap; credits bound what is in flight to
 * `ENCODE_BATCHES_IN_FLIGHT` batches of pages and `OUTPUT_CHUNKS_IN_FLIGHT` output
 * chunks (_protocol.ts).
 *
 * @module
 */

import {
  checkNextPage,
  Encoder,
  type EncoderOptions,
  type Header,
  LTXError,
  type Trailer,
} from "../ltx/mod.ts";
import { fromWire } from "./_errors.ts";
import { type JobChannel, openJob } from "./_pool.ts";
import { ENCODE_BATCH_BYTES, ENCODE_BATCHES_IN_FLIGHT, type Reply } from "./_protocol.ts";

/**
 * Checks that a run given to `encodePages` holds whole pages (the in-thread encoder's check).
 * @throws {LTXError} when `bytes` is not `count` pages of `pageSize`.
 */
export function checkRun(name: string, count: number, bytes: number, pageSize: number): void {
  if (!Number.isInteger(count) || count < 0 || bytes !== count * pageSize) {
    throw new LTXError(
      `${name}: encodePages(): ${bytes} bytes are not ${count} pages of ${pageSize} bytes`,
    );
  }
}

/**
 * The {@linkcode Encoder} of src/ltx, run on a codec worker: same calls, same checks, same
 * errors, same bytes. Feed pages in ascending order with {@linkcode encodePage}, then
 * {@linkcode close}. Pages are copied before `encodePage` resolves, so the caller may reuse
 * its buffers.
 */
export class WorkerEncoder {
  /** The validated header being written. */
  readonly header: Header;
  #name: string;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #channel: JobChannel;
  #capacity: number;
  #data: Uint8Array<ArrayBuffer>;
  #pgnos: Uint32Array<ArrayBuffer>;
  /** Batch buffers the worker gave back. */
  #free: { pgnos: Uint32Array<ArrayBuffer>; data: Uint8Array<ArrayBuffer> }[] = [];
  /** Whether the sink is done with a chunk when its write resolves (EncoderOptions). */
  #reuseChunks: boolean;
  #count = 0;
  #credits = ENCODE_BATCHES_IN_FLIGHT;
  #pageCount = 0;
  #written = 0;
  #prevPgno = 0;
  #state: "open" | "closed" | "failed" = "open";
  #busy = false;
  #error: unknown;
  #writes: Promise<void> = Promise.resolve();
  #closed: { trailer: Trailer; bytes: number } | undefined;
  #wake: (() => void) | undefined;

  /**
   * Validates `header` exactly as the in-thread encoder does, then starts the worker's job.
   * @throws {LTXFormatError} when the header breaks a rule of FORMAT.md §1.1, or is a
   *   NoChecksum file with Commit 0.
   */
  constructor(sink: WritableStream<Uint8Array>, header: Header, options: EncoderOptions = {}) {
    // The in-thread encoder's constructor is the reference for what a valid header is.
    new Encoder(new WritableStream(), header, options);
    this.#name = options.name ?? "LTX output";
    this.header = { ...header };
    this.#reuseChunks = options.reuseChunks ?? false;
    this.#writer = sink.getWriter();
    this.#capacity = Math.max(1, Math.floor(ENCODE_BATCH_BYTES / header.pageSize));
    this.#data = new Uint8Array(this.#capacity * header.pageSize);
    this.#pgnos = new Uint32Array(this.#capacity);
    this.#channel = openJob((reply) => this.#onReply(reply));
    this.#channel.send({
      type: "encode",
      id: this.#channel.id,
      header: this.header,
      options: {
        encoding: options.encoding ?? "frame",
        name: this.#name,
        reuseChunks: this.#reuseChunks,
      },
    });
  }

  /** Pages encoded so far. */
  get pageCount(): number {
    return this.#pageCount;
  }

  /** Bytes of the file handed to the sink so far; the file size after `close`. */
  get bytesWritten(): number {
    return this.#closed?.bytes ?? this.#written;
  }

  /**
   * Queues one page for compression.
   * @throws {LTXFormatError} on a wrong size, pgno 0, the lock page, a pgno above Commit, a
   *   page out of order, or a gap in a snapshot (FORMAT.md §1.4).
   * @throws the sink's error when writing the output failed.
   */
  async encodePage(pgno: number, data: Uint8Array): Promise<void> {
    this.#enter("encodePage");
    try {
      if (this.#error !== undefined) throw this.#error;
      this.#checkPage(pgno, data);
      this.#data.set(data, this.#count * this.header.pageSize);
      this.#pgnos[this.#count++] = pgno;
      this.#prevPgno = pgno;
      this.#pageCount++;
      if (this.#count === this.#capacity) await this.#sendBatch();
    } catch (err) {
      await this.#fail(err);
      throw err;
    } finally {
      this.#busy = false;
    }
  }

  /**
   * Queues `count` consecutive pages, `first` to `first + count - 1`, held back to back in
   * `data`: what `count` calls of `encodePage` do, with one copy of the run and no per-page
   * call (a full image is read in large runs). `data` may be reused once this resolves.
   * @throws {LTXFormatError} as `encodePage` would for the first page that breaks a rule.
   * @throws {LTXError} when `data` does not hold `count` pages.
   * @throws the sink's error when writing the output failed.
   */
  async encodePages(first: number, count: number, data: Uint8Array): Promise<void> {
    this.#enter("encodePages");
    try {
      if (this.#error !== undefined) throw this.#error;
      const { pageSize } = this.header;
      checkRun(this.#name, count, data.length, pageSize);
      for (let i = 0; i < count;) {
        const n = Math.min(count - i, this.#capacity - this.#count);
        for (let k = 0; k < n; k++) {
          const pgno = first + i + k;
          checkNextPage(this.header, this.#name, pgno, pageSize, this.#prevPgno);
          this.#pgnos[this.#count + k] = pgno;
          this.#prevPgno = pgno;
        }
        this.#data.set(data.subarray(i * pageSize, (i + n) * pageSize), this.#count * pageSize);
        this.#count += n;
        this.#pageCount += n;
        i += n;
        if (this.#count === this.#capacity) await this.#sendBatch();
      }
    } catch (err) {
      await this.#fail(err);
      throw err;
    } finally {
      this.#busy = false;
    }
  }

  /**
   * Encodes what is queued, writes the index and trailer, waits for every byte to reach the
   * sink, then closes it.
   * @throws {LTXFormatError} when a snapshot misses its last pages, or the checksum breaks the
   *   trailer rules.
   */
  async close(postApplyChecksum?: bigint): Promise<Trailer> {
    this.#enter("close");
    try {
      if (this.#error !== undefined) throw this.#error;
      if (this.#count > 0) await this.#sendBatch();
      this.#channel.send({ type: "close", id: this.#channel.id, postApplyChecksum });
      while (this.#closed === undefined && this.#error === undefined) await this.#wait();
      await this.#writes;
      if (this.#error !== undefined) throw this.#error;
      await this.#writer.close();
      this.#state = "closed";
      this.#channel.release();
      return this.#closed!.trailer;
    } catch (err) {
      await this.#fail(err);
      throw err;
    } finally {
      this.#busy = false;
    }
  }

  /** Aborts the sink (nothing more is written) and makes the encoder unusable. */
  async abort(reason?: unknown): Promise<void> {
    if (this.#state !== "open") return;
    this.#state = "failed";
    this.#stopJob();
    await this.#writer.abort(reason);
  }

  #enter(method: string): void {
    if (this.#state !== "open") {
      throw new LTXError(`${this.#name}: ${method}() on an encoder that is ${this.#state}`);
    }
    if (this.#busy) {
      throw new LTXError(`${this.#name}: ${method}() while another call is running; await it`);
    }
    this.#busy = true;
  }

  async #fail(reason: unknown): Promise<void> {
    if (this.#state !== "open") return;
    this.#state = "failed";
    this.#stopJob();
    await this.#writes.catch(() => {});
    await this.#writer.abort(reason).catch(() => {});
  }

  #stopJob(): void {
    this.#channel.send({ type: "cancel", id: this.#channel.id });
    this.#channel.release();
    this.#wake?.();
  }

  /** The in-thread encoder's page checks, here so that a bad page fails the call it came with. */
  #checkPage(pgno: number, data: Uint8Array): void {
    checkNextPage(this.header, this.#name, pgno, data.length, this.#prevPgno);
  }

  async #sendBatch(): Promise<void> {
    while (this.#credits === 0 && this.#error === undefined) await this.#wait();
    if (this.#error !== undefined) throw this.#error;
    this.#credits--;
    const { id } = this.#channel;
    this.#channel.send(
      { type: "pages", id, pgnos: this.#pgnos, data: this.#data.buffer, count: this.#count },
      [this.#data.buffer, this.#pgnos.buffer],
    );
    const reused = this.#free.pop();
    this.#data = reused?.data ?? new Uint8Array(this.#capacity * this.header.pageSize);
    this.#pgnos = reused?.pgnos ?? new Uint32Array(this.#capacity);
    this.#count = 0;
  }

  #onReply(reply: Reply): void {
    switch (reply.type) {
      case "pagesAck":
        if (reply.data && reply.pgnos) {
          this.#free.push({ pgnos: reply.pgnos, data: new Uint8Array(reply.data) });
        }
        this.#credits++;
        break;
      case "output": {
        const chunk = new Uint8Array(reply.buffer, 0, reply.length);
        const { id } = this.#channel;
        this.#writes = this.#writes.then(async () => {
          if (this.#error !== undefined) return;
          try {
            await this.#writer.write(chunk);
            this.#written += chunk.length;
            if (this.#reuseChunks) {
              // The sink is done with the chunk: its buffer goes back for the next one.
              this.#channel.send({ type: "outputAck", id, buffer: reply.buffer }, [reply.buffer]);
            } else {
              this.#channel.send({ type: "outputAck", id });
            }
          } catch (err) {
            this.#error ??= err;
            this.#wake?.();
          }
        });
        return;
      }
      case "closed":
        this.#closed = { trailer: reply.trailer, bytes: reply.bytes };
        break;
      case "error":
        this.#error ??= fromWire(reply.error);
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
}
