/**
 * Compaction that copies page frames instead of coding them again, for the codec worker's
 * "compactFiles" job (_worker_files.ts). When the winning page of the merge was stored in the
 * output's encoding, its frame (page header, and the LZ4 frame or the size field and block) is
 * copied from the input's read buffers as it is: it decodes to the page the input's decoder
 * just produced from exactly those bytes. Only the file checksum's share of the frame is
 * computed (FORMAT.md §1.8: page header, size field when present, decompressed page: one
 * CRC-64 pass over bytes at hand), and runs of copied frames are spliced into the output by
 * the encoder's `appendFrames`, which combines their CRC with the file's. Other pages are coded
 * as `compact` codes them. Every input is still decoded and verified to its end (the merge
 * reads each to its end before the output is closed), so a damaged input fails the step as
 * before; an output is never closed with a frame whose input has not been verified.
 *
 * For inputs written by this encoder the output is byte for byte what `compact` writes: the
 * codec is deterministic, so the copied frame is the frame it would have made.
 *
 * @module
 */

import {
  CRC64,
  type Decoder,
  Encoder,
  type EncoderOptions,
  type Header,
  HEADER_SIZE,
  mergeDecoders,
  type MergeResult,
  type Page,
  PAGE_FLAG_SIZE,
  PAGE_HEADER_SIZE,
  type Trailer,
} from "../ltx/mod.ts";

/** Where the frames of one input are: their sizes (its page index) and its read buffers. */
export interface FrameSource {
  /** Each frame's size in file order; undefined when the file's page index was not read. */
  readonly frameSizes: Uint32Array | undefined;
  /** Copies bytes of the file still held in the read buffers; false when they are not. */
  copyFrame(offset: number, length: number, into: Uint8Array, at: number): boolean;
}

/**
 * Copied frames go to the encoder in runs of at least this many bytes: each run is one output
 * message to the main thread, and a message costs ~80 µs of the worker's CPU and some of the
 * main thread's whatever its size (measured: runs of 128 KiB doubled both against the
 * encoder's own ~256 KiB chunks).
 */
const RUN_BYTES = 256 << 10;
/** Room of a run: any frame (at most a 64 KiB page and its frame's overhead) fits after it. */
const RUN_ROOM = RUN_BYTES + (80 << 10);

/**
 * Merges `decoders` (sorted by MinTXID; `sources[i]` holds the frames of `decoders[i]`) and
 * encodes the result into `sink` with the header of `mergeDecoders`, copying the frames it
 * can (see the module). Every input is verified before the output is closed; on any failure
 * the sink is aborted and the inputs cancelled.
 * @returns the header written.
 * @throws {LTXError} from the merge, an input or the encoder.
 */
export async function compactCopyingFrames(
  decoders: Decoder[],
  sources: FrameSource[],
  sink: WritableStream<Uint8Array>,
  options: EncoderOptions,
): Promise<Header> {
  const tracked = decoders.map((decoder) => new TrackedInput(decoder));
  /** Which input each decoder's reused page object belongs to. */
  const owners = new Map<Page, number>();
  tracked.forEach((input, i) => input.onPage = (page) => owners.set(page, i));
  const cancelAll = () => Promise.all(decoders.map((d) => d.cancel().catch(() => {})));
  let merged: MergeResult;
  try {
    // mergeDecoders uses only the members TrackedInput has.
    merged = await mergeDecoders(tracked as unknown as Decoder[]);
  } catch (err) {
    await sink.abort(err).catch(() => {});
    throw err;
  }
  let encoder: Encoder;
  try {
    encoder = new Encoder(sink, merged.header, options);
  } catch (err) {
    await Promise.all([sink.abort(err).catch(() => {}), cancelAll()]);
    throw err;
  }
  const block = options.encoding === "block";
  const run = new FrameRun(merged.header.pageSize, block);
  try {
    for await (const page of merged.pages) {
      const i = owners.get(page);
      if (i !== undefined && run.add(page, sources[i], tracked[i])) {
        if (run.full) await run.flushTo(encoder);
        continue;
      }
      await run.flushTo(encoder);
      await encoder.encodePage(page.pgno, page.data);
    }
    await run.flushTo(encoder);
    await encoder.close();
  } catch (err) {
    await Promise.all([encoder.abort(err).catch(() => {}), cancelAll()]);
    throw err;
  }
  return merged.header;
}

/**
 * A decoder as the merge sees it, counting its pages and saying which page object is its own
 * (the merge yields the inputs' reused pages; nothing else tells whose page won).
 */
class TrackedInput {
  /** Pages read so far: the last one read is frame `pagesRead - 1` of the file. */
  pagesRead = 0;
  /** Called once with each page object the decoder hands out (it reuses one). */
  onPage: (page: Page) => void = () => {};
  #decoder: Decoder;
  #known = new WeakSet<Page>();

