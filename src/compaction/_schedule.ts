/**
 * Time and concurrency helpers of the compactor: wall-clock aligned ticks (Litestream runs a
 * level at every multiple of its interval, in UTC) and a process-wide limit on how many heavy
 * jobs (merges, snapshots) run at once, so that thousands of databases whose ticks all fall on
 * the same instant do not open thousands of files together.
 *
 * @module
 */

/** `now` rounded down to a multiple of `interval` (Go's `time.Truncate`, UTC). */
export function truncateTime(now: number, interval: number): number {
  return Math.floor(now / interval) * interval;
}

/** The first multiple of `interval` strictly after `now`. */
export function nextBoundary(now: number, interval: number): number {
  return truncateTime(now, interval) + interval;
}

/** A counting semaphore: at most `slots` holders at once, the rest wait in FIFO order. */
export class Semaphore {
  #free: number;
  #waiting: Array<() => void> = [];

  /** Creates a semaphore with `slots` (≥ 1) slots. */
  constructor(slots: number) {
    if (!(slots >= 1)) throw new RangeError(`a semaphore needs at least one slot, got ${slots}`);
    this.#free = Math.floor(slots);
  }

  /** Runs `fn` while holding a slot. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#free > 0) this.#free--;
    else await new Promise<void>((resolve) => this.#waiting.push(resolve));
    try {
      return await fn();
    } finally {
      const next = this.#waiting.shift();
      if (next) next();
      else this.#free++;
    }
  }
}

/** Shared by every compactor of the process unless one is given its own. */
export const HEAVY_JOBS: Semaphore = new Semaphore(2);
