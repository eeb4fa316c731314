/**
 * A download stream that survives a dropped connection: when the body errors or ends before
 * the expected number of bytes, it reopens the source at the byte it had reached (FORMAT.md §5.2
 * item 1: 3 retries, 250 ms × 2ⁿ backoff).
 *
 * @module
 */

/** One response of a ranged read. */
export interface RangeBody {
  body: ReadableStream<Uint8Array>;
  /** Bytes this response is expected to deliver; undefined when unknown (then EOF is trusted). */
  length?: number;
}

/** Options for {@linkcode resumableStream}. */
export interface ResumableOptions {
  /** Reopen attempts after a failure without progress. Default 3. */
  retries?: number;
  /** Backoff before attempt n is `baseDelayMs × 2ⁿ`. Default 250. */
  baseDelayMs?: number;
  /** Errors for which reopening is pointless (object gone or replaced). */
  isPermanent?: (err: unknown) => boolean;
  /** Builds the error reported once retries are exhausted; `cause` is the last failure. */
  wrapError?: (message: string, cause: unknown) => Error;
}

/**
 * Wraps `first` so that a failure at byte `n` (relative to the start of the read) calls
 * `reopen(n)` for the rest. The attempt counter resets whenever a reopened body delivers
 * bytes, so a connection that keeps dropping but makes progress still finishes.
 */
export function resumableStream(
  first: RangeBody,
  reopen: (received: number) => Promise<RangeBody>,
  options: ResumableOptions = {},
): ReadableStream<Uint8Array> {
  const retries = options.retries ?? 3;
  const baseDelayMs = options.baseDelayMs ?? 250;
  const isPermanent = options.isPermanent ?? (() => false);
  const wrapError = options.wrapError ??
    ((message: string, cause: unknown) => new Error(message, { cause }));
  const expected = first.length;
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined = first.body.getReader();
  let received = 0;
  let failures = 0;

  const discard = () => {
    const broken = reader;
    reader = undefined;
    broken?.cancel().catch(() => {});
  };

  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      for (;;) {
        let failure: unknown;
        if (reader) {
          try {
            const { done, value } = await reader.read();
            if (!done) {
              if (value.length === 0) continue;
              received += value.length;
              failures = 0;
              controller.enqueue(value);
              return;
            }
            if (expected === undefined || received >= expected) {
              reader = undefined;
              controller.close();
              return;
            }
            failure = new Error(`body ended after ${received} of ${expected} bytes`);
          } catch (err) {
            failure = err;
          }
          discard();
        }
        if (failure !== undefined && (isPermanent(failure) || failures >= retries)) {
          controller.error(wrapError(readFailure(received, expected, failures, failure), failure));
          return;
        }
        await delay(baseDelayMs * 2 ** failures);
        failures++;
        try {
          const next = await reopen(received);
          reader = next.body.getReader();
        } catch (err) {
          if (isPermanent(err) || failures >= retries) {
            controller.error(wrapError(readFailure(received, expected, failures, err), err));
            return;
          }
        }
      }
    },
    cancel(reason) {
      const current = reader;
      reader = undefined;
      return current?.cancel(reason).catch(() => {});
    },
  }, { highWaterMark: 0 });
}

function readFailure(
  received: number,
  expected: number | undefined,
  attempts: number,
  cause: unknown,
): string {
  const reason = cause instanceof Error ? cause.message : String(cause);
  const of = expected === undefined ? "" : ` of ${expected}`;
  return `download failed at byte ${received}${of} after ${attempts} resume attempt(s): ${reason}`;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
