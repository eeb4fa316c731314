/**
 * Runs one job (a database's sync-and-upload) when asked, never twice at once, at most once
 * per `interval` on the leading edge, and with exponential backoff after failures.
 *
 * Leading edge: the first request after a quiet period runs at once (a commit reaches the
 * replica in milliseconds); a stream of requests runs at most once per interval (bounded file
 * and request counts under load).
 *
 * A run that found nothing to do (the job returns "idle": no file, no request, not even an
 * uncommitted transaction in progress) opens no window: the commit that follows it must not
 * wait for it. Measured: one commit's several WAL writes wake a sync while the previous one
 * runs, and the re-run that follows finds nothing; when it ran late (slow fsyncs) its window
 * delayed the next real commit by up to the whole interval. A run that found a transaction
 * still being written is not idle, so a large one is not re-read at every event.
 *
 * @module
 */

/**
 * What a job reports: true when more work is waiting, "idle" when it did nothing (no window
 * opens), false or nothing otherwise.
 */
export type JobResult = boolean | void | "idle";

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
  /**
   * Called when a run found nothing to do: the quiet time {@linkcode ThrottledJob.quietUntil}
   * reported while it ran is void (an idle run opens no window), so a watcher that paused
   * until then must read on now.
   */
  onQuietEnded?: () => void;
}

/**
 * How long a watcher may leave events in the kernel while a run is on and the next one is
 * already marked. The next run's start ends it early; this bounds the wait should nothing
 * start it (the safety-net poll runs more often anyway).
 */
const QUIET_WHILE_MARKED_MS = 10_000;

/** A job that runs on request, serialized and throttled. */
export class ThrottledJob {
  #job: () => Promise<JobResult>;
  #options:
    & Required<Omit<ThrottledJobOptions, "onError" | "onQuietEnded">>
    & ThrottledJobOptions;
  #running?: Promise<void>;
  #pending = false;
  #timer?: ReturnType<typeof setTimeout>;
  /** When `#timer` fires (performance.now() clock). */
  #timerDueAt = 0;
  #lastStart = -Infinity;
  /** When the run before the current one started (restored when the current one is idle). */
  #previousStart = -Infinity;
  #failures = 0;
  #stopped = false;

  /**
   * `job` returns true when it knows more work is waiting (run again at once), "idle" when it
   * found nothing to do.
   */
  constructor(job: () => Promise<JobResult>, options: ThrottledJobOptions) {
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
      this.#setTimer(wait);
      return;
    }
    this.#start();
  }

  /**
   * Until when (performance.now() clock) a {@linkcode request} changes nothing because a run is
   * already due then; 0 when a request now would be acted on. A file watcher uses it to leave
   * repeated change events in the kernel instead of waking for each.
   */
  quietUntil(): number {
    if (this.#timer !== undefined) return this.#timerDueAt;
    // While a run is on, a request only marks another one, which starts an interval after this
    // one did at the earliest: events until then change nothing (a busy database's watcher
    // woke several times per sync for its own commits' writes). An idle run ends this early.
    // Once another run is marked, no event changes anything before it starts, however long
    // this one takes (a sync of a writer at 43 MB/s outlasts the interval, and the watcher
    // then polled for every WAL write: 4 % of a core); the start ends the quiet time.
    if (this.#running) {
      return this.#pending
        ? performance.now() + QUIET_WHILE_MARKED_MS
        : this.#lastStart + this.#options.interval;
    }
    return 0;
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
    // A watcher may be paused until now (see quietUntil): events from here on count again.
    if (this.#pending) this.#options.onQuietEnded?.();
    this.#pending = false;
    this.#previousStart = this.#lastStart;
    this.#lastStart = performance.now();
    this.#running = this.#run().finally(() => {
      this.#running = undefined;
      if (this.#pending) this.request();
    });
  }

  async #run(): Promise<void> {
    try {
      const result = await this.#job();
      this.#failures = 0;
      if (result === true) this.#pending = true;
      if (result === "idle") {
        this.#lastStart = this.#previousStart;
        this.#options.onQuietEnded?.();
      }
    } catch (err) {
      this.#failures++;
      this.#options.onError?.(err, this.#failures);
      if (this.#stopped) return;
      const delay = Math.min(
        this.#options.retryMax,
        this.#options.retryInitial * 2 ** (this.#failures - 1),
      ) * (0.75 + Math.random() * 0.5);
      this.#clearTimer();
      this.#setTimer(delay);
    }
  }

  #setTimer(delay: number): void {
    this.#timerDueAt = performance.now() + delay;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.request();
    }, delay);
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
