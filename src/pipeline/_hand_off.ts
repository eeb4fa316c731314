/**
 * A pipe from an encoder to a consumer that finishes with each chunk before it reads the next
 * (as the directory replica's atomic write does: it writes a chunk out, then reads on). A
 * write resolves only once the consumer asks for the next chunk, so the writer may reuse the
 * chunk's buffer as soon as its write resolves: an encoder with `reuseChunks` then needs no
 * fresh buffer per output chunk, and a large file leaves no garbage behind it.
 *
 * @module
 */

/**
 * The pipe's two ends: pass `writable` to an encoder opened with `reuseChunks: true`, and
 * `readable` to a consumer that is done with a chunk when it reads the next one. A consumer
 * that keeps chunks (gathers them into a part, queues them) must get a `TransformStream`
 * instead. Aborting `writable` errors `readable`; cancelling `readable` fails the writes.
 */
export function handOffPipe(): {
  readable: ReadableStream<Uint8Array>;
  writable: WritableStream<Uint8Array>;
} {
  /** A written chunk the consumer has not read yet. */
  let offered: Handed | undefined;
  /** The chunk the consumer read last: its write resolves when it reads again. */
  let held: Handed | undefined;
  let end: { error: unknown } | "closed" | undefined;
  let cancelled: { reason: unknown } | undefined;
  let wakePull: (() => void) | undefined;
  const wake = () => {
    const resolve = wakePull;
    wakePull = undefined;
    resolve?.();
  };

  const readable = new ReadableStream<Uint8Array>({
    async pull(controller) {
      // Asking for more means the consumer is done with the chunk it had.
      held?.resolve();
      held = undefined;
      while (offered === undefined && end === undefined) {
        await new Promise<void>((resolve) => wakePull = resolve);
      }
      if (offered !== undefined) {
        held = offered;
        offered = undefined;
        controller.enqueue(held.chunk);
      } else if (end === "closed") {
        controller.close();
      } else {
        controller.error(end!.error);
      }
    },
    cancel(reason) {
      cancelled = { reason: reason ?? new Error("the consumer cancelled the pipe") };
      held?.reject(cancelled.reason);
      offered?.reject(cancelled.reason);
      held = offered = undefined;
    },
  }, { highWaterMark: 0 });

  const writable = new WritableStream<Uint8Array>({
    write(chunk) {
      if (cancelled) return Promise.reject(cancelled.reason);
      return new Promise<void>((resolve, reject) => {
        offered = { chunk, resolve, reject };
        wake();
      });
    },
    close() {
      end = "closed";
      wake();
    },
    abort(reason) {
      end = { error: reason };
      wake();
    },
  });
  return { readable, writable };
}

interface Handed {
  chunk: Uint8Array;
  resolve: () => void;
  reject: (reason: unknown) => void;
}
