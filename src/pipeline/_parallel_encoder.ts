/**
 * An encode job split over several codec workers: the main thread gathers pages into batches
 * and hands them to the workers in turn; each worker codes its batch into page frames with
 * their checksum (a stateless request, `SharedFrameEncoder` of src/ltx); the main thread
 * splices the frames into the file in batch order with `Encoder.appendFrames`, which combines
 * the parts' CRCs into the file checksum. The file is byte for byte what one encoder makes. A
 * full image (a snapshot) is coded at the speed of all the workers instead of one; on one
 * worker this is still the cheaper way to code a large file (a call per batch, not per page).
 *
 * Each worker has a `WebAssembly.Memory` shared with the main thread, with room for its
 * batches in flight and the one being gathered: pages are read (or copied) into it, the codec
 * codes them where they are, and the frames are written to the sink from there. Nothing is
 * copied between the threads or in and out of WebAssembly, and the messages carry only
 * offsets. A slot is used again only once its frames were written (the sink is done with them
 * when its write resolves with `reuseChunks`; otherwise the frames are copied out for it).
 *
 * @module
 */

import {
  type EncodedFrames,
  encodePageFrames,
  Encoder,
  type EncoderOptions,
  type Header,
  HEADER_FLAG_NO_CHECKSUM,
  LTXError,
  type PageFill,
  pageFramesBound,
  SHARED_CODER_RESERVED_BYTES,
  type SharedBatchLayout,
  type Trailer,
} from "../ltx/mod.ts";
import { fromWire } from "./_errors.ts";
import { type BatchBuffers, batchCapacity, EncoderCalls, PageBatch } from "./_page_batch.ts";
import { type JobChannel, openJob } from "./_pool.ts";
import { FRAME_BATCHES_IN_FLIGHT_PER_WORKER, FRAME_PIECE_BYTES, type Reply } from "./_protocol.ts";

type FramesReply = Extract<Reply, { type: "frames" }>;

/** Room for one batch in a worker's memory. */
interface Slot extends BatchBuffers<SharedArrayBuffer> {
  layout: SharedBatchLayout;
}

/** One worker's share of the job: its channel, its memory and the slots in it. */
interface Lane {
  channel: JobChannel;
  memory: WebAssembly.Memory;
  slots: Slot[];
  /** Batches sent to the worker and not yet coded. */
  queued: number;
}

/**
 * With {@linkcode codeOnMainThreadToo}, a batch is coded on the main thread when its worker
 * still has this many to code: the worker is behind, and the main thread would only wait.
 */
const HELP_WHEN_QUEUED = 2;

/** Whether parallel encoders opened from now on may code batches on the main thread too. */
let mainThreadHelps = false;

/**
 * Lets the parallel encoders of this process code batches on the main thread too whenever
 * their workers are behind (a batch is then coded where it was gathered, blocking the event
 * loop for the ~3 ms it takes). For a command that does nothing else while it codes a large
 * image (`sluice snapshot`): on two cores one worker leaves the main thread idle most of the
 * time. Off by default: a daemon's event loop serves its other databases meanwhile.
 */
export function codeOnMainThreadToo(on: boolean): void {
  mainThreadHelps = on;
}

/** Slack the codec may write past a batch's frames (wide copies). */
const FRAME_SLACK = 256;

/**
 * `count` slots for batches of `capacity` pages of `pageSize` bytes in a new shared memory,
 * above the codec's own part.
 */
