/**
 * LTX encoding and decoding off the main thread (docs/INTERNALS.md, "src/pipeline"). The byte
 * work (LZ4, xxh32, CRC-64) of restore and compaction (and of snapshots, for a caller that
 * encodes one) runs on a codec worker, pipelined with the reads and writes the main thread
 * does, with bounded memory: a job never has more than a few MiB in flight, whatever the size
 * of the file. Buffers cross the thread boundary in transfer lists (moved, not cloned) and go
 * back for reuse.
 *
 * The decoder and encoder here have the calls, checks, errors and output of src/ltx's
 * {@linkcode Decoder} and {@linkcode Encoder}; {@linkcode openDecoder} and
 * {@linkcode openEncoder} choose between the worker and the in-thread codec by size, because a
 * worker round trip costs more than coding a few pages.
 *
 * ```ts
 * const decoder = openDecoder(stream, { name, size });
 * const header = await decoder.readHeader();
 * for (let page = await decoder.readPage(); page; page = await decoder.readPage()) {
 *   // page.pgno, page.data (verified when readPage() returns null)
 * }
 * ```
 *
 * Workers start on demand and are terminated when their last job ends. Imports only src/ltx.
 *
 * @module
 */

import {
  type Decoder,
  Decoder as InThreadDecoder,
  type Encoder,
  Encoder as InThreadEncoder,
  type EncoderOptions,
  type Header,
  mergeDecoders,
  type MergeResult,
} from "../ltx/mod.ts";
import { WorkerDecoder, type WorkerDecoderOptions } from "./_decoder.ts";
import { WorkerEncoder } from "./_encoder.ts";
import { FileCompaction, type FileCompactionOptions } from "./_file_compaction.ts";
import type { FileInput } from "./_protocol.ts";
import { ParallelEncoder } from "./_parallel_encoder.ts";
import { prestartWorkers } from "./_pool.ts";

export { WorkerDecoder, type WorkerDecoderOptions } from "./_decoder.ts";
export { WorkerEncoder } from "./_encoder.ts";
export {
  codeOnMainThreadToo,
  ParallelEncoder,
  type ParallelEncoderOptions,
} from "./_parallel_encoder.ts";
export { handOffPipe } from "./_hand_off.ts";
export { FileCompaction, type FileCompactionOptions } from "./_file_compaction.ts";
/** One input of {@linkcode compactFiles}: a file on this machine, its name for errors, its size. */
export type { FileInput } from "./_protocol.ts";
/**
 * An error that crossed a worker boundary as its class name and message, rebuilt as the
 * `LTXError` subclass it was, or a plain `Error` of that name (for other workers of
 * the project, so that their errors are the in-thread codec's too).
 */
export { fromWire } from "./_errors.ts";
export {
  BACKGROUND_WORKER_NICE,
  CODEC_WORKER_LINGER_MS,
  keepIdleWorkers,
  lowerWorkerPriority,
  MAX_WORKERS,
  runningWorkers,
} from "./_pool.ts";

/** What reads one LTX file page by page: src/ltx's {@linkcode Decoder} or a {@linkcode WorkerDecoder}. */
export type PageSource = Pick<
  Decoder,
  | "name"
  | "header"
  | "trailer"
  | "pageCount"
  | "readHeader"
  | "readPage"
  | "readPageInto"
  | "readPageView"
  | "cancel"
>;

/**
 * What writes one LTX file page by page: src/ltx's {@linkcode Encoder}, a
 * {@linkcode WorkerEncoder} or a {@linkcode ParallelEncoder}.
 */
export type PageSink = Pick<
  Encoder,
  | "header"
  | "pageCount"
  | "bytesWritten"
  | "encodePage"
  | "encodePages"
  | "encodePagesFrom"
  | "close"
  | "abort"
>;

/**
 * Files (or outputs) smaller than this are coded in-thread. Measured on the 2-core machine
 * under load: starting a worker and its first round trips take 80–160 ms, the time the
 * in-thread decoder needs for 8–16 MiB; and in-thread coding never holds the event loop for
 * more than one input chunk (~10 ms), so a small file gains nothing from a worker.
 */
export const WORKER_THRESHOLD_BYTES = 8 << 20;

/** Where the codec runs when the caller does not say. */
export type CodecPlacement = "worker" | "thread" | "auto";

/**
 * `SLUICE_PIPELINE=worker|thread|auto` overrides the choice by size (for benchmarks and
 * diagnosis); anything else, or no permission to read it, means "auto". Exported for callers
 * that choose between a worker-only path ({@linkcode compactFiles}) and the streams' one.
 */
