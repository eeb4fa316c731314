/**
 * An encode job split over several codec workers: the main thread gathers pages into batches
 * and hands each to the least busy worker; each worker codes its batch into page frames with
 * their checksum (a stateless request, `encodePageFrames` of src/ltx); the main thread splices
 * the frames into the file in batch order with `Encoder.appendFrames`, which combines the
 * parts' CRCs into the file checksum. The file is byte for byte what one encoder makes. A full
 * image (a snapshot) is coded at the speed of all the workers instead of one; on one worker
 * this is still the cheaper way to code a large file (a call per batch, not per page). With
 * `reuseChunks`, the frames are coded into buffers that travel with the batches and back, so
 * a large file allocates nothing per batch.
 *
 * @module
 */

import {
  type EncodedFrames,
  Encoder,
  type EncoderOptions,
  type Header,
  HEADER_FLAG_NO_CHECKSUM,
  LTXError,
  pageFramesBound,
  type Trailer,
} from "../ltx/mod.ts";
import { fromWire } from "./_errors.ts";
import { EncoderCalls, PageBatch } from "./_page_batch.ts";
import { type JobChannel, openJob } from "./_pool.ts";
import { FRAME_BATCHES_IN_FLIGHT_PER_WORKER, type Reply } from "./_protocol.ts";

type FramesReply = Extract<Reply, { type: "frames" }>;

/**
 * The {@linkcode Encoder} of src/ltx, its pages coded on `workers` codec workers at once: same
 * calls, same checks, same errors, same bytes. Feed pages in ascending order with
 * {@linkcode encodePage}, then {@linkcode close}. Pages are copied before `encodePage`
 * resolves, so the caller may reuse its buffers.
 */
export class ParallelEncoder {
  /** The validated header being written. */
  readonly header: Header;
  #name: string;
  /** Writes the header, the spliced frames, the index and the trailer. */
  #file: Encoder;
  #channels: JobChannel[] = [];
  /** Batches each worker has and has not sent back yet. */
  #coding: number[] = [];
  #encoding: "frame" | "block";
  #withPageChecksum: boolean;
  #batch: PageBatch;
  #calls: EncoderCalls;
  /**
   * Set when the sink is done with a chunk when its write resolves (EncoderOptions): each
   * batch then travels with a buffer to code its frames into, which comes back with them,
   * is written as it is, and goes out again with a later batch.
   */
  #reuseChunks: boolean;
  /** Frame buffers written out and free for another batch. */
  #freeOut: ArrayBuffer[] = [];
  #maxInFlight: number;
  /** Batches sent and not yet written to the file. */
  #inFlight = 0;
  #sent = 0;
  #nextToWrite = 0;
  #done = new Map<number, FramesReply>();
  #writes: Promise<void> = Promise.resolve();
  #error: unknown;
  #wake: (() => void) | undefined;

