/**
 * The one queue that bounds heavy work across all databases of a process: initial snapshots,
 * compactions and snapshots. A burst of new tenants or one huge tenant then cannot run
 * hundreds of full-database jobs at once (each holds buffers and descriptors) or starve the
 * rest: jobs start in arrival order, at most `concurrency` at a time.
 *
 * @module
 */

/** Runs jobs in arrival order, at most a fixed number at a time. */
export class WorkQueue {
  #concurrency: number;
  #running = 0;
  #waiting: Array<() => void> = [];

  /**
   * @throws {RangeError} when `concurrency` is not a positive integer.
   */
  constructor(concurrency: number) {
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new RangeError(`work queue concurrency must be a positive integer, not ${concurrency}`);
    }
    this.#concurrency = concurrency;
  }

  /** Jobs running now. */
  get running(): number {
    return this.#running;
  }

  /** Jobs waiting for a slot. */
  get waiting(): number {
    return this.#waiting.length;
  }

  /** Runs `job` once a slot is free; resolves or rejects with it. */
  async run<T>(job: () => Promise<T>): Promise<T> {
    if (this.#running >= this.#concurrency) {
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    } else {
      this.#running++;
    }
    try {
      return await job();
    } finally {
      // The slot passes straight to the next job, or frees up.
      const next = this.#waiting.shift();
      if (next) next();
      else this.#running--;
    }
  }
}