export function whereFromEnv(): CodecPlacement {
  let value: string | undefined;
  try {
    value = Deno.env.get("SLUICE_PIPELINE");
  } catch {
    return "auto";
  }
  return value === "worker" || value === "thread" ? value : "auto";
}

/** Options of {@linkcode openDecoder}. */
export interface OpenDecoderOptions extends WorkerDecoderOptions {
  /** The file's size in bytes when known; small files are decoded in-thread. */
  size?: number;
  /** Force the choice: "worker", "thread", or "auto" (by size, the default). */
  where?: CodecPlacement;
}

/**
 * A decoder for `source`: on a codec worker unless the file is known to be small.
 * Nothing is read before the first call.
 */
export function openDecoder(
  source: ReadableStream<Uint8Array>,
  options: OpenDecoderOptions = {},
): PageSource {
  const where = options.where ?? whereFromEnv();
  const small = options.size !== undefined && options.size < WORKER_THRESHOLD_BYTES;
  if (where === "thread" || (where === "auto" && small)) {
    return new InThreadDecoder(source, { name: options.name });
  }
  return new WorkerDecoder(source, { name: options.name });
}

/**
 * Outputs of at least this many bytes of pages may be coded on several workers at once
 * ({@linkcode OpenEncoderOptions.workers}); below it the second worker's start-up (~0.1 s on
 * the 2-core machine) costs about what it saves.
 */
export const PARALLEL_THRESHOLD_BYTES = 32 << 20;

/** Options of {@linkcode openEncoder}. */
export interface OpenEncoderOptions extends EncoderOptions {
  /** About how many bytes of pages will be encoded; small outputs are encoded in-thread. */
  expectedBytes?: number;
  /** Force the choice: "worker", "thread", or "auto" (by size, the default). */
  where?: CodecPlacement;
  /** Bytes of pages per batch of a {@linkcode ParallelEncoder} (its default when absent). */
  batchBytes?: number;
  /**
   * Codec workers to spread the pages over when the output is expected to reach
   * {@linkcode PARALLEL_THRESHOLD_BYTES} (a snapshot, a large sync), at most one per core;
   * default 1.
   * `SLUICE_ENCODE_WORKERS=1|2|…` overrides it (for benchmarks and diagnosis).
   */
  workers?: number;
}

/** `SLUICE_ENCODE_WORKERS`, when set to a small positive integer. */
function workersFromEnv(): number | undefined {
  let value: string | undefined;
  try {
    value = Deno.env.get("SLUICE_ENCODE_WORKERS");
  } catch {
    return undefined;
  }
  const n = Number(value);
  return Number.isInteger(n) && n >= 1 && n <= 8 ? n : undefined;
}

/**
 * An encoder writing to `sink`: on a codec worker unless the output is expected to be small.
 * @throws {LTXFormatError} when the header breaks a rule of FORMAT.md §1.1.
 */
export function openEncoder(
  sink: WritableStream<Uint8Array>,
  header: Header,
  options: OpenEncoderOptions = {},
): PageSink {
  const { expectedBytes, where = whereFromEnv(), workers = 1, batchBytes, ...encoderOptions } =
    options;
  const plan = encoderPlan(expectedBytes, where, workers);
  if (plan.kind === "thread") return new InThreadEncoder(sink, header, encoderOptions);
  if (plan.kind === "parallel") {
    return new ParallelEncoder(sink, header, {
      ...encoderOptions,
      workers: plan.workers,
      batchBytes,
    });
  }
  return new WorkerEncoder(sink, header, encoderOptions);
}

/** Where {@linkcode openEncoder} codes an output, and on how many workers. */
function encoderPlan(
  expectedBytes: number | undefined,
  where: CodecPlacement,
  workers: number,
): { kind: "thread" } | { kind: "worker" } | { kind: "parallel"; workers: number } {
  const small = expectedBytes !== undefined && expectedBytes < WORKER_THRESHOLD_BYTES;
  if (where === "thread" || (where === "auto" && small)) return { kind: "thread" };
  const large = expectedBytes !== undefined && expectedBytes >= PARALLEL_THRESHOLD_BYTES;
  // More workers than cores only add threads competing for them.
  const parallel = workersFromEnv() ??
    (large || where === "worker" ? Math.min(workers, navigator.hardwareConcurrency || 1) : 1);
  // A large output goes the parallel encoder's way even on one worker: a batch is coded in
  // one call into one buffer, instead of page by page through an in-worker encoder.
  return parallel > 1 || large ? { kind: "parallel", workers: parallel } : { kind: "worker" };
}

