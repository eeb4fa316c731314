/**
 * One replica file as a byte stream checked against its listed size. Backends resume dropped
 * connections themselves (the S3 client reopens at the current byte, FORMAT.md §5.2 step 1); what
 * is left to the restore is noticing a file that ends early, which a decoder would otherwise
 * report as a vague "unexpected end of file".
 *
 * @module
 */

import { type LTXFileInfo, type ReplicaClient, ReplicaError } from "../replica/mod.ts";
import { TruncatedFileError } from "./_truncated.ts";

/** Options of {@linkcode openSized}. */
export interface SizedStreamOptions {
  /** Stops reading when aborted. */
  signal?: AbortSignal;
}

/**
 * Opens `info` on `client` lazily (on the first read) and fails with
 * {@linkcode TruncatedFileError} when the stream ends before `info.size` bytes.
 *
 * The stream is a byte stream: a reader in BYOB mode (the codec pipeline's) has the bytes read
 * straight into its own buffer, so a large file costs no allocation per chunk. A file on this
 * machine (a directory replica) is read in large chunks, not through the client's stream.
 */
export function openSized(
  client: ReplicaClient,
  info: LTXFileInfo,
  name: string,
  options: SizedStreamOptions = {},
): ReadableStream<Uint8Array> {
  const { signal } = options;
  let source: ChunkSource | undefined;
  let received = 0;
  return new ReadableStream({
    type: "bytes",
    // A default reader (the in-thread decoder's) gets fresh buffers of this size.
    autoAllocateChunkSize: Math.max(1, Math.min(READ_SIZE, info.size)),
    async pull(controller) {
      signal?.throwIfAborted();
      source ??= await openLocal(client, info) ?? await openRemote(client, info);
      const request = controller.byobRequest!;
      const view = request.view as Uint8Array;
      const n = await source.read(view);
      if (n === null) {
        source.close();
        if (received < info.size && !client.contentTransformed) {
          throw new TruncatedFileError(name, received, info.size);
        }
        controller.close();
        request.respond(0);
        return;
      }
      received += n;
      request.respond(n);
    },
    cancel(reason) {
      source?.close(reason);
    },
  });
}

/** Bytes per read: large reads cost a fraction of many 64 KiB ones. */
const READ_SIZE = 1 << 20;

/** Something that fills a caller's buffer, like `Deno.FsFile.read`. */
interface ChunkSource {
  /** Reads into `into`; the count of bytes (at least 1), or null at the end. */
  read(into: Uint8Array): Promise<number | null>;
  close(reason?: unknown): void;
}

/**
 * A replica file on this machine, read with `read(2)` into the caller's buffer; undefined when
 * the client keeps no local files or the file cannot be opened here (the client's own
 * `openLTXFile` then reports why).
 */
async function openLocal(
  client: ReplicaClient,
  info: LTXFileInfo,
): Promise<ChunkSource | undefined> {
  const path = client.localPath?.(info);
  if (path === undefined) return undefined;
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch {
    return undefined;
  }
  let open = true;
  const close = () => {
    if (open) {
      open = false;
      file.close();
    }
  };
  return {
    async read(into) {
      try {
        return await file.read(into);
      } catch (err) {
        close();
        throw new ReplicaError(`read ${path}: ${(err as Error).message}`, { cause: err });
      }
    },
    close,
  };
}

/**
 * The client's stream, copied into the caller's buffers: each read fills the buffer (or ends
 * the file), so that small network chunks do not each pin a large buffer.
 */
async function openRemote(client: ReplicaClient, info: LTXFileInfo): Promise<ChunkSource> {
  const reader = (await client.openLTXFile(info)).getReader();
  let chunk: Uint8Array = new Uint8Array(0);
  let done = false;
  return {
    async read(into) {
      let filled = 0;
      while (filled < into.length) {
        if (chunk.length === 0) {
          if (done) break;
          const next = await reader.read();
          if (next.done) {
            done = true;
            break;
          }
          chunk = next.value;
          continue;
        }
        const n = Math.min(chunk.length, into.length - filled);
        into.set(chunk.subarray(0, n), filled);
        chunk = chunk.subarray(n);
        filled += n;
      }
      return filled === 0 ? null : filled;
    },
    close(reason) {
      if (!done) {
        done = true;
        reader.cancel(reason).catch(() => {});
      }
    },
  };
}
