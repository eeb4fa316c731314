/**
 * What the main-thread sides of the worker encoders (`WorkerEncoder`, `ParallelEncoder`) share:
 * pages gathered into batches with the in-thread encoder's checks, so that a bad page fails the
 * call it came with, and that encoder's rule of one call at a time.
 *
 * @module
 */

import { checkNextPage, checkRun, type Header, LTXError, type PageFill } from "../ltx/mod.ts";
import { ENCODE_BATCH_BYTES } from "./_protocol.ts";

/** The buffers of one batch: its page numbers, and its pages back to back. */
export interface BatchBuffers<B extends ArrayBufferLike = ArrayBuffer> {
  pgnos: Uint32Array<B>;
  data: Uint8Array<B>;
}

/** Pages in a batch of about `batchBytes` (default `ENCODE_BATCH_BYTES`): one at least. */
export function batchCapacity(pageSize: number, batchBytes = ENCODE_BATCH_BYTES): number {
  return Math.max(1, Math.floor(batchBytes / pageSize));
}

/**
 * The batch of pages being gathered (`ENCODE_BATCH_BYTES` of pages at most, unless told
 * otherwise), checked in order as the in-thread encoder checks them. When a page fills the
 * batch, `send` is called; it takes the batch with {@linkcode take}. The buffers of the next
 * batch are new ones or ones given back, or, when the encoder provides them (`buffers`), the
 * ones it has for that batch.
 */
export class PageBatch<B extends ArrayBufferLike = ArrayBuffer> {
  /** Pages per batch. */
  readonly capacity: number;
  /** Page numbers of the batch, the first {@linkcode count} set. */
  pgnos: Uint32Array<B>;
  /** Pages of the batch, back to back. */
  data: Uint8Array<B>;
  /** Pages in the batch. */
  count = 0;
  /** Pages added in all. */
  pageCount = 0;
  #header: Header;
  #name: string;
  #prevPgno = 0;
  #send: () => Promise<void>;
  /** Buffers of sent batches, given back. */
  #free: BatchBuffers<B>[] = [];
  /** The buffers of the batch with this index (0 first), when the encoder provides them. */
  #buffers: ((index: number) => BatchBuffers<B>) | undefined;
  /** Batches taken so far. */
  #taken = 0;

  /**
   * `name` starts the messages of the checks; `send` is called when a batch is full, which is
   * at `batchBytes` of pages (default `ENCODE_BATCH_BYTES`; one page at least). `buffers`,
   * when given, provides each batch's buffers (at least `capacity` pages), by batch index.
   */
  constructor(
    header: Header,
    name: string,
    send: () => Promise<void>,
    batchBytes: number = ENCODE_BATCH_BYTES,
    buffers?: (index: number) => BatchBuffers<B>,
  ) {
    this.#header = header;
    this.#name = name;
    this.#send = send;
    this.#buffers = buffers;
    this.capacity = batchCapacity(header.pageSize, batchBytes);
    const first = this.#next();
    this.pgnos = first.pgnos;
    this.data = first.data;
  }

  /** Buffers for the next batch. */
  #next(): BatchBuffers<B> {
    if (this.#buffers) return this.#buffers(this.#taken);
    return this.#free.pop() ?? {
      pgnos: new Uint32Array(this.capacity) as Uint32Array<B>,
      data: new Uint8Array(this.capacity * this.#header.pageSize) as Uint8Array<B>,
    };
  }