/**
 * How {@linkcode openEncoder} should code a full image of a database (a snapshot, a first
 * sync): its `workers` and `batchBytes`.
 *
 * - Two workers where a core is left for the second, else one. On two cores the main thread's
 *   reads and writes and the kernel's copies take much of the other core, and a second worker
 *   (an isolate of its own, and its memory) took a 1 GiB snapshot's peak to ~150 MB for
 *   about the same wall time (issue 15). The output is the same either way.
 * - Batches of 2 MiB: half the round trips to the worker of 1 MiB ones (each ~0.1 ms of CPU
 *   on both threads), and twice the coding queued for the worker while a write takes long.
 */
export function imageEncoding(): { workers: number; batchBytes: number } {
  return { workers: navigator.hardwareConcurrency > 2 ? 2 : 1, batchBytes: 2 << 20 };
}

/**
 * Starts the codec workers that {@linkcode openEncoder} will take for an output of about
 * `expectedBytes` (with `options.workers`), so that their start-up overlaps what the caller
 * does before it encodes (a command that is about to snapshot a large database: attaching
 * it, syncing). Nothing starts for an output coded in-thread. Call `release` once the
 * encoder is open or when it will not be: workers still without a job then stop (they stop
 * by themselves `lingerMs` after the start too).
 */
export function prestartEncoder(
  expectedBytes: number,
  options: { workers?: number; lingerMs?: number } = {},
): { release(): void } {
  const plan = encoderPlan(expectedBytes, whereFromEnv(), options.workers ?? 1);
  if (plan.kind === "thread") return { release() {} };
  return prestartWorkers(plan.kind === "parallel" ? plan.workers : 1, options.lingerMs ?? 10_000);
}

/**
 * src/ltx's k-way merge ({@linkcode mergeDecoders}: latest input wins, every input verified to
 * its end) over any mix of in-thread and worker decoders.
 * @throws {LTXError} on no inputs, a page-size mismatch or a TXID gap.
 */
export function mergeSources(sources: PageSource[]): Promise<MergeResult> {
  // mergeDecoders uses only the members PageSource names; a WorkerDecoder has each of them.
  return mergeDecoders(sources as Decoder[]);
}

/**
 * Compaction: merges `sources` (sorted by MinTXID) and encodes the result into `sink` on a
 * codec worker (src/ltx's `compact`, with the encoding off the main thread). Every input is
 * verified before the output is closed; on any failure the sink is aborted and the inputs
 * cancelled.
 * @returns the header written.
 * @throws {LTXError} from the merge or the encoder.
 */
export async function compactSources(
  sources: PageSource[],
  sink: WritableStream<Uint8Array>,
  options: OpenEncoderOptions = {},
): Promise<Header> {
  const cancelAll = () => Promise.all(sources.map((s) => s.cancel().catch(() => {})));
  let merged: MergeResult;
  try {
    merged = await mergeSources(sources);
  } catch (err) {
    await sink.abort(err).catch(() => {});
    throw err;
  }
  let encoder: PageSink;
  try {
    encoder = openEncoder(sink, merged.header, options);
  } catch (err) {
    await Promise.all([sink.abort(err).catch(() => {}), cancelAll()]);
    throw err;
  }
  try {
    for await (const page of merged.pages) await encoder.encodePage(page.pgno, page.data);
    await encoder.close();
  } catch (err) {
    await Promise.all([encoder.abort(err).catch(() => {}), cancelAll()]);
    throw err;
  }
  return merged.header;
}

/**
 * Compaction of files on this machine, entirely on a codec worker: the worker opens and reads
 * `inputs` (sorted by MinTXID) itself, decodes and verifies each, merges and encodes (src/ltx's
 * `compact`); the main thread only writes the encoded chunks to `sink`. Same contract as
 * {@linkcode compactSources}: every input is verified before the output is closed; on any
 * failure the sink is aborted, and every file the worker opened is closed before this
 * settles. Use {@linkcode FileCompaction} to check the inputs' headers before the output is
 * created.
 * @returns the header written.
 * @throws {LTXError} from an input, the merge or the encoder; `Deno.errors.NotFound` (naming
 *   the input) when a file is missing; the sink's error.
 */
export async function compactFiles(
  inputs: FileInput[],
  sink: WritableStream<Uint8Array>,
  options: FileCompactionOptions = {},
): Promise<Header> {
  let job: FileCompaction;
  try {
    job = await FileCompaction.open(inputs, options);
  } catch (err) {
    await sink.abort(err).catch(() => {});
    throw err;
  }
  return await job.compactInto(sink);
}
