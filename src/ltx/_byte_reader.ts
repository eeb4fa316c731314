/**
 * A small buffered reader over a `ReadableStream<Uint8Array>`: hands out contiguous views of
 * the bytes it was asked to make available, copying only when a request spans two chunks, and
 * then only the bytes of that request. It never holds more than two chunks plus one request.
 *
 * @module
 */

const EMPTY = new Uint8Array(0);

/** Buffered reader for the decoder: `fill(n)` then `take(n)`. */
export class ByteReader {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #chunk: Uint8Array = EMPTY;
  /** The rest of a chunk whose start was joined to the previous one's end; read before the stream. */
  #pending: Uint8Array = EMPTY;
  #pos = 0;
  #offset = 0;
  #done = false;

  /** Locks `source` for reading. */
  constructor(source: ReadableStream<Uint8Array>) {
    this.#reader = source.getReader();
  }

  /** Absolute offset in the stream of the next byte `take` returns. */
  get offset(): number {
    return this.#offset;
  }

  /** Bytes available to `take` without reading. */
  get buffered(): number {
    return this.#chunk.length - this.#pos;
  }

  /**
   * Makes at least `n` contiguous bytes available.
   * @returns false when the stream ended first (then `buffered` < n).
   */
  async fill(n: number): Promise<boolean> {
    while (this.#chunk.length - this.#pos < n) {
      let value = this.#pending;
      if (value.length > 0) {
        this.#pending = EMPTY;
      } else {
        if (this.#done) return false;
        const next = await this.#reader.read();
        if (next.done) {
          this.#done = true;
          return false;
        }
        value = next.value;
        if (value.length === 0) continue;
      }
      const rest = this.#chunk.length - this.#pos;
      if (rest === 0) {
        this.#chunk = value;
      } else {
        // Join only what this request lacks: a page spanning two 512 KiB chunks then costs a
        // page-sized copy, not a chunk-sized one (and no chunk-sized garbage).
        const used = Math.min(n - rest, value.length);
        const joined = new Uint8Array(rest + used);
        joined.set(this.#chunk.subarray(this.#pos));
        joined.set(value.subarray(0, used), rest);
        this.#chunk = joined;
        this.#pending = value.subarray(used);
      }
      this.#pos = 0;
    }
    return true;
  }

  /**
   * Returns the next `n` bytes and consumes them. `fill` first. The result is a view of the
   * source's chunk: use it before the next `fill`, after which the source may reuse the chunk
   * (the codec worker's input does, see src/pipeline/_worker.ts).
   */
  take(n: number): Uint8Array {
    if (n > this.#chunk.length - this.#pos) {
      throw new RangeError(`ByteReader.take(${n}) beyond the ${this.buffered} buffered bytes`);
    }
    const view = this.#chunk.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    this.#offset += n;
    return view;
  }

  /** Consumes the next `n` bytes without a view of them (read with `peek`). `fill` first. */
  skip(n: number): void {
    if (n > this.#chunk.length - this.#pos) {
      throw new RangeError(`ByteReader.skip(${n}) beyond the ${this.buffered} buffered bytes`);
    }
    this.#pos += n;
    this.#offset += n;
  }

  /** The next `n` bytes without consuming them. `fill` first. */
  peek(n: number): Uint8Array {
    return this.#chunk.subarray(this.#pos, this.#pos + n);
  }

  /**
   * Reads and consumes everything up to the end of the stream, copied as it arrives (so that
   * a source may reuse a chunk once a later one was read).
   * @returns null once more than `limit` bytes came (the stream is then left mid-way).
   */
  async readToEnd(limit: number): Promise<Uint8Array | null> {
    const parts = [this.#chunk.slice(this.#pos), this.#pending.slice()];
    let total = parts[0].length + parts[1].length;
    this.#chunk = EMPTY;
    this.#pending = EMPTY;
    this.#pos = 0;
    while (!this.#done && total <= limit) {
      const { value, done } = await this.#reader.read();
      if (done) {
        this.#done = true;
        break;
      }
      parts.push(value.slice());
      total += value.length;
    }
    if (total > limit) return null;
    this.#offset += total;
    const all = new Uint8Array(total);
    let at = 0;
    for (const part of parts) {
      all.set(part, at);
      at += part.length;
    }
    return all;
  }

  /** Cancels the source stream; later reads see the end of the stream. */
  async cancel(reason?: unknown): Promise<void> {
    this.#done = true;
    this.#chunk = EMPTY;
    this.#pending = EMPTY;
    this.#pos = 0;
    await this.#reader.cancel(reason);
  }

  /** Releases the lock on the source stream (after it was read to the end). */
  release(): void {
    this.#reader.releaseLock();
  }
}