  /**
   * Adds one page (copied); returns the send when it filled the batch.
   * @throws {LTXFormatError} when the page may not come next (`checkNextPage`).
   */
  add(pgno: number, data: Uint8Array): Promise<void> | undefined {
    checkNextPage(this.#header, this.#name, pgno, data.length, this.#prevPgno);
    this.data.set(data, this.count * this.#header.pageSize);
    this.pgnos[this.count++] = pgno;
    this.#prevPgno = pgno;
    this.pageCount++;
    return this.count === this.capacity ? this.#send() : undefined;
  }

  /**
   * Adds `count` consecutive pages from `first`, held back to back in `data`: what `count`
   * calls of {@linkcode add} do, with one copy per batch.
   * @throws {LTXError} when `data` does not hold `count` pages (`checkRun`).
   * @throws {LTXFormatError} for the first page that may not come next.
   */
  async addRun(first: number, count: number, data: Uint8Array): Promise<void> {
    const { pageSize } = this.#header;
    checkRun(this.#name, count, data.length, pageSize);
    for (let i = 0; i < count;) {
      const n = Math.min(count - i, this.capacity - this.count);
      for (let k = 0; k < n; k++) {
        const pgno = first + i + k;
        checkNextPage(this.#header, this.#name, pgno, pageSize, this.#prevPgno);
        this.pgnos[this.count + k] = pgno;
        this.#prevPgno = pgno;
      }
      this.data.set(data.subarray(i * pageSize, (i + n) * pageSize), this.count * pageSize);
      this.count += n;
      this.pageCount += n;
      i += n;
      if (this.count === this.capacity) await this.#send();
    }
  }

  /**
   * Adds `count` consecutive pages from `first` that `fill` writes straight into the batch's
   * buffer: what {@linkcode addRun} does, without reading the pages into another buffer first
   * and copying them. `fill` is called once per batch the run reaches, in order, each call
   * awaited before the next.
   * @throws {LTXError} when `count` is not a page count.
   * @throws {LTXFormatError} for the first page that may not come next.
   * @throws what `fill` throws.
   */
  async fillRun(first: number, count: number, fill: PageFill): Promise<void> {
    const { pageSize } = this.#header;
    checkRun(this.#name, count, count * pageSize, pageSize);
    for (let i = 0; i < count;) {
      const n = Math.min(count - i, this.capacity - this.count);
      for (let k = 0; k < n; k++) {
        const pgno = first + i + k;
        checkNextPage(this.#header, this.#name, pgno, pageSize, this.#prevPgno);
        this.pgnos[this.count + k] = pgno;
        this.#prevPgno = pgno;
      }
      await fill(
        this.data.subarray(this.count * pageSize, (this.count + n) * pageSize),
        first + i,
        n,
      );
      this.count += n;
      this.pageCount += n;
      i += n;
      if (this.count === this.capacity) await this.#send();
    }
  }

  /**
   * The batch gathered so far, whose buffers the caller now owns (they go to a worker); the
   * next batch is gathered in the next buffers.
   */
  take(): BatchBuffers<B> & { count: number } {
    const taken = { pgnos: this.pgnos, data: this.data, count: this.count };
    this.#taken++;
    const next = this.#next();
    this.pgnos = next.pgnos;
    this.data = next.data;
    this.count = 0;
    return taken;
  }

  /** Gives back the buffers of a batch sent before, once the worker is done with them. */
  giveBack(pgnos: Uint32Array<B>, data: B): void {
    this.#free.push({ pgnos, data: new Uint8Array(data) });
  }
}

/** What {@linkcode EncoderCalls} asks of its encoder. */
export interface EncoderCallHooks {
  /** The error the encoder met outside a call (the worker's, the sink's), if any. */
  error(): unknown;
  /** Makes the encoder unusable after `reason` (stops its jobs, aborts its sink). */
  fail(reason: unknown): Promise<void>;
}

/**
 * The in-thread encoder's discipline of calls: one at a time, none once the encoder is closed
 * or failed, each failing on an error the encoder met before, and a call that throws fails the
 * encoder before its error is passed on.
 */
export class EncoderCalls {
  /** Open until `close` succeeded or something failed the encoder. */
  state: "open" | "closed" | "failed" = "open";
  #name: string;
  #hooks: EncoderCallHooks;
  #busy = false;

  /** `name` starts the messages of misused calls. */
  constructor(name: string, hooks: EncoderCallHooks) {
    this.#name = name;
    this.#hooks = hooks;
  }

  /**
   * Runs `body` as the call `method`.
   * @throws {LTXError} when the encoder is not open, or another call is running.
   * @throws the encoder's earlier error, or what `body` throws (having failed the encoder).
   */
  async run<T>(method: string, body: () => T | Promise<T>): Promise<T> {
    if (this.state !== "open") {
      throw new LTXError(`${this.#name}: ${method}() on an encoder that is ${this.state}`);
    }
    if (this.#busy) {
      throw new LTXError(`${this.#name}: ${method}() while another call is running; await it`);
    }
    this.#busy = true;
    try {
      const error = this.#hooks.error();
      if (error !== undefined) throw error;
      // A page that does not fill its batch is added without waiting for a turn.
      const result = body();
      return result instanceof Promise ? await result : result;
    } catch (err) {
      await this.#hooks.fail(err);
      throw err;
    } finally {
      this.#busy = false;
    }
  }
}