function laneMemory(
  pageSize: number,
  capacity: number,
  count: number,
): { memory: WebAssembly.Memory; slots: Slot[] } {
  const align = (n: number) => Math.ceil(n / 64) * 64;
  const numbers = align(capacity * 4);
  const pages = align(capacity * pageSize);
  const frames = align(pageFramesBound(pageSize, capacity) + FRAME_SLACK);
  const slotBytes = 2 * numbers + pages + frames;
  const bytes = SHARED_CODER_RESERVED_BYTES + count * slotBytes;
  const wasmPages = Math.ceil(bytes / 65536);
  const memory = new WebAssembly.Memory({ initial: wasmPages, maximum: wasmPages, shared: true });
  const buffer = memory.buffer as SharedArrayBuffer;
  const slots: Slot[] = [];
  for (let k = 0; k < count; k++) {
    const at = SHARED_CODER_RESERVED_BYTES + k * slotBytes;
    const layout = {
      pgnos: at,
      sizes: at + numbers,
      src: at + 2 * numbers,
      dst: at + 2 * numbers + pages,
    };
    slots.push({
      layout,
      pgnos: new Uint32Array(buffer, layout.pgnos, capacity),
      data: new Uint8Array(buffer, layout.src, capacity * pageSize),
    });
  }
  return { memory, slots };
}

