/**
 * Runs one job (a database's sync-and-upload) when asked, never twice at once, at most once
 * per `interval` on the leading edge, and with exponential backoff after failures.
 *
 * Leading edge: the first request after a quiet period runs at once (a commit reaches the
 * replica in milliseconds); a stream of requests runs at most once per interval (bounded file
 * and request counts under load).
 *
 * @module
 */

/** Options of {@linkcode ThrottledJob}. */
export interface ThrottledJobOptions {
  /** Minimum time between two starts, in ms (0 = back to back). */
  interval: number;
  /** First retry delay after a failure, in ms. Default 1000. */
  retryInitial?: number;
  /**
   * Longest retry delay, in ms. Default 10000: short enough that replication catches up within
   * seconds of a replica's return; the S3 client already retries each request with backoff.
   */
  retryMax?: number;
  /** Called with each failure; the job is retried after a backoff. */
  onError?: (err: unknown, attempt: number) => void;
}

/** A job that runs on request, serialized and throttled. */
export class ThrottledJob {
  #job: () => Promise<boolean | void>;
  #options: Required<Omit<ThrottledJobOptions, "onError">> & ThrottledJobOptions;
  #running?: Promise<void>;
  #pending = false;
  #timer?: ReturnType<typeof setTimeout>;
  #lastStart = -Infinity;
  #failures = 0;
  #stopped = false;

  /** `job` returns true when it knows more work is waiting (run again at once). */
  constructor(job: () => Promise<boolean | void>, options: ThrottledJobOptions) {
    this.#job = job;
    this.#options = { retryInitial: 1000, retryMax: 10_000, ...options };
  }

  /** Consecutive failures so far (0 when the last run succeeded). */
  get failures(): number {
    return this.#failures;
  }

  /** Asks for a run: now, after the running one, or at the end of the throttle interval. */
  request(): void {
    if (this.#stopped) return;
    if (this.#running) {
      this.#pending = true;
      return;
    }
    if (this.#timer !== undefined) return;
    const wait = this.#lastStart + this.#options.interval - performance.now();
    if (wait > 0) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.request();
      }, wait);
      return;
    }
    this.#start();
  }

  /** Runs the job now (ignoring the throttle) and resolves when it is done; for shutdown. */
  async runNow(): Promise<void> {
    while (this.#running) await this.#running;
    this.#clearTimer();
    this.#lastStart = performance.now();
    let more = true;
    for (let i = 0; more && i < 1000; i++) more = (await this.#job()) === true;
  }

  /** Stops scheduling; waits for a running job. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#clearTimer();
    while (this.#running) await this.#running;
  }

  #start(): void {
    this.#pending = false;
    this.#lastStart = performance.now();
    this.#running = this.#run().finally(() => {
      this.#running = undefined;
      if (this.#pending) this.request();
    });
  }

  async #run(): Promise<void> {
    try {
      const more = await this.#job();
      this.#failures = 0;
      if (more === true) this.#pending = true;
    } catch (err) {
      this.#failures++;
      this.#options.onError?.(err, this.#failures);
      if (this.#stopped) return;
      const delay = Math.min(
        this.#options.retryMax,
        this.#options.retryInitial * 2 ** (this.#failures - 1),
      ) * (0.75 + Math.random() * 0.5);
      this.#clearTimer();
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.request();
      }, delay);
    }
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
