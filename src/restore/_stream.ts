/**
 * One replica file as a byte stream checked against its listed size. Backends resume dropped
 * connections themselves (the S3 client reopens at the current byte, FORMAT.md §5.2 step 1); what
 * is left to the restore is noticing a file that ends early, which a decoder would otherwise
 * report as a vague "unexpected end of file".
 *
 * @module
 */

import type { LTXFileInfo, ReplicaClient } from "../replica/mod.ts";

/** Options of {@linkcode openSized}. */
export interface SizedStreamOptions {
  /** Stops reading when aborted. */
  signal?: AbortSignal;
}

/** A replica file ended before its listed size. */
export class TruncatedFileError extends Error {
  /** Builds an error naming the file and both sizes. */
  constructor(name: string, read: number, expected: number) {
    super(
      `${name}: read ${read} of ${expected} bytes before the stream ended; ` +
        `the replica file is truncated or was replaced while restoring`,
    );
    this.name = "TruncatedFileError";
  }
}

/**
 * Opens `info` on `client` lazily (on the first read) and fails with
 * {@linkcode TruncatedFileError} when the stream ends before `info.size` bytes.
 */
export function openSized(
  client: ReplicaClient,
  info: LTXFileInfo,
  name: string,
  options: SizedStreamOptions = {},
): ReadableStream<Uint8Array> {
  const { signal } = options;
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  let received = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      signal?.throwIfAborted();
      reader ??= (await client.openLTXFile(info)).getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) {
          if (received < info.size) throw new TruncatedFileError(name, received, info.size);
          controller.close();
          return;
        }
        if (value.byteLength === 0) continue;
        received += value.byteLength;
        controller.enqueue(value);
        return;
      }
    },
    async cancel(reason) {
      await reader?.cancel(reason).catch(() => {});
    },
  }, { highWaterMark: 0 });
}
