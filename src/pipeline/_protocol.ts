/**
 * The messages between the main thread and a codec worker. Every job has an id; byte payloads
 * travel as transferred `ArrayBuffer`s (moved, not copied), and every direction is credit-based
 * so that the bytes in flight per job stay bounded (see the limits below).
 *
 * @module
 */

import type {
  EncoderOptions,
  Header,
  PageEncoding,
  SharedBatchLayout,
  Trailer,
} from "../ltx/mod.ts";

/** Decoded pages travel in batches of about this many bytes. */
export const DECODE_BATCH_BYTES = 1 << 20;
/** Decoded batches a job may have sent and not yet had acknowledged. */
export const DECODE_BATCHES_IN_FLIGHT = 3;
/** LTX input bytes the main thread may have sent a decode job and not yet seen consumed. */
export const INPUT_BYTES_IN_FLIGHT = 4 << 20;
/** Input chunks smaller than this are gathered into one message of this size. */
export const INPUT_MESSAGE_BYTES = 512 << 10;
/** Pages to encode travel in batches of about this many bytes. */
export const ENCODE_BATCH_BYTES = 1 << 20;
/** Page batches the main thread may have sent an encode job and not yet had acknowledged. */
export const ENCODE_BATCHES_IN_FLIGHT = 3;
/** Encoded output chunks a job may have sent and not yet had written (acknowledged). */
export const OUTPUT_CHUNKS_IN_FLIGHT = 4;
/**
 * Size of a new output chunk buffer of an encode job: the encoder's chunks are a little over
 * 256 KiB (at most 256 KiB and one frame of the largest page size), so one size fits all.
 */
export const OUTPUT_BUFFER_BYTES = 384 << 10;
/**
 * Page batches a parallel encoder may have sent each worker and not yet written out. Each
 * worker has one more batch's room in its memory, for the batch being gathered. Three keep a
 * worker coding through most of the writes that take longer than a batch's coding (measured
 * on 1 GiB snapshots: the worker waited ~0.15 s for batches with three, ~0.3 s with two, for
 * ~2 MB more peak memory).
 */
export const FRAME_BATCHES_IN_FLIGHT_PER_WORKER = 3;

/**
 * Frames for a sink that keeps its chunks are copied out in pieces of at most this many bytes.
 * Each piece is a new buffer, and small buffers are cheap: measured on the 2-core machine,
 * allocating and filling buffers of ≤ 128 KiB runs at ~5 GB/s, of 1 MiB at ~0.5 GB/s (each a
 * fresh mapping, page-faulted in), which cost a third of the encoding time of incompressible
 * pages.
 */
export const FRAME_PIECE_BYTES = 64 << 10;

/**
 * Bytes per read of a file a "compactFiles" job reads itself. A step may merge 256 files at
 * once, each holding up to three such buffers (the decoder keeps the current chunk and the
 * rest of the one before), so this bounds the job's input memory to ~48 MiB.
 */
export const FILE_READ_BYTES = 64 << 10;

/** One input of a "compactFiles" job: a file on this machine the worker opens itself. */
export interface FileInput {
  /** Where the file is. */
  path: string;
  /** The name its errors give (the decoder's name). */
  name: string;
  /** Its listed size in bytes, when known: a small file gets small read buffers. */
  size?: number;
}

/** An error as it crosses the thread boundary: class name and message. */
export interface WireError {
  name: string;
  message: string;
  /** True when the worker only saw the main thread's input failing (the main side has it). */
  input?: boolean;
}

/** Main thread → worker. */
export type Request =
  | { type: "decode"; id: number; name: string }
  | { type: "input"; id: number; buffer: ArrayBuffer; length: number }
  | { type: "inputEnd"; id: number }
  | { type: "inputFailed"; id: number }
  | {
    type: "batchAck";
    id: number;
    /** An older batch's buffers, given back for reuse (pages of it are no longer read). */
    pgnos?: Uint32Array<ArrayBuffer>;
    data?: ArrayBuffer;
  }
  | { type: "encode"; id: number; header: Header; options: EncoderOptions }
  | {
    type: "pages";
    id: number;
    pgnos: Uint32Array;
    data: ArrayBuffer;
    count: number;
  }
  | { type: "close"; id: number; postApplyChecksum?: bigint }
  | {
    /**
     * A parallel encoder's part: batches of pages come in `memory` (shared with the main
     * thread), are coded into frames there, and go out from there.
     */
    type: "framesJob";
    id: number;
    memory: WebAssembly.Memory;
  }
  | {
    /** Code the batch at `layout` in the job's memory into page frames (stateless). */
    type: "frames";
    id: number;
    seq: number;
    pageSize: number;
    encoding: PageEncoding;
    withPageChecksum: boolean;
    layout: SharedBatchLayout;
    count: number;
  }
  | {
    type: "outputAck";
    id: number;
    /** The output chunk's buffer, given back for reuse (the sink is done with it). */
    buffer?: ArrayBuffer;
  }
  | {
    /**
     * Compaction of files the worker reads itself: it opens every input, reads their headers
     * and replies "headers", then waits for "compactStart" (or "cancel") before it merges
     * and encodes, sending the output as "output" messages.
     */
    type: "compactFiles";
    id: number;
    inputs: FileInput[];
    options: EncoderOptions;
    /**
     * Copy the stored frame of a page whose input has the output's encoding instead of
     * coding the page again (default true; false codes every page, as `compact` does).
     */
    copyFrames?: boolean;
  }
  | { type: "compactStart"; id: number }
  | { type: "cancel"; id: number }
  | {
    /** Lower this worker thread's CPU priority to `nice` (no job; id 0). */
    type: "priority";
    id: number;
    nice: number;
  };

/** Worker → main thread. */
export type Reply =
  | { type: "header"; id: number; header: Header }
  | {
    type: "consumed";
    id: number;
    bytes: number;
    /** The input message's buffer, given back for reuse (its bytes were copied). */
    buffer: ArrayBuffer;
  }
  | {
    type: "batch";
    id: number;
    pgnos: Uint32Array<ArrayBuffer>;
    data: ArrayBuffer;
    count: number;
  }
  | { type: "decoded"; id: number; trailer: Trailer }
  | {
    type: "pagesAck";
    id: number;
    /** The batch's buffers, given back for reuse (its pages are encoded). */
    pgnos?: Uint32Array<ArrayBuffer>;
    data?: ArrayBuffer;
  }
  | { type: "output"; id: number; buffer: ArrayBuffer; length: number }
  | { type: "closed"; id: number; trailer: Trailer; bytes: number }
  | {
    /** A "frames" request done: the frames and their sizes are at its layout's `dst`, `sizes`. */
    type: "frames";
    id: number;
    seq: number;
    /** Pages of the batch. */
    count: number;
    /** Bytes of the frames. */
    bytes: number;
    crc: bigint;
    hashedLength: number;
    pageChecksums: bigint;
  }
  | { type: "headers"; id: number; headers: Header[] }
  | {
    /** A "compactFiles" job done: every input verified, the output's last byte sent. */
    type: "compacted";
    id: number;
    header: Header;
    bytes: number;
  }
  | {
    /** A "compactFiles" job stopped by "cancel": every file it opened is closed. */
    type: "cancelled";
    id: number;
  }
  | { type: "error"; id: number; error: WireError };
