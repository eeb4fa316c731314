/**
 * Event-loop delay, measured the cheap way: a timer asks to run every `resolution` ms and
 * records how late it actually ran. `node:sqlite` is synchronous, so a long statement or a
 * large page merge on the main thread shows up here as delay; every database waits behind it.
 *
 * `perf_hooks.monitorEventLoopDelay` would be the Node answer, but under Deno 2.9.6 it does not
 * see blocking (measured: a 200 ms busy loop reported a maximum of 20 µs), so this is a plain
 * timer drift meter.
 *
 * A timer that runs ten times a second costs an idle process about 0.3 % of a core in Deno's
 * event loop alone, once a second 0.07 % (measured), more than the sweep over 1,000 parked
 * tenants. So after a quiet spell (`idleAfter` without a stall) the meter samples every 5 s,
 * and goes back to its fine resolution at the first stall: one while idle is still seen when
 * it overlaps a tick. A stall is a tick `stallAfter` late or more (50 ms): on a loaded machine
 * a timer is often 10–30 ms late for want of a CPU (measured at a load of 4.5 on 2 cores: 2.5 %
 * of 100 ms ticks 10 ms late or more, none 50 ms), which would keep the meter at its fine
 * resolution for good.
 *
 * @module
 */

/** Options of {@linkcode LoopDelayMonitor}. */
export interface LoopDelayOptions {
  /** How often the timer asks to run, ms. Default 100. */
  resolution?: number;
  /** How often it asks to run after a quiet spell, ms. Default 5000. */
  idleResolution?: number;
  /** A quiet spell: this long with no stall, ms. Default 10000. */
  idleAfter?: number;
  /** A tick this late or more is a stall, ms. Default 50. */
  stallAfter?: number;
  /** The maximum covers at least this long (and at most twice as long), ms. Default 60000. */
  window?: number;
  /** Clock in ms; default `performance.now`. For tests. */
  now?: () => number;
}

/** Measures event-loop delay: the latest sample and the maximum over a recent window. */
export class LoopDelayMonitor {
  #resolution: number;
  #idleResolution: number;
  #idleAfter: number;
  #stallAfter: number;
  #window: number;
  #now: () => number;
  #timer?: ReturnType<typeof setTimeout>;
  #period = 0;
  #lateAt = 0;
  #expected = 0;
  #last = 0;
  /** Two buckets: the maximum of the current window and of the previous one. */
  #currentMax = 0;
  #previousMax = 0;
  #windowStart = 0;

  /** Creates a stopped monitor; call {@linkcode start}. */
  constructor(options: LoopDelayOptions = {}) {
    this.#resolution = options.resolution ?? 100;
    this.#idleResolution = Math.max(this.#resolution, options.idleResolution ?? 5000);
    this.#idleAfter = options.idleAfter ?? 10_000;
    this.#stallAfter = options.stallAfter ?? 50;
    this.#window = options.window ?? 60_000;
    this.#now = options.now ?? (() => performance.now());
  }

  /**
   * Starts sampling. The timer is unref'd, so it never keeps the process alive on its own.
   * Idempotent.
   */
  start(): void {
    if (this.#timer !== undefined) return;
    const now = this.#now();
    this.#period = this.#resolution;
    this.#expected = now + this.#period;
    this.#windowStart = now;
    this.#lateAt = now;
    this.#arm();
  }

  /** Stops sampling; the figures stay readable. Idempotent. */
  stop(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /**
   * Records one timer tick that ran at `now` (ms). Public for tests, which drive the clock;
   * the running monitor calls it from its own timer.
   */
  record(now: number): void {
    const delay = Math.max(0, now - this.#expected);
    if (delay >= this.#stallAfter) this.#lateAt = now;
    this.#period = now - this.#lateAt >= this.#idleAfter ? this.#idleResolution : this.#resolution;
    this.#expected = now + this.#period;
    this.#last = delay;
    this.#rotate(now);
    if (delay > this.#currentMax) this.#currentMax = delay;
  }

  #arm(): void {
    // Unref'd, so it never keeps the process alive on its own.
    this.#timer = setTimeout(() => {
      this.record(this.#now());
      if (this.#timer !== undefined) this.#arm();
    }, this.#period);
    Deno.unrefTimer(this.#timer);
  }

  /** Delay of the latest tick, in seconds. */
  get lastSeconds(): number {
    return this.#last / 1000;
  }

  /** Largest delay seen over the last one to two windows, in seconds. */
  get maxSeconds(): number {
    this.#rotate(this.#now());
    return Math.max(this.#currentMax, this.#previousMax) / 1000;
  }

  #rotate(now: number): void {
    const elapsed = now - this.#windowStart;
    if (elapsed < this.#window) return;
    // One window passed: the current bucket becomes the previous one. Two or more: both stale.
    this.#previousMax = elapsed < 2 * this.#window ? this.#currentMax : 0;
    this.#currentMax = 0;
    this.#windowStart = now;
  }
}