/** Options of {@linkcode ParallelEncoder}. */
export interface ParallelEncoderOptions extends EncoderOptions {
  /** Codec workers to spread the batches over (one at least). */
  workers: number;
  /**
   * Bytes of pages per batch (default `ENCODE_BATCH_BYTES`, 1 MiB). Each batch costs a round
   * trip to a worker (~0.1 ms of CPU on both threads), so a long image goes faster in larger
   * ones; each batch in flight holds about twice this in memory.
   */
  batchBytes?: number;
}

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
  #lanes: Lane[] = [];
  #encoding: "frame" | "block";
  #withPageChecksum: boolean;
  #batch: PageBatch<SharedArrayBuffer>;
  #calls: EncoderCalls;
  /** Set when the sink is done with a chunk when its write resolves (EncoderOptions). */
  #reuseChunks: boolean;
  /** Whether this thread codes batches too when the workers are behind. */
  #helps = mainThreadHelps;
  /** Batches in flight at most: all slots but the one being gathered. */
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
    options: ParallelEncoderOptions,
  ) {
    this.#file = new Encoder(sink, header, options);
    this.#name = options.name ?? "LTX output";
    this.header = { ...header };
    this.#encoding = options.encoding ?? "frame";
    this.#withPageChecksum = (header.flags & HEADER_FLAG_NO_CHECKSUM) === 0;
    this.#reuseChunks = options.reuseChunks ?? false;
    const workers = Math.max(1, Math.floor(options.workers));
    const slotsPerLane = FRAME_BATCHES_IN_FLIGHT_PER_WORKER + 1;
    // Batch n goes to worker n % workers, in that worker's slot (n / workers) % slotsPerLane:
    // the slot of the batch after the last one sent is free while fewer than this many are
    // in flight.
    this.#maxInFlight = workers * slotsPerLane - 1;
    const capacity = batchCapacity(header.pageSize, options.batchBytes);
    for (let i = 0; i < workers; i++) {
      const { memory, slots } = laneMemory(header.pageSize, capacity, slotsPerLane);
      const channel = openJob((reply) => this.#onReply(reply), workers);
      channel.send({ type: "framesJob", id: channel.id, memory });
      this.#lanes.push({ channel, memory, slots, queued: 0 });
    }
    this.#batch = new PageBatch<SharedArrayBuffer>(
      this.header,
      this.#name,
      () => this.#sendBatch(),
      options.batchBytes,
      (n) => this.#lanes[n % workers].slots[Math.floor(n / workers) % slotsPerLane],
    );
    this.#calls = new EncoderCalls(this.#name, {
      error: () => this.#error,
      fail: (reason) => this.#fail(reason),
    });
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
    for (const { channel } of this.#lanes) {
      // The worker drops the job's codec and memory.
      channel.send({ type: "cancel", id: channel.id });
      channel.release();
    }
    this.#wake?.();
  }

  async #sendBatch(): Promise<void> {
    while (this.#inFlight >= this.#maxInFlight && this.#error === undefined) await this.#wait();
    if (this.#error !== undefined) throw this.#error;
    this.#inFlight++;
    const seq = this.#sent++;
    const lane = this.#lanes[seq % this.#lanes.length];
    const { channel, slots } = lane;
    const slot = slots[Math.floor(seq / this.#lanes.length) % slots.length];
    const { count } = this.#batch.take();
    if (this.#helps && lane.queued >= HELP_WHEN_QUEUED) {
      this.#codeHere(seq, lane, slot, count);
      return;
    }
    lane.queued++;
    channel.send({
      type: "frames",
      id: channel.id,
      seq,
      pageSize: this.header.pageSize,
      encoding: this.#encoding,
      withPageChecksum: this.#withPageChecksum,
      layout: slot.layout,
      count,
    });
  }

  /**
   * Codes batch `seq` on this thread, in its slot of `lane`'s memory (copied into this
   * thread's codec and back: the worker's codec owns the start of that memory), as its worker
   * would have.
   */
  #codeHere(seq: number, lane: Lane, slot: Slot, count: number): void {
    const { pageSize } = this.header;
    const buffer = lane.memory.buffer as SharedArrayBuffer;
    try {
      const frames = encodePageFrames(
        pageSize,
        slot.pgnos,
        slot.data.subarray(0, count * pageSize),
        count,
        { encoding: this.#encoding, withPageChecksum: this.#withPageChecksum },
        new Uint8Array(buffer, slot.layout.dst, pageFramesBound(pageSize, count)),
      );
      new Uint32Array(buffer, slot.layout.sizes, count).set(frames.sizes.subarray(0, count));
      this.#done.set(seq, {
        type: "frames",
        id: lane.channel.id,
        seq,
        count,
        bytes: (frames.bytes as Uint8Array).length,
        crc: frames.crc,
        hashedLength: frames.hashedLength,
        pageChecksums: frames.pageChecksums,
      });
      this.#writeReady();
    } catch (err) {
      this.#error ??= err;
      this.#notify();
    }
  }

  #onReply(reply: Reply): void {
    if (reply.type === "frames") {
      const lane = this.#lanes[reply.seq % this.#lanes.length];
      lane.queued--;
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
      const seq = this.#nextToWrite;
      const next = this.#done.get(seq);
      if (next === undefined) return;
      this.#done.delete(this.#nextToWrite++);
      const { memory, slots } = this.#lanes[seq % this.#lanes.length];
      const slot = slots[Math.floor(seq / this.#lanes.length) % slots.length];
      const buffer = memory.buffer as SharedArrayBuffer;
      const { count } = next;
      const bytes = new Uint8Array(buffer, slot.layout.dst, next.bytes);
      const frames: EncodedFrames = {
        pgnos: slot.pgnos,
        count,
        // A sink that may keep the chunks gets copies: the slot takes another batch once the
        // write resolves.
        bytes: this.#reuseChunks ? bytes : copyInPieces(bytes),
        sizes: new Uint32Array(buffer, slot.layout.sizes, count),
        crc: next.crc,
        hashedLength: next.hashedLength,
        pageChecksums: next.pageChecksums,
      };
      this.#writes = this.#writes.then(async () => {
        if (this.#error !== undefined) return;
        try {
          await this.#file.appendFrames(frames);
          // The slot's page numbers, sizes and frames are no longer needed: it is free.
          this.#inFlight--;
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

/**
 * Frames copied out of shared memory for a sink that may keep them, in pieces of at most
 * `FRAME_PIECE_BYTES`: small fresh buffers are cheap, large ones cost a fresh mapping each,
 * page-faulted in. Not `slice`: on a shared buffer it is many times slower than `set`.
 */
function copyInPieces(bytes: Uint8Array): Uint8Array[] {
  const pieces: Uint8Array[] = [];
  for (let at = 0; at < bytes.length; at += FRAME_PIECE_BYTES) {
    const part = bytes.subarray(at, at + FRAME_PIECE_BYTES);
    const piece = new Uint8Array(part.length);
    piece.set(part);
    pieces.push(piece);
  }
  return pieces;
}