  constructor(decoder: Decoder) {
    this.#decoder = decoder;
  }

  get name(): string {
    return this.#decoder.name;
  }

  get header(): Header | undefined {
    return this.#decoder.header;
  }

  get trailer(): Trailer | undefined {
    return this.#decoder.trailer;
  }

  readHeader(): Promise<Header> {
    return this.#decoder.readHeader();
  }

  async readPageView(): Promise<Page | null> {
    const page = await this.#decoder.readPageView();
    if (page === null) return null;
    this.pagesRead++;
    if (!this.#known.has(page)) {
      this.#known.add(page);
      this.onPage(page);
    }
    return page;
  }

  cancel(): Promise<void> {
    return this.#decoder.cancel();
  }
}

/** Copied frames waiting to be spliced into the output, with their share of its checksum. */
class FrameRun {
  #bytes = new Uint8Array(RUN_ROOM);
  #used = 0;
  #pgnos = new Uint32Array(RUN_ROOM / PAGE_HEADER_SIZE);
  #sizes = new Uint32Array(RUN_ROOM / PAGE_HEADER_SIZE);
  #count = 0;
  #crc = new CRC64();
  #pageSize: number;
  #block: boolean;
  /** Bytes of a frame that the file checksum covers before the page: header, size field. */
  #hashedPrefix: number;
  /** Page header flags of the output's encoding. */
  #flags: number;
  /** Offsets of each input's frames, advanced as its pages come (by `TrackedInput`). */
  #frameStarts = new WeakMap<TrackedInput, { index: number; offset: number }>();

  constructor(pageSize: number, block: boolean) {
    this.#pageSize = pageSize;
    this.#block = block;
    this.#hashedPrefix = PAGE_HEADER_SIZE + (block ? 4 : 0);
    this.#flags = block ? PAGE_FLAG_SIZE : 0;
  }

  /** Whether the run is long enough to go out (and the next frame might not fit). */
  get full(): boolean {
    return this.#used >= RUN_BYTES || this.#count === this.#pgnos.length;
  }

  /**
   * Copies the frame of `page`, the newest page `input` read, from `source`.
   * @returns false when it cannot be copied (then code the page instead).
   */
  add(page: Page, source: FrameSource, input: TrackedInput): boolean {
    const sizes = source.frameSizes;
    const index = input.pagesRead - 1;
    if (sizes === undefined || index >= sizes.length) return false;
    const at = this.#frameStart(input, sizes, index);
    const size = sizes[index];
    if (size > this.#bytes.length - this.#used) {
      if (this.#count > 0 || size > this.#bytes.length) return false; // flushed, then coded
    }
    const frame = this.#bytes.subarray(this.#used, this.#used + size);
    if (size < this.#hashedPrefix || !source.copyFrame(at, size, frame, 0)) return false;
    const view = new DataView(frame.buffer, frame.byteOffset, this.#hashedPrefix);
    // Another encoding than the output's, or bytes that are not this page's frame (a damaged
    // index: the decoder fails on it once it reaches the index).
    if (view.getUint32(0) !== page.pgno || view.getUint16(4) !== this.#flags) return false;
    this.#crc.update(frame.subarray(0, this.#hashedPrefix)).update(page.data);
    this.#pgnos[this.#count] = page.pgno;
    this.#sizes[this.#count] = size;
    this.#count++;
    this.#used += size;
    return true;
  }

  /** Splices the gathered frames into `encoder`'s output; the run is empty afterwards. */
  async flushTo(encoder: Encoder): Promise<void> {
    if (this.#count === 0) return;
    const count = this.#count;
    const hashedLength = count * (this.#hashedPrefix + this.#pageSize);
    const crc = this.#crc.digest();
    this.#count = 0;
    this.#crc.reset();
    const bytes = this.#bytes.subarray(0, this.#used);
    this.#used = 0;
    // The encoder's sink copies the bytes before the write resolves, so the run's buffers
    // are free again once this returns.
    await encoder.appendFrames({
      pgnos: this.#pgnos,
      count,
      bytes,
      sizes: this.#sizes,
      crc,
      hashedLength,
      // A merge's output has NoChecksum (FORMAT.md §3.1): no page checksums.
      pageChecksums: 0n,
    });
  }

  /** File offset of frame `index` of `input` (frames follow the header back to back). */
  #frameStart(input: TrackedInput, sizes: Uint32Array, index: number): number {
    let state = this.#frameStarts.get(input);
    if (state === undefined) {
      state = { index: 0, offset: HEADER_SIZE };
      this.#frameStarts.set(input, state);
    }
    while (state.index < index) state.offset += sizes[state.index++];
    return state.offset;
  }
}