  /**
   * Validates `header` exactly as the in-thread encoder does, then opens one job per worker.
   * @throws {LTXFormatError} when the header breaks a rule of FORMAT.md §1.1, or is a
   *   NoChecksum file with Commit 0.
   */
  constructor(
    sink: WritableStream<Uint8Array>,
    header: Header,
    options: EncoderOptions & { workers: number },
  ) {
    this.#file = new Encoder(sink, header, options);
    this.#name = options.name ?? "LTX output";
    this.header = { ...header };
    this.#encoding = options.encoding ?? "frame";
    this.#withPageChecksum = (header.flags & HEADER_FLAG_NO_CHECKSUM) === 0;
    this.#reuseChunks = options.reuseChunks ?? false;
    this.#batch = new PageBatch(this.header, this.#name, () => this.#sendBatch());
    this.#calls = new EncoderCalls(this.#name, {
      error: () => this.#error,
      fail: (reason) => this.#fail(reason),
    });
    const workers = Math.max(1, Math.floor(options.workers));
    this.#maxInFlight = workers * FRAME_BATCHES_IN_FLIGHT_PER_WORKER;
    for (let i = 0; i < workers; i++) {
      this.#channels.push(openJob((reply) => this.#onReply(i, reply), workers));
      this.#coding.push(0);
    }
  }

  /** Pages encoded so far. */
  get pageCount(): number {
    return this.#batch.pageCount;
  }

  /** Bytes of the file handed to the sink so far; the file size after `close`. */
  get bytesWritten(): number {
    return this.#file.bytesWritten;
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
   * Encodes what is queued, writes the index and trailer, waits for every byte to reach the
   * sink, then closes it.
   * @throws {LTXFormatError} when a snapshot misses its last pages, or the checksum breaks the
   *   trailer rules.
   */
  close(postApplyChecksum?: bigint): Promise<Trailer> {
    return this.#calls.run("close", async () => {
      if (this.#batch.count > 0) await this.#sendBatch();
      while (this.#inFlight > 0 && this.#error === undefined) await this.#wait();
      await this.#writes;
      if (this.#error !== undefined) throw this.#error;
      this.#release();
      const trailer = await this.#file.close(postApplyChecksum);
      this.#calls.state = "closed";
      return trailer;
    });
  }

  /** Aborts the sink (nothing more is written) and makes the encoder unusable. */
  async abort(reason?: unknown): Promise<void> {
    if (this.#calls.state !== "open") return;
    this.#calls.state = "failed";
    this.#error ??= reason ?? new LTXError(`${this.#name}: aborted`);
    this.#release();
    await this.#file.abort(reason);
  }

  async #fail(reason: unknown): Promise<void> {
    if (this.#calls.state !== "open") return;
    this.#calls.state = "failed";
    this.#error ??= reason;
    this.#release();
    await this.#writes.catch(() => {});
    await this.#file.abort(reason).catch(() => {});
  }

  #release(): void {
    for (const channel of this.#channels) channel.release();
    this.#wake?.();
  }

  async #sendBatch(): Promise<void> {
    while (this.#inFlight >= this.#maxInFlight && this.#error === undefined) await this.#wait();
    if (this.#error !== undefined) throw this.#error;
    this.#inFlight++;
    const seq = this.#sent++;
    // The worker with the fewest batches being coded: one that the scheduler holds back
    // (other processes want the cores too) gets less work instead of stalling the file.
    let pick = seq % this.#channels.length;
    for (let i = 0; i < this.#channels.length; i++) {
      if (this.#coding[i] < this.#coding[pick]) pick = i;
    }
    this.#coding[pick]++;
    const channel = this.#channels[pick];
    const out = this.#reuseChunks
      ? this.#freeOut.pop() ??
        new ArrayBuffer(pageFramesBound(this.header.pageSize, this.#batch.capacity))
      : undefined;
    const { pgnos, data, count } = this.#batch.take();
    channel.send(
      {
        type: "frames",
        id: channel.id,
        seq,
        pageSize: this.header.pageSize,
        encoding: this.#encoding,
        withPageChecksum: this.#withPageChecksum,
        pgnos,
        data: data.buffer,
        count,
        out,
      },
      out ? [data.buffer, pgnos.buffer, out] : [data.buffer, pgnos.buffer],
    );
  }

  #onReply(worker: number, reply: Reply): void {
    if (reply.type === "frames") {
      this.#coding[worker]--;
      this.#done.set(reply.seq, reply);
      this.#writeReady();
    } else if (reply.type === "error") {
      this.#error ??= fromWire(reply.error);
      this.#notify();
    }
  }

  /** Splices the batches that are next in order into the file, one write at a time. */
  #writeReady(): void {
    for (;;) {
      const next = this.#done.get(this.#nextToWrite);
      if (next === undefined) return;
      this.#done.delete(this.#nextToWrite++);
      const frames: EncodedFrames = {
        pgnos: next.pgnos,
        count: next.count,
        bytes: next.output
          ? new Uint8Array(next.output, 0, next.outputLength)
          : next.pieces.map((piece) => new Uint8Array(piece)),
        sizes: next.sizes,
        crc: next.crc,
        hashedLength: next.hashedLength,
        pageChecksums: next.pageChecksums,
      };
      this.#writes = this.#writes.then(async () => {
        if (this.#error !== undefined) return;
        try {
          await this.#file.appendFrames(frames);
          this.#inFlight--;
          // The page numbers were read by appendFrames: both buffers may be refilled now.
          this.#batch.giveBack(next.pgnos, next.data);
          // So are the frames' bytes, when the sink is done with them (reuseChunks).
          if (next.output) this.#freeOut.push(next.output);
        } catch (err) {
          this.#error ??= err;
        }
        this.#notify();
      });
    }
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  #wait(): Promise<void> {
    return new Promise((resolve) => this.#wake = resolve);
  }
}
