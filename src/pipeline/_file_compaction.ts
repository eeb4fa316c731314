/**
 * The main thread's side of a "compactFiles" job (_worker_files.ts): the codec worker reads,
 * decodes, verifies, merges and encodes files on this machine, and this side only writes the
 * output chunks it sends to the sink, in order, acknowledging each once written. Nothing of
 * the inputs crosses the thread boundary, so a step of hundreds of files costs the main thread
 * about what writing its output costs.
 *
 * @module
 */

import type { EncoderOptions, Header } from "../ltx/mod.ts";
import { fromWire } from "./_errors.ts";
import { type JobChannel, openJob } from "./_pool.ts";
import type { FileInput, Reply } from "./_protocol.ts";

/** Options of {@linkcode FileCompaction.open}. */
export interface FileCompactionOptions extends Pick<EncoderOptions, "encoding" | "reuseChunks"> {
  /**
   * Copy the stored frame of each page whose input has the output's encoding instead of
   * coding it again (default true): the same bytes for inputs this encoder wrote, a valid
   * file with the inputs' own frames for others. False codes every page, as `compact` does.
   */
  copyFrames?: boolean;
}

/**
 * A compaction of files on this machine, run on a codec worker in two steps: {@linkcode open}
 * opens every input and reads its header (so the caller can check them before it creates the
 * output), then {@linkcode compactInto} merges and encodes into a sink, or
 * {@linkcode cancel} gives up. Either way the worker closes every file it opened before the
 * promise settles.
 */
export class FileCompaction {
  #channel: JobChannel;
  #reuseChunks: boolean;
  #headers: Header[] | undefined;
  /** The job's last word: the result, an error, or the confirmation of a cancel. */
  #ended: { header: Header } | { error: unknown } | "cancelled" | undefined;
  #writer: WritableStreamDefaultWriter<Uint8Array> | undefined;
  #writeError: unknown;
  #writes: Promise<void> = Promise.resolve();
  #wake: (() => void) | undefined;

  private constructor(inputs: FileInput[], options: FileCompactionOptions) {
    this.#reuseChunks = options.reuseChunks ?? false;
    this.#channel = openJob((reply) => this.#onReply(reply));
    this.#channel.send({
      type: "compactFiles",
      id: this.#channel.id,
      inputs,
      options: { encoding: options.encoding ?? "frame", reuseChunks: this.#reuseChunks },
      copyFrames: options.copyFrames ?? true,
    });
  }

  /**
   * Has the worker open `inputs` (sorted by MinTXID) and read their headers.
   * @throws {LTXFormatError} from a header; `Deno.errors.NotFound` (message naming the
   *   input) when a file is missing; the error of another failed open.
   */
  static async open(
    inputs: FileInput[],
    options: FileCompactionOptions = {},
  ): Promise<FileCompaction> {
    const job = new FileCompaction(
      inputs.map(({ path, name, size }) => ({ path, name, size })),
      options,
    );
    while (job.#headers === undefined && job.#ended === undefined) await job.#wait();
    if (job.#headers === undefined) {
      job.#channel.release();
      throw job.#failure();
    }
    return job;
  }

  /** The inputs' headers, in input order. */
  get headers(): Header[] {
    return this.#headers!;
  }

  /**
   * Merges the inputs (src/ltx's `compact`: latest wins, every input verified to its end) and
   * writes the encoded result to `sink`, then closes it. On any failure the sink is aborted.
   * @returns the header written.
   * @throws {LTXError} from the merge or an input; the sink's error.
   */
  async compactInto(sink: WritableStream<Uint8Array>): Promise<Header> {
    this.#writer = sink.getWriter();
    this.#channel.send({ type: "compactStart", id: this.#channel.id });
    while (this.#ended === undefined && this.#writeError === undefined) await this.#wait();
    if (this.#ended === undefined) {
      // The sink failed: stop the worker, and wait until it has closed its files.
      this.#channel.send({ type: "cancel", id: this.#channel.id });
      while (this.#ended === undefined) await this.#wait();
    }
    await this.#writes;
    this.#channel.release();
    const ended = this.#ended;
    if (this.#writeError === undefined && typeof ended === "object" && "header" in ended) {
      try {
        await this.#writer.close();
        return ended.header;
      } catch (err) {
        this.#writeError = err;
      }
    }
    const err = this.#writeError ?? this.#failure();
    await this.#writer.abort(err).catch(() => {});
    throw err;
  }

  /** Gives up before {@linkcode compactInto}: resolves once the worker closed every file. */
  async cancel(): Promise<void> {
    if (this.#ended === undefined) {
      this.#channel.send({ type: "cancel", id: this.#channel.id });
      while (this.#ended === undefined) await this.#wait();
    }
    this.#channel.release();
  }

  #failure(): unknown {
    const ended = this.#ended;
    if (typeof ended === "object" && "error" in ended) return ended.error;
    return new Error("the file compaction was cancelled");
  }

  #onReply(reply: Reply): void {
    switch (reply.type) {
      case "headers":
        this.#headers = reply.headers;
        break;
      case "output": {
        const chunk = new Uint8Array(reply.buffer, 0, reply.length);
        const { id } = this.#channel;
        this.#writes = this.#writes.then(async () => {
          if (this.#writeError !== undefined || this.#writer === undefined) return;
          try {
            await this.#writer.write(chunk);
          } catch (err) {
            this.#writeError ??= err;
            this.#wakeUp();
            return;
          }
          // With reuseChunks the sink is done with the chunk: its buffer goes back for reuse.
          if (this.#reuseChunks) {
            this.#channel.send({ type: "outputAck", id, buffer: reply.buffer }, [reply.buffer]);
          } else {
            this.#channel.send({ type: "outputAck", id });
          }
        });
        return;
      }
      case "compacted":
        this.#ended = { header: reply.header };
        break;
      case "cancelled":
        this.#ended = "cancelled";
        break;
      case "error":
        this.#ended = { error: fromWire(reply.error) };
        break;
      default:
        return;
    }
    this.#wakeUp();
  }

  #wakeUp(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  #wait(): Promise<void> {
    return new Promise((resolve) => this.#wake = resolve);
  }
}
