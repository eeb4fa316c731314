/**
 * Asynchronous retry of SQLite operations that failed with SQLITE_BUSY or SQLITE_LOCKED.
 *
 * `node:sqlite` is synchronous: a `busy_timeout` would freeze the whole event loop while one
 * database waits for a lock. sluice's connections use `busy_timeout = 0` and retry here, with
 * exponential backoff and jitter, yielding to the event loop between attempts.
 *
 * @module
 */

/** Primary result codes that mean "try again later". */
const SQLITE_BUSY = 5;
const SQLITE_LOCKED = 6;

/**
 * `sqlite3_errmsg` texts of SQLITE_BUSY and SQLITE_LOCKED and all their extended codes
 * (BUSY_RECOVERY, BUSY_SNAPSHOT, BUSY_TIMEOUT: "database is locked"; LOCKED_SHAREDCACHE,
 * LOCKED_VTAB: "database table is locked[: name]"; schema locks: "database schema is locked:
 * name"). Deno's node:sqlite errors carry only `message` and `code: "ERR_SQLITE_ERROR"`.
 */
const BUSY_MESSAGE = /^database (?:table |schema )?is locked\b/;

/**
 * Whether `err` is SQLite's SQLITE_BUSY or SQLITE_LOCKED (or one of their extended codes).
 * Uses `errcode` when the runtime provides it (Node), else the message (Deno).
 */
export function isBusyError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const { errcode } = err as Error & { errcode?: unknown };
  if (typeof errcode === "number") {
    const primary = errcode & 0xff;
    return primary === SQLITE_BUSY || primary === SQLITE_LOCKED;
  }
  return BUSY_MESSAGE.test(err.message);
}

/** How long and how often {@linkcode retryBusy} tries. */
export interface RetryOptions {
  /** Give up (rethrowing the last busy error) after this many ms. Default 1000; 0 = one try. */
  timeoutMs?: number;
  /** First delay between attempts, in ms. Default 1. */
  initialDelayMs?: number;
  /** Cap of the doubling delay, in ms. Default 50. */
  maxDelayMs?: number;
  /** Stops retrying; the promise rejects with the signal's reason. */
  signal?: AbortSignal;
}

/**
 * Calls `fn` until it does not throw a busy/locked error or `timeoutMs` has passed, waiting
 * `delay/2 … delay` ms between attempts with `delay` doubling up to `maxDelayMs`.
 *
 * @throws whatever `fn` throws that is not busy/locked, at once (never retried or wrapped).
 * @throws the last busy/locked error of `fn` once `timeoutMs` is exhausted.
 * @throws the signal's reason when `options.signal` aborts.
 */
export async function retryBusy<T>(
  fn: () => T | PromiseLike<T>,
  options: RetryOptions = {},
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 1000;
  const maxDelayMs = options.maxDelayMs ?? 50;
  const signal = options.signal;
  const deadline = performance.now() + timeoutMs;
  let delay = Math.max(0, options.initialDelayMs ?? 1);
  for (;;) {
    signal?.throwIfAborted();
    try {
      return await fn();
    } catch (err) {
      if (!isBusyError(err)) throw err;
      const remaining = deadline - performance.now();
      if (remaining <= 0) throw err;
      // Jitter keeps several waiters (one per database) from retrying in lockstep.
      await sleep(Math.min(remaining, delay / 2 + Math.random() * delay / 2), signal);
      delay = Math.min(maxDelayMs, Math.max(1, delay * 2));
    }
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
