/**
 * A counter of permits, the worker side of the credit flow between threads (_protocol.ts):
 * a job takes one before it sends a buffer and gets it back with the main thread's ack.
 *
 * @module
 */

/** A counter of permits; `take()` waits while none is left. */
export class Credit {
  #left: number;
  #waiters: (() => void)[] = [];

  /** Starts with `permits` permits. */
  constructor(permits: number) {
    this.#left = permits;
  }

  /** Takes a permit, waiting until one is given back when none is left. */
  async take(): Promise<void> {
    while (this.#left === 0) await new Promise<void>((resolve) => this.#waiters.push(resolve));
    this.#left--;
  }

  /** Gives one permit back, waking the oldest waiter. */
  give(): void {
    this.#left++;
    this.#waiters.shift()?.();
  }

  /** Wakes every waiter for good (the job ends). */
  release(): void {
    this.#left = Infinity;
    for (const wake of this.#waiters.splice(0)) wake();
  }
}
