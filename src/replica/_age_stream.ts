/**
 * Stream helpers of the age decorator: the lazily loaded `age-encryption` package, peeking at a
 * file's first bytes, and cutting a byte range out of a decrypted stream.
 *
 * @module
 */

/** The `age-encryption` module, loaded on first use only (processes without `age:` never do). */
export type AgeModule = typeof import("age-encryption");

let loading: Promise<AgeModule> | undefined;

/** Loads `age-encryption` once per process. A literal specifier, so `deno compile` includes it. */
export function loadAge(): Promise<AgeModule> {
  loading ??= import("age-encryption");
  return loading;
}

/** The first bytes of every age v1 file (age-encryption.org/v1 spec, "Header"). */
export const AGE_MAGIC = new TextEncoder().encode("age-encryption.org/v1");
/** The first bytes of every LTX file (FORMAT.md §1.1). */
export const LTX_MAGIC = new TextEncoder().encode("LTX1");

/** What a file's first bytes say it is. */
export type ContentKind = "age" | "ltx" | "unknown";

/** Classifies a file by its first bytes (at least {@linkcode AGE_MAGIC}'s length when possible). */
export function contentKind(head: Uint8Array): ContentKind {
  if (startsWith(head, AGE_MAGIC)) return "age";
  if (startsWith(head, LTX_MAGIC)) return "ltx";
  return "unknown";
}

function startsWith(bytes: Uint8Array, prefix: Uint8Array): boolean {
  if (bytes.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (bytes[i] !== prefix[i]) return false;
  return true;
}

/**
 * Reads at least `n` bytes (fewer only at the end) from `stream` and returns them together with
 * a stream of the whole content, the peeked bytes included.
 */
export async function peek(
  stream: ReadableStream<Uint8Array>,
  n: number,
): Promise<{ head: Uint8Array; whole: ReadableStream<Uint8Array> }> {
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  let length = 0;
  let done = false;
  try {
    while (length < n) {
      const next = await reader.read();
      if (next.done) {
        done = true;
        break;
      }
      chunks.push(next.value);
      length += next.value.length;
    }
  } catch (err) {
    reader.releaseLock();
    throw err;
  }
  const head = concat(chunks, length);
  const whole = new ReadableStream<Uint8Array>({
    start(controller) {
      if (head.length > 0) controller.enqueue(head);
      if (done) controller.close();
    },
    async pull(controller) {
      const next = await reader.read();
      if (next.done) controller.close();
      else controller.enqueue(next.value);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
  return { head, whole };
}

function concat(chunks: Uint8Array[], length: number): Uint8Array {
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(length);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

/**
 * The bytes `[offset, offset + length)` of `source` (to its end without `length`). Bytes before
 * the range are read and dropped; once the range is complete the rest of `source` is cancelled,
 * so a prefix read costs only the prefix. Errors of `source` pass through `mapError`.
 */
export function sliceStream(
  source: ReadableStream<Uint8Array>,
  offset: number,
  length: number | undefined,
  mapError: (err: unknown) => unknown,
): ReadableStream<Uint8Array> {
  const reader = source.getReader();
  let position = 0;
  const end = length === undefined ? Infinity : offset + length;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      while (true) {
        if (position >= end) {
          controller.close();
          await reader.cancel().catch(() => {});
          return;
        }
        let next: ReadableStreamReadResult<Uint8Array>;
        try {
          next = await reader.read();
        } catch (err) {
          throw mapError(err);
        }
        if (next.done) {
          controller.close();
          return;
        }
        const chunk = next.value;
        const start = Math.max(0, offset - position);
        const stop = Math.min(chunk.length, end - position);
        position += chunk.length;
        if (start < stop) {
          controller.enqueue(
            start === 0 && stop === chunk.length ? chunk : chunk.subarray(start, stop),
          );
          return;
        }
      }
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}
