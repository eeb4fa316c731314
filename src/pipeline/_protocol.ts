/**
 * The messages between the main thread and a codec worker. Every job has an id; byte payloads
 * travel as transferred `ArrayBuffer`s (moved, not copied), and every direction is credit-based
 * so that the bytes in flight per job stay bounded (see the limits below).
 *
 * @module
 */

import type { EncoderOptions, Header, PageEncoding, Trailer } from "../ltx/mod.ts";

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
 * Page batches a parallel encoder may have sent its workers and not yet written out: two per
 * worker keeps each busy while its last result is being written.
 */
export const FRAME_BATCHES_IN_FLIGHT_PER_WORKER = 2;
/**
 * Encoded frames travel in pieces of at most this many bytes. Each piece is a new buffer (the
 * sink may keep it), and small buffers are cheap: measured on the 2-core machine, allocating
 * and filling buffers of ≤ 128 KiB runs at ~5 GB/s, of 1 MiB at ~0.5 GB/s (each a fresh
 * mapping, page-faulted in), which cost a third of the encoding time of incompressible pages.
 */
export const FRAME_PIECE_BYTES = 64 << 10;

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
    /** Code a batch of pages into page frames, statelessly (a parallel encoder's part). */
    type: "frames";
    id: number;
    seq: number;
    pageSize: number;
    encoding: PageEncoding;
    withPageChecksum: boolean;
    pgnos: Uint32Array<ArrayBuffer>;
    data: ArrayBuffer;
    count: number;
    /**
     * Where to code the frames (at least `pageFramesBound` bytes): sent back whole as the
     * reply's `output` instead of fresh pieces, for a sink that lets the buffer be reused.
     */
    out?: ArrayBuffer;
  }
  | {
    type: "outputAck";
    id: number;
    /** The output chunk's buffer, given back for reuse (the sink is done with it). */
    buffer?: ArrayBuffer;
  }
  | { type: "cancel"; id: number };

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
    /** A "frames" request done: the frames, and the request's buffers given back for reuse. */
    type: "frames";
    id: number;
    seq: number;
    /** The frames, back to back, in pieces of at most `FRAME_PIECE_BYTES` (none with `output`). */
    pieces: ArrayBuffer[];
    /** The request's `out` buffer with the frames in its first `outputLength` bytes. */
    output?: ArrayBuffer;
    outputLength?: number;
    sizes: Uint32Array<ArrayBuffer>;
    crc: bigint;
    hashedLength: number;
    pageChecksums: bigint;
    pgnos: Uint32Array<ArrayBuffer>;
    data: ArrayBuffer;
    count: number;
  }
  | { type: "error"; id: number; error: WireError };
