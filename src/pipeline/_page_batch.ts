/**
 * What the main-thread sides of the worker encoders (`WorkerEncoder`, `ParallelEncoder`) share:
 * pages gathered into batches with the in-thread encoder's checks, so that a bad page fails the
 * call it came with, and that encoder's rule of one call at a time.
 *
 * @module
 */

import { checkNextPage, checkRun, type Header, LTXError } from "../ltx/mod.ts";
import { ENCODE_BATCH_BYTES } from "./_protocol.ts";

/** The buffers of one batch: its page numbers, and its pages back to back. */
export interface BatchBuffers {
  pgnos: Uint32Array<ArrayBuffer>;
  data: Uint8Array<ArrayBuffer>;
}

/**
 * The batch of pages being gathered (`ENCODE_BATCH_BYTES` of pages at most), checked in order
 * as the in-thread encoder checks them. When a page fills the batch, `send` is called; it takes
 * the batch with {@linkcode take}. Buffers of sent batches that come back are reused.
 */
export class PageBatch {
  /** Pages per batch. */
  readonly capacity: number;
  /** Page numbers of the batch, the first {@linkcode count} set. */
  pgnos: Uint32Array<ArrayBuffer>;
  /** Pages of the batch, back to back. */
  data: Uint8Array<ArrayBuffer>;
  /** Pages in the batch. */
  count = 0;
  /** Pages added in all. */
  pageCount = 0;
  #header: Header;
  #name: string;
  #prevPgno = 0;
  #send: () => Promise<void>;
  /** Buffers of sent batches, given back. */
  #free: BatchBuffers[] = [];

  /** `name` starts the messages of the checks; `send` is called when a batch is full. */
  constructor(header: Header, name: string, send: () => Promise<void>) {
    this.#header = header;
    this.#name = name;
    this.#send = send;
    this.capacity = Math.max(1, Math.floor(ENCODE_BATCH_BYTES / header.pageSize));
    this.pgnos = new Uint32Array(this.capacity);
    this.data = new Uint8Array(this.capacity * header.pageSize);
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
   * The batch gathered so far, whose buffers the caller now owns (they go to a worker); the
   * next batch is gathered in buffers given back, or new ones.
   */
  take(): BatchBuffers & { count: number } {
    const taken = { pgnos: this.pgnos, data: this.data, count: this.count };
    const reused = this.#free.pop();
    this.data = reused?.data ?? new Uint8Array(this.capacity * this.#header.pageSize);
    this.pgnos = reused?.pgnos ?? new Uint32Array(this.capacity);
    this.count = 0;
    return taken;
  }

  /** Gives back the buffers of a batch sent before, once the worker is done with them. */
  giveBack(pgnos: Uint32Array<ArrayBuffer>, data: ArrayBuffer): void {
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
