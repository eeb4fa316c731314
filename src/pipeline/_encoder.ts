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
  Encoder,
  type EncoderOptions,
  type Header,
  type PageFill,
  type Trailer,
} from "../ltx/mod.ts";
import { fromWire } from "./_errors.ts";
import { EncoderCalls, PageBatch } from "./_page_batch.ts";
import { type JobChannel, openJob } from "./_pool.ts";
import { ENCODE_BATCHES_IN_FLIGHT, type Reply } from "./_protocol.ts";

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
  #batch: PageBatch;
  #calls: EncoderCalls;
  /** Whether the sink is done with a chunk when its write resolves (EncoderOptions). */
  #reuseChunks: boolean;
  #credits = ENCODE_BATCHES_IN_FLIGHT;
  #written = 0;
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
    this.#batch = new PageBatch(this.header, this.#name, () => this.#sendBatch());
    this.#calls = new EncoderCalls(this.#name, {
      error: () => this.#error,
      fail: (reason) => this.#fail(reason),
    });
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
    return this.#batch.pageCount;
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
  encodePage(pgno: number, data: Uint8Array): Promise<void> {
    return this.#calls.run("encodePage", () => this.#batch.add(pgno, data));
  }

  /**
   * Queues `count` consecutive pages, `first` to `first + count - 1`, held back to back in
   * `data`: what `count` calls of `encodePage` do, with one copy of the run and no per-page
   * call (a full image is read in large runs). `data` may be reused once this resolves.
   * @throws {LTXFormatError} as `encodePage` would for the first page that breaks a rule.
   * @throws {LTXError} when `data` does not hold `count` pages.
   * @throws the sink's error when writing the output failed.
   */
  encodePages(first: number, count: number, data: Uint8Array): Promise<void> {
    return this.#calls.run("encodePages", () => this.#batch.addRun(first, count, data));
  }

  /**
   * Queues `count` consecutive pages from `first` that `fill` writes straight into the batch
   * that goes to the worker (one call per batch the run reaches, each awaited before the
   * next): what `encodePages` does, without the copy.
   * @throws {LTXFormatError} as `encodePage` would for the first page that breaks a rule.
   * @throws what `fill` throws; the sink's error when writing the output failed.
   */
  encodePagesFrom(first: number, count: number, fill: PageFill): Promise<void> {
    return this.#calls.run("encodePagesFrom", () => this.#batch.fillRun(first, count, fill));
  }

  /**
   * Encodes what is queued, writes the index and trailer, waits for every byte to reach the
   * sink, then closes it.
   * @throws {LTXFormatError} when a snapshot misses its last pages, or the checksum breaks the
   *   trailer rules.
   */
  close(postApplyChecksum?: bigint): Promise<Trailer> {
    return this.#calls.run("close", async () => {
      if (this.#batch.count > 0) await this.#sendBatch();
      this.#channel.send({ type: "close", id: this.#channel.id, postApplyChecksum });
      while (this.#closed === undefined && this.#error === undefined) await this.#wait();
      await this.#writes;
      if (this.#error !== undefined) throw this.#error;
      await this.#writer.close();
      this.#calls.state = "closed";
      this.#channel.release();
      return this.#closed!.trailer;
    });
  }

  /** Aborts the sink (nothing more is written) and makes the encoder unusable. */
  async abort(reason?: unknown): Promise<void> {
    if (this.#calls.state !== "open") return;
    this.#calls.state = "failed";
    this.#stopJob();
    await this.#writer.abort(reason);
  }

  async #fail(reason: unknown): Promise<void> {
    if (this.#calls.state !== "open") return;
    this.#calls.state = "failed";
    this.#stopJob();
    await this.#writes.catch(() => {});
    await this.#writer.abort(reason).catch(() => {});
  }

  #stopJob(): void {
    this.#channel.send({ type: "cancel", id: this.#channel.id });
    this.#channel.release();
    this.#wake?.();
  }

  async #sendBatch(): Promise<void> {
    while (this.#credits === 0 && this.#error === undefined) await this.#wait();
    if (this.#error !== undefined) throw this.#error;
    this.#credits--;
    const { id } = this.#channel;
    const { pgnos, data, count } = this.#batch.take();
    this.#channel.send({ type: "pages", id, pgnos, data: data.buffer, count }, [
      data.buffer,
      pgnos.buffer,
    ]);
  }

  #onReply(reply: Reply): void {
    switch (reply.type) {
      case "pagesAck":
        if (reply.data && reply.pgnos) this.#batch.giveBack(reply.pgnos, reply.data);
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
