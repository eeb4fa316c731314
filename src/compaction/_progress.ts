/**
 * A pass-through {@linkcode ReplicaClient} that reports how many bytes each write has sent so
 * far: the engine streams a snapshot straight into the replica, so counting the stream is the
 * one place progress can be observed without touching the engine.
 *
 * @module
 */

import type {
  ListOptions,
  LTXFileId,
  LTXFileInfo,
  OpenOptions,
  ReplicaClient,
} from "../replica/mod.ts";

/** Wraps `client`; `onBytes(total)` is called as the body of each write flows through. */
export function countingClient(
  client: ReplicaClient,
  onBytes: (bytesWritten: number) => void,
): ReplicaClient {
  return {
    get type() {
      return client.type;
    },
    get location() {
      return client.location;
    },
    ltxFiles: (level: number, options?: ListOptions): AsyncIterable<LTXFileInfo> =>
      client.ltxFiles(level, options),
    openLTXFile: (file: LTXFileId, options?: OpenOptions) => client.openLTXFile(file, options),
    writeLTXFile(
      file: LTXFileId,
      body: Uint8Array | ReadableStream<Uint8Array>,
      timestamp: number,
    ): Promise<LTXFileInfo> {
      if (body instanceof Uint8Array) {
        return client.writeLTXFile(file, body, timestamp).then((info) => {
          onBytes(body.byteLength);
          return info;
        });
      }
      let total = 0;
      const counted = body.pipeThrough(
        new TransformStream<Uint8Array, Uint8Array>({
          transform(chunk, controller) {
            total += chunk.byteLength;
            onBytes(total);
            controller.enqueue(chunk);
          },
        }),
      );
      return client.writeLTXFile(file, counted, timestamp);
    },
    deleteLTXFiles: (files: readonly LTXFileId[]) => client.deleteLTXFiles(files),
    deleteAll: () => client.deleteAll(),
    close: () => client.close(),
  };
}
