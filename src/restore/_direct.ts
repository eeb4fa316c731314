/**
 * Direct restore: when every planned file is on this machine (a directory replica), a worker of
 * its own (`_direct_worker.ts`) reads, decodes, verifies and writes the whole database, and this
 * thread only waits. Measured on a 1 GiB restore, the main thread's reads, writes, message posts
 * and page copies of the streaming path were its limit; here they are gone, and the worker's
 * decoding overlaps its writes.
 *
 * @module
 */

import type { Header, Trailer } from "../ltx/mod.ts";
import { fromWire as codecErrorFromWire } from "../pipeline/mod.ts";
import { NotFoundError } from "../replica/mod.ts";
import {
  type DirectFile,
  type DirectReply,
  type DirectRequest,
  type DirectWireError,
  NOT_FOUND_ERROR_NAME,
} from "./_direct_protocol.ts";
import { TruncatedFileError } from "./_truncated.ts";

export type { DirectFile } from "./_direct_protocol.ts";

/** Options of {@linkcode restoreDirect}. */
export interface DirectOptions {
  /**
   * Hears every file's header before any page is known to be written; throwing stops the
   * restore with that error.
   */
  onHeaders(headers: Header[]): void;
  /** Called as the output grows: bytes written so far. */
  onProgress?: (bytesDone: number) => void;
  /** Stops the worker; the restore fails with the signal's reason. */
  signal?: AbortSignal;
}

/** What {@linkcode restoreDirect} verified and wrote. */
export interface DirectResult {
  trailers: Trailer[];
  /** The rolling checksum of the written database, when some file carries checksums. */
  databaseChecksum?: bigint;
  /** Size of the database written, in bytes. */
  bytes: number;
}

/**
 * Restores `files` (plan order: latest file wins, pages past the last Commit dropped, every
 * file verified to its end) into `output`, an empty file the caller created (its path, device
 * and inode: the worker writes only into that file); leaves it unsynced.
 * @throws {LTXError} naming the file when one is malformed, fails a checksum, or the files do
 * not form a complete database.
 * @throws {TruncatedFileError} when a file ends before its listed size.
 * @throws {NotFoundError} when a planned file is gone.
 */
export function restoreDirect(
  files: DirectFile[],
  output: { path: string; dev: number; ino: number },
  options: DirectOptions,
): Promise<DirectResult> {
  const { signal } = options;
  signal?.throwIfAborted();
  const worker = new Worker(new URL("./_direct_worker.ts", import.meta.url), { type: "module" });
  return new Promise<DirectResult>((resolve, reject) => {
    let settled = false;
    const end = (err: unknown, result?: DirectResult) => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener("abort", onAbort);
      worker.terminate();
      if (result) resolve(result);
      else reject(err);
    };
    const onAbort = () => end(signal!.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    worker.onmessage = (event: MessageEvent<DirectReply>) => {
      const reply = event.data;
      try {
        switch (reply.type) {
          case "headers":
            options.onHeaders(reply.headers);
            return;
          case "progress":
            options.onProgress?.(reply.bytes);
            return;
          case "done":
            options.onProgress?.(reply.bytes);
            return end(undefined, {
              trailers: reply.trailers,
              databaseChecksum: reply.databaseChecksum,
              bytes: reply.bytes,
            });
          case "error":
            return end(fromWire(reply.error));
        }
      } catch (err) {
        end(err);
      }
    };
    worker.onerror = (event: ErrorEvent) => {
      event.preventDefault();
      end(new Error(`the restore worker failed: ${event.message}`));
    };
    const request: DirectRequest = {
      type: "restore",
      files,
      outputPath: output.path,
      output: { dev: output.dev, ino: output.ino },
    };
    worker.postMessage(request);
  });
}

/** The worker's error as the class the streaming path would have thrown. */
function fromWire(wire: DirectWireError): Error {
  switch (wire.name) {
    case "TruncatedFileError": {
      const err = new TruncatedFileError("", 0, 0);
      err.message = wire.message;
      return err;
    }
    case NOT_FOUND_ERROR_NAME:
      return new NotFoundError(wire.message);
  }
  return codecErrorFromWire(wire);
}
