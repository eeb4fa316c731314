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
